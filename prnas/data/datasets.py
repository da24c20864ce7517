"""Datasets for search (weights/alphas halves) and retrain (train/test), by config.

Every returned dataset is a ``TransformedSubset``: a transform-free base dataset,
the indices into it that this part uses, and the transform for this part. Train
and hold-out test parts of one tree thus share one base, and the search halves
are plain index arrays that tests and checkpoints can compare.

The bases come from a ``Source``, looked up by ``cfg.dataset`` in the registry of
``prnas.data.source``; each dataset has its own module (``cifar``, ``demo``,
``imagefolder``, ``imagenet``) that registers it.

Training augmentation (``augment=True``) is the paper's random crop, padding
scaled to the input size, for every dataset; the horizontal flip only for natural
images (CIFAR, image folders), because a mirrored digit is no longer that digit.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

from prnas.data.config import DataConfig
from prnas.data.source import SPLIT, DataInfo, Source, TransformedSubset, load_source, rng


def search_datasets(cfg: DataConfig) -> tuple[Dataset, Dataset, DataInfo]:
    """The training part split in half: (weights half, alphas half), both augmented.

    No cutout: the paper searches without it. The split is a permutation seeded
    by ``split_seed`` alone, so every trial with that seed sees the same halves
    (``split: in_order``: the first and second half in file order, as the reference
    code splits).
    """
    src = load_source(cfg)
    n = len(src.train_indices)
    perm = np.arange(n) if cfg.split == "in_order" else rng(cfg.split_seed, SPLIT).permutation(n)
    half = len(perm) // 2
    tf = src.transform(train=True, augment=cfg.augment)
    weights = TransformedSubset(src.train_base, src.train_indices[perm[:half]], tf)
    alphas = TransformedSubset(src.train_base, src.train_indices[perm[half:]], tf)
    return weights, alphas, src.info()


def retrain_datasets(cfg: DataConfig, cutout: int = 16) -> tuple[Dataset, Dataset, DataInfo]:
    """(whole training part with augmentation and ``cutout`` px Cutout, test part plain).

    Cutout is independent of ``cfg.augment``; pass ``cutout=0`` to switch it off.
    """
    if cutout < 0:
        raise ValueError(f"cutout must be >= 0, got {cutout}")
    src = load_source(cfg)
    train = TransformedSubset(
        src.train_base,
        src.train_indices,
        src.transform(train=True, augment=cfg.augment, cutout=cutout),
    )
    return train, _test_part(src), src.info()


def test_dataset(cfg: DataConfig) -> Dataset:
    """The test part without augmentation, normalised with the training statistics."""
    return _test_part(load_source(cfg))


test_dataset.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported


def _test_part(src: Source) -> TransformedSubset:
    return TransformedSubset(
        src.test_base, src.test_indices, src.transform(train=False, augment=False)
    )
