"""Small on-disk datasets in the real formats, for the tests and the benchmarks
(``benchmarks/common.py`` puts this folder on ``sys.path``).

CIFAR cannot be downloaded in CI or on offline machines, yet the loaders must be
exercised through torchvision's real code path. These writers produce folders
that torchvision reads exactly as it reads the official archives, with images
whose class can be learned (a class colour and stripe pattern plus noise), so a
tiny training run can show that accuracy rises above chance.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image


def _class_images(
    rng: np.random.Generator, labels: np.ndarray, palette: np.ndarray, waves: np.ndarray, size: int
) -> np.ndarray:
    """uint8 N x size x size x 3: class colour + class stripe pattern + noise."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    phase = 2 * np.pi * (waves[:, 0, None, None] * yy + waves[:, 1, None, None] * xx)
    pattern = np.sin(phase)  # K x size x size
    img = palette[labels, None, None, :] * 0.6 + 50.0 * pattern[labels, :, :, None] + 40.0
    img = img + rng.normal(0.0, 20.0, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _class_style(rng: np.random.Generator, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    palette = rng.uniform(0.0, 255.0, size=(num_classes, 3))
    waves = rng.integers(0, 4, size=(num_classes, 2))
    return palette, waves


def _balanced_labels(rng: np.random.Generator, n: int, num_classes: int) -> np.ndarray:
    return rng.permutation(np.arange(n) % num_classes).astype(np.int64)


def _dump(path: Path, obj: dict) -> None:
    # Protocol 2 like the official (Python 2 era) pickles; torchvision loads
    # them with encoding="latin1", which leaves these str keys as they are.
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _cifar_rows(images: np.ndarray) -> np.ndarray:
    """HWC images -> the archive's rows: 1024 R, then 1024 G, then 1024 B values."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def write_cifar_folder(
    root: str | Path, num_classes: int = 10, n_train: int = 100, n_test: int = 20, seed: int = 0
) -> Path:
    """Write the extracted python-version CIFAR-10 (or, for 100 classes, CIFAR-100) under root.

    CIFAR-10: ``root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``;
    CIFAR-100: ``root/cifar-100-python/{train, test, meta}``. Returns ``root``.
    """
    if num_classes not in (10, 100):
        raise ValueError(f"num_classes must be 10 or 100 (CIFAR-10/100), got {num_classes}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    palette, waves = _class_style(rng, num_classes)

    def part(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = _balanced_labels(rng, n, num_classes)
        return _cifar_rows(_class_images(rng, labels, palette, waves, 32)), labels

    train_x, train_y = part(n_train)
    test_x, test_y = part(n_test)
    names = [f"class_{i:02d}" for i in range(num_classes)]

    if num_classes == 10:
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        batches = np.array_split(np.arange(n_train), 5)
        for b, idx in enumerate(batches, start=1):
            _dump(
                folder / f"data_batch_{b}",
                _cifar10_batch(f"training batch {b} of 5", train_x[idx], train_y[idx]),
            )
        _dump(folder / "test_batch", _cifar10_batch("testing batch 1 of 1", test_x, test_y))
        _dump(
            folder / "batches.meta",
            {"num_cases_per_batch": len(batches[0]), "label_names": names, "num_vis": 3072},
        )
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True, exist_ok=True)
        coarse_names = [f"super_{i:02d}" for i in range(20)]
        for fname, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
            _dump(
                folder / fname,
                {
                    "filenames": [f"img_{i:05d}.png" for i in range(len(y))],
                    "batch_label": f"{fname}ing batch 1 of 1",
                    "fine_labels": y.tolist(),
                    "coarse_labels": (y // 5).tolist(),
                    "data": x,
                },
            )
        _dump(folder / "meta", {"fine_label_names": names, "coarse_label_names": coarse_names})
    return root


def _cifar10_batch(label: str, x: np.ndarray, y: np.ndarray) -> dict:
    return {
        "batch_label": label,
        "labels": y.tolist(),
        "data": x,
        "filenames": [f"img_{i:05d}.png" for i in range(len(y))],
    }


def write_image_folder(
    root: str | Path,
    num_classes: int = 3,
    per_class: int = 10,
    size: int = 20,
    mode: Literal["RGB", "L"] = "RGB",
    seed: int = 0,
) -> Path:
    """Write ``root/class_<k>/<i>.png``: ``per_class`` PNGs per class in ``mode``. Returns root."""
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    palette, waves = _class_style(rng, num_classes)
    for k in range(num_classes):
        folder = root / f"class_{k}"
        folder.mkdir(parents=True, exist_ok=True)
        labels = np.full(per_class, k)
        for i, img in enumerate(_class_images(rng, labels, palette, waves, size)):
            Image.fromarray(img, "RGB").convert(mode).save(folder / f"{i:04d}.png")
    return root
