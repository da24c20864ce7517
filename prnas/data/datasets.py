"""Datasets for search (weights/alphas halves) and retrain (train/test), by config.

Every returned dataset is a ``TransformedSubset``: a transform-free base dataset,
the indices into it that this part uses, and the transform for this part. Train
and hold-out test parts of one tree thus share one base, and the search halves
are plain index arrays that tests and checkpoints can compare.

Training augmentation (``augment=True``) is the paper's random crop, padding
scaled to the input size, for every dataset; the horizontal flip only for natural
images (CIFAR, image folders), because a mirrored digit is no longer that digit.

Seeded choices (hold-out, subset, split) each draw from their own stream of
``split_seed``, so changing ``subset`` does not change which images are held out.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets as tv_datasets

from prnas.data.config import DATA_DIR_ENV, DataConfig, resolve_data_dir
from prnas.data.transforms import build_transform

__all__ = [
    "CIFAR_STATS",
    "DataInfo",
    "DatasetNotFoundError",
    "TransformedSubset",
    "resolve_data_dir",
    "retrain_datasets",
    "search_datasets",
    "test_dataset",
]

CIFAR_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}

# Distinct streams of split_seed, one per seeded choice.
_HOLDOUT, _SUBSET, _TEST_SUBSET, _SPLIT = 1, 2, 3, 4


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
class _Source:
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
            name=self.name,
            num_classes=self.num_classes,
            in_channels=self.in_channels,
            input_size=self.input_size,
            mean=self.mean,
            std=self.std,
            train_size=len(self.train_indices),
            test_size=len(self.test_indices),
        )

    def transform(self, *, train: bool, augment: bool, cutout: int = 0) -> Callable:
        aug = train and augment
        return build_transform(
            self.input_size,
            self.mean,
            self.std,
            resize=self.resize,
            crop=aug,
            flip=aug and self.flip,
            cutout=cutout if train else 0,
        )


# ---------------------------------------------------------------- public API


def search_datasets(cfg: DataConfig) -> tuple[Dataset, Dataset, DataInfo]:
    """The training part split in half: (weights half, alphas half), both augmented.

    No cutout: the paper searches without it. The split is a permutation seeded
    by ``split_seed`` alone, so every trial with that seed sees the same halves.
    """
    src = _load(cfg)
    perm = _rng(cfg.split_seed, _SPLIT).permutation(len(src.train_indices))
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
    src = _load(cfg)
    train = TransformedSubset(
        src.train_base,
        src.train_indices,
        src.transform(train=True, augment=cfg.augment, cutout=cutout),
    )
    return train, _test_part(src), src.info()


def test_dataset(cfg: DataConfig) -> Dataset:
    """The test part without augmentation, normalised with the training statistics."""
    return _test_part(_load(cfg))


test_dataset.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported


def _test_part(src: _Source) -> TransformedSubset:
    return TransformedSubset(
        src.test_base, src.test_indices, src.transform(train=False, augment=False)
    )


# ---------------------------------------------------------------- seeded choices


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([stream, seed])


def _choose(indices: np.ndarray, limit: int | None, seed: int, stream: int) -> np.ndarray:
    """At most ``limit`` of ``indices``, a seeded choice kept in original order."""
    if limit is None or limit >= len(indices):
        return indices
    picked = _rng(seed, stream).choice(len(indices), size=limit, replace=False)
    return indices[np.sort(picked)]


def _holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, test) index arrays; both non-empty whenever n >= 2."""
    if n < 2:
        raise ValueError(f"need at least 2 images for a hold-out split, found {n}")
    n_test = min(n - 1, max(1, round(n * fraction)))
    perm = _rng(seed, _HOLDOUT).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _load(cfg: DataConfig) -> _Source:
    if cfg.dataset == "imagenet":
        from prnas.data.imagenet import imagenet_source  # it builds on this module

        return imagenet_source(cfg)
    loader = {
        "cifar10": _cifar,
        "cifar100": _cifar,
        "demo": _demo,
        "imagefolder": _imagefolder,
    }[cfg.dataset]
    return loader(cfg)


# ---------------------------------------------------------------- CIFAR


class _LenientCifar:
    """Without download, accept CIFAR files that exist instead of checking md5 sums.

    torchvision checks every batch against the md5 of the official archive, which
    rejects a re-pickled copy and the generated folders tests use. Without
    download there is nothing torchvision could do about a mismatch anyway; a
    file that is really corrupt still fails when unpickled. With download the md5
    check stays, because it decides whether to fetch the archive.
    Module-level classes (not made in a function) so datasets pickle for workers.
    """

    def __init__(self, *args: Any, download: bool = False, **kwargs: Any) -> None:
        self._verify_md5 = download
        if not download:
            self.meta = {**self.meta, "md5": None}  # check_integrity(md5=None): file exists
        super().__init__(*args, download=download, **kwargs)

    def _check_integrity(self) -> bool:
        if self._verify_md5:
            return super()._check_integrity()
        return all(p.is_file() for p in _cifar_files(type(self), Path(self.root)))


class LenientCIFAR10(_LenientCifar, tv_datasets.CIFAR10):
    pass


class LenientCIFAR100(_LenientCifar, tv_datasets.CIFAR100):
    pass


_CIFAR_CLASSES = {"cifar10": LenientCIFAR10, "cifar100": LenientCIFAR100}
_CIFAR_LABELS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


def _cifar_files(cls: type[tv_datasets.CIFAR10], root: Path) -> list[Path]:
    names = [n for n, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return [root / cls.base_folder / n for n in names]


def _missing_cifar_message(name: str, root: Path, missing: list[Path]) -> str:
    cls = _CIFAR_CLASSES[name]
    folder = root / cls.base_folder
    lacking = f" (missing: {', '.join(p.name for p in missing)})" if missing else ""
    return (
        f"{_CIFAR_LABELS[name]} not found: expected the extracted python version in {folder}"
        f"{lacking}. To get it: set download=True "
        f"(`--download`) where internet is available; or download {cls.url}, extract it "
        f"into {root} so that {cls.base_folder}/ lies there; or point data_dir or "
        f"${DATA_DIR_ENV} at a folder that contains {cls.base_folder}/."
    )


def _cifar_part(cfg: DataConfig, root: Path, *, train: bool) -> tv_datasets.CIFAR10:
    name = cfg.dataset
    if not cfg.download:
        missing = [p for p in _cifar_files(_CIFAR_CLASSES[name], root) if not p.is_file()]
        if missing:
            raise DatasetNotFoundError(_missing_cifar_message(name, root, missing))
    try:
        return _CIFAR_CLASSES[name](str(root), train=train, download=cfg.download)
    except OSError as err:  # download failed: offline, unwritable root, ...
        raise DatasetNotFoundError(
            f"{_missing_cifar_message(name, root, [])} (download failed: {err})"
        ) from err


def _cifar(cfg: DataConfig) -> _Source:
    root = resolve_data_dir(cfg)
    train_base = _cifar_part(cfg, root, train=True)
    test_base = _cifar_part(cfg, root, train=False)
    train_idx = _choose(np.arange(len(train_base)), cfg.subset, cfg.split_seed, _SUBSET)
    test_idx = _choose(np.arange(len(test_base)), cfg.test_subset, cfg.split_seed, _TEST_SUBSET)
    mean, std = CIFAR_STATS[cfg.dataset]
    size = cfg.resolved_input_size
    return _Source(
        name=cfg.dataset,
        train_base=train_base,
        train_indices=train_idx,
        test_base=test_base,
        test_indices=test_idx,
        num_classes=len(train_base.classes),
        in_channels=3,
        input_size=size,
        mean=mean,
        std=std,
        resize=size != 32,
        flip=True,
    )


# ---------------------------------------------------------------- demo digits


class _TensorImages(Dataset):
    """Images held as one [0, 1] float tensor N x C x H x W, built once."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


@functools.lru_cache(maxsize=4)
def _digits(input_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8x8 digits (0..16) as [0, 1] images resized once per size."""
    from sklearn.datasets import load_digits  # heavy import, only the demo needs it

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if input_size != images.shape[-1]:
        images = torch.nn.functional.interpolate(
            images, size=(input_size, input_size), mode="bilinear", align_corners=False
        ).clamp_(0.0, 1.0)
    return images.contiguous(), torch.as_tensor(bunch.target, dtype=torch.int64)


def _demo(cfg: DataConfig) -> _Source:
    size = cfg.resolved_input_size
    images, labels = _digits(size)
    base = _TensorImages(images, labels)
    train_all, test_all = _holdout(len(base), cfg.holdout_fraction, cfg.split_seed)
    train_idx = _choose(train_all, cfg.subset, cfg.split_seed, _SUBSET)
    test_idx = _choose(test_all, cfg.test_subset, cfg.split_seed, _TEST_SUBSET)
    used = images[torch.as_tensor(train_idx)]
    mean = used.mean(dim=(0, 2, 3))
    std = used.std(dim=(0, 2, 3), unbiased=False)
    return _Source(
        name="demo",
        train_base=base,
        train_indices=train_idx,
        test_base=base,
        test_indices=test_idx,
        num_classes=int(labels.max()) + 1,
        in_channels=1,
        input_size=size,
        mean=tuple(float(m) for m in mean),
        std=_safe_std(std),
        resize=False,
        # A mirrored 2, 3, 5 or 7 is no longer that digit, so digits are only cropped.
        flip=False,
    )


def _safe_std(std: torch.Tensor) -> tuple[float, ...]:
    """A constant channel has std 0; dividing by 1 keeps it finite instead."""
    return tuple(float(s) if s > 1e-6 else 1.0 for s in std)


# ---------------------------------------------------------------- image folders

_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


class CorruptImageError(ValueError):
    """An image file that does not decode; the message names the file."""


def _open_as(path: str, mode: str) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert(mode)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise CorruptImageError(f"image {path} cannot be read: {err}") from None


def _check_one(path: str, full: bool) -> str | None:
    try:
        with Image.open(path) as img:
            img.load() if full else img.verify()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return f"{path} ({' '.join(str(err).split()) or type(err).__name__})"
    return None


def check_images(paths: Sequence[str], *, full: bool, role: str) -> None:
    """Open every file once, in threads, before any training: a bad file found in the
    middle of an epoch loses that epoch, and its traceback would not name it.

    ``full`` decodes the pixels (test images, which no earlier pass reads); otherwise
    PIL's cheap ``verify`` (train images are decoded anyway by the statistics pass,
    whose errors name the file in one line too, also from a DataLoader worker).
    """
    _check_images(tuple(paths), full, role)


@functools.lru_cache(maxsize=8)
def _check_images(paths: tuple[str, ...], full: bool, role: str) -> None:
    """Cached (a success only) because search, test evaluation and retrain ask again."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 1)) as pool:
        bad = [b for b in pool.map(functools.partial(_check_one, full=full), paths,
                                   chunksize=64) if b]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise CorruptImageError(f"{role}: {len(bad)} image(s) cannot be read: {bad[0]}{more}; "
                                "remove or replace them")


def _image_folder(path: Path, role: str, mode: str = "RGB") -> tv_datasets.ImageFolder:
    if not path.is_dir():
        raise DatasetNotFoundError(
            f"{role} {path} does not exist or is not a directory; expected one subfolder "
            f"of images per class, e.g. {path}/cat/001.png, {path}/dog/002.png"
        )
    try:
        return tv_datasets.ImageFolder(str(path), loader=functools.partial(_open_as, mode=mode))
    except FileNotFoundError as err:  # no class folders, or folders without images
        raise DatasetNotFoundError(
            f"{role} {path} is not a class-folder tree: expected one subfolder of images "
            f"per class, e.g. {path}/cat/001.png ({err})"
        ) from err


class _PathImages(Dataset):
    """(path, label) pairs opened in one mode; the statistics pass needs no class scan."""

    def __init__(self, samples: list[tuple[str, int]], mode: str) -> None:
        self.samples = samples
        self.mode = mode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        path, label = self.samples[i]
        return _open_as(path, self.mode), label


def _majority_mode(folder: tv_datasets.ImageFolder) -> str:
    """``L`` if most classes' first image is single-channel, else ``RGB`` (ties keep colour).

    One file per class is enough to tell a greyscale tree from a colour one
    without opening every file, and the decision is the same on every run. All
    images are then converted to that mode, so a stray colour image in a grey
    tree (or the reverse) still yields tensors of one shape.
    """
    first: dict[int, str] = {}
    for path, target in folder.samples:
        first.setdefault(target, path)
    votes = Counter()
    for path in first.values():
        try:
            with Image.open(path) as img:
                votes["L" if img.mode in _GREY_MODES else "RGB"] += 1
        except (OSError, SyntaxError, ValueError) as err:
            raise CorruptImageError(f"image {path} cannot be read: {err}") from None
    return "L" if votes["L"] > votes["RGB"] else "RGB"


def _folder_stats(
    base: tv_datasets.ImageFolder, indices: np.ndarray, mode: str, size: int, workers: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    paths = tuple(base.samples[int(i)][0] for i in indices)
    return _paths_stats(paths, mode, size, workers)


@functools.lru_cache(maxsize=8)
def _paths_stats(
    paths: tuple[str, ...], mode: str, size: int, workers: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of the used training images, resized, before augmentation.

    Cached per process (keyed by the files) because search, test evaluation and
    retrain each ask again, and reading every image is the slow part.
    """
    tf = build_transform(size, (), (), resize=True, normalise=False)
    part = [(p, 0) for p in paths]
    images = TransformedSubset(_PathImages(part, mode), np.arange(len(part)), tf)
    total = torch.zeros(len(mode), dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    count = 0
    try:
        for x, _ in DataLoader(images, batch_size=256, num_workers=workers):
            x = x.to(torch.float64)
            total += x.sum(dim=(0, 2, 3))
            total_sq += (x * x).sum(dim=(0, 2, 3))
            count += x.shape[0] * x.shape[2] * x.shape[3]
    except CorruptImageError as err:
        # A worker's error comes back wrapped in its traceback; the file is on its last line.
        last = str(err).strip().splitlines()[-1]
        raise CorruptImageError(last.split("CorruptImageError: ", 1)[-1]) from None
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0.0).sqrt()
    return tuple(float(m) for m in mean), _safe_std(std)


def _imagefolder(cfg: DataConfig) -> _Source:
    assert cfg.train_dir is not None  # DataConfig enforces it
    train_dir = Path(cfg.train_dir).expanduser().resolve()
    train_base = _image_folder(train_dir, "train_dir")
    if len(train_base.classes) < 2:
        raise ValueError(f"train_dir {train_dir} has {len(train_base.classes)} class folder(s) "
                         f"({', '.join(train_base.classes)}); a classifier needs at least 2")
    mode = _majority_mode(train_base)
    train_base.loader = functools.partial(_open_as, mode=mode)

    if cfg.test_dir is not None:
        test_dir = Path(cfg.test_dir).expanduser().resolve()
        test_base = _image_folder(test_dir, "test_dir", mode)
        if test_base.classes != train_base.classes:
            only_train = sorted(set(train_base.classes) - set(test_base.classes))
            only_test = sorted(set(test_base.classes) - set(train_base.classes))
            raise ValueError(
                f"test_dir {test_dir} must have the same class folders as train_dir "
                f"{train_dir}; only in train_dir: {only_train}, only in test_dir: {only_test}"
            )
        train_all = np.arange(len(train_base))
        test_all = np.arange(len(test_base))
    else:
        test_base = train_base
        train_all, test_all = _holdout(len(train_base), cfg.holdout_fraction, cfg.split_seed)

    train_idx = _choose(train_all, cfg.subset, cfg.split_seed, _SUBSET)
    test_idx = _choose(test_all, cfg.test_subset, cfg.split_seed, _TEST_SUBSET)
    size = cfg.resolved_input_size
    check_images([train_base.samples[int(i)][0] for i in train_idx], full=False,
                 role="train_dir")
    if test_base is not train_base:
        check_images([test_base.samples[int(i)][0] for i in test_idx], full=True,
                     role="test_dir")
    else:
        check_images([train_base.samples[int(i)][0] for i in test_idx], full=True,
                     role="train_dir (hold-out part)")
    mean, std = _folder_stats(train_base, train_idx, mode, size, cfg.explicit_workers)
    return _Source(
        name="imagefolder",
        train_base=train_base,
        train_indices=train_idx,
        test_base=test_base,
        test_indices=test_idx,
        num_classes=len(train_base.classes),
        in_channels=len(mode),
        input_size=size,
        mean=mean,
        std=std,
        resize=True,
        flip=True,
    )
