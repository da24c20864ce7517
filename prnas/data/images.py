"""Image files: opening, up-front checks, class-folder trees and their statistics.

Shared by the ``imagefolder`` and ``imagenet`` sources and by ``prnas.evaluate``.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets as tv_datasets

from prnas.data.source import DatasetNotFoundError, TransformedSubset, safe_std
from prnas.data.transforms import build_transform

_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


class CorruptImageError(ValueError):
    """An image file that does not decode; the message names the file."""


def open_as(path: str, mode: str) -> Image.Image:
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


def image_folder(path: Path, role: str, mode: str = "RGB") -> tv_datasets.ImageFolder:
    if not path.is_dir():
        raise DatasetNotFoundError(
            f"{role} {path} does not exist or is not a directory; expected one subfolder "
            f"of images per class, e.g. {path}/cat/001.png, {path}/dog/002.png"
        )
    try:
        return tv_datasets.ImageFolder(str(path), loader=functools.partial(open_as, mode=mode))
    except FileNotFoundError as err:  # no class folders, or folders without images
        raise DatasetNotFoundError(
            f"{role} {path} is not a class-folder tree: expected one subfolder of images "
            f"per class, e.g. {path}/cat/001.png ({err})"
        ) from err


class PathImages(Dataset):
    """(path, label) pairs opened in one mode, without a class scan: the statistics pass,
    and evaluation on a folder whose classes were matched to a model's."""

    def __init__(self, samples: list[tuple[str, int]], mode: str) -> None:
        self.samples = samples
        self.mode = mode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        path, label = self.samples[i]
        return open_as(path, self.mode), label


def majority_mode(folder: tv_datasets.ImageFolder) -> str:
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


def folder_stats(
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
    images = TransformedSubset(PathImages(part, mode), np.arange(len(part)), tf)
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
    return tuple(float(m) for m in mean), safe_std(std)
