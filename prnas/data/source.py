"""What every dataset source yields, the seeded choices they share, and the registry.

A source module (``cifar``, ``demo``, ``imagefolder``, ``imagenet``) turns a
``DataConfig`` into a ``Source`` and registers that factory under its dataset
name(s) with ``@register``; ``prnas.data`` imports them all, so ``load_source``
knows every name ``DataConfig.dataset`` allows.

Seeded choices (hold-out, subset, split) each draw from their own stream of
``split_seed``, so changing ``subset`` does not change which images are held out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from prnas.data.config import DataConfig
from prnas.data.transforms import build_transform

# Distinct streams of split_seed, one per seeded choice.
HOLDOUT, SUBSET, TEST_SUBSET, SPLIT = 1, 2, 3, 4


class DatasetNotFoundError(FileNotFoundError):
    """The data is not where the config says; the message says where and how to get it."""


@dataclass(frozen=True)
class DataInfo:
    """What a network builder and the result rows need to know about the data."""

    name: str
    num_classes: int
    in_channels: int
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_size: int
    test_size: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """C x H x W of one input image."""
        return (self.in_channels, self.input_size, self.input_size)


class TransformedSubset(Dataset):
    """``base[indices[i]]`` with ``transform`` applied to the image; labels become ints.

    Not ``torch.utils.data.Subset``: its batched ``__getitems__`` would bypass the
    transform.
    """

    def __init__(self, base: Dataset, indices: Sequence[int], transform: Callable) -> None:
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img, label = self.base[int(self.indices[i])]
        return self.transform(img), int(label)


@dataclass(frozen=True)
class Source:
    """A dataset before transforms: bases, the indices each part uses, and its statistics."""

    name: str
    train_base: Dataset
    train_indices: np.ndarray
    test_base: Dataset
    test_indices: np.ndarray
    num_classes: int
    in_channels: int
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: bool  # whether images need resizing to input_size (not pre-resized)
    flip: bool

    def info(self) -> DataInfo:
        return DataInfo(
            name=self.name, num_classes=self.num_classes, in_channels=self.in_channels,
            input_size=self.input_size, mean=self.mean, std=self.std,
            train_size=len(self.train_indices), test_size=len(self.test_indices))

    def transform(self, *, train: bool, augment: bool, cutout: int = 0) -> Callable:
        aug = train and augment
        return build_transform(self.input_size, self.mean, self.std, resize=self.resize,
                               crop=aug, flip=aug and self.flip, cutout=cutout if train else 0)


# ---------------------------------------------------------------- the registry

Factory = Callable[[DataConfig], Source]
REGISTRY: dict[str, Factory] = {}


def register(*names: str) -> Callable[[Factory], Factory]:
    """Decorator: ``factory`` builds the source of each dataset in ``names``."""

    def add(factory: Factory) -> Factory:
        for name in names:
            assert name not in REGISTRY, f"dataset {name!r} registered twice"
            REGISTRY[name] = factory
        return factory

    return add


def load_source(cfg: DataConfig) -> Source:
    return REGISTRY[cfg.dataset](cfg)


# ---------------------------------------------------------------- seeded choices


def rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([stream, seed])


def choose(indices: np.ndarray, limit: int | None, seed: int, stream: int) -> np.ndarray:
    """At most ``limit`` of ``indices``, a seeded choice kept in original order."""
    if limit is None or limit >= len(indices):
        return indices
    picked = rng(seed, stream).choice(len(indices), size=limit, replace=False)
    return indices[np.sort(picked)]


def holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, test) index arrays; both non-empty whenever n >= 2."""
    if n < 2:
        raise ValueError(f"need at least 2 images for a hold-out split, found {n}")
    n_test = min(n - 1, max(1, round(n * fraction)))
    perm = rng(seed, HOLDOUT).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def safe_std(std: torch.Tensor) -> tuple[float, ...]:
    """A constant channel has std 0; dividing by 1 keeps it finite instead."""
    return tuple(float(s) if s > 1e-6 else 1.0 for s in std)
