"""The offline demo: scikit-learn's bundled 8x8 digits, no download, no files."""

from __future__ import annotations

import functools

import torch
from torch.utils.data import TensorDataset

from prnas.data.config import DataConfig
from prnas.data.source import SUBSET, TEST_SUBSET, Source, choose, holdout, register, safe_std


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


@register("demo")
def demo_source(cfg: DataConfig) -> Source:
    size = cfg.resolved_input_size
    images, labels = _digits(size)
    base = TensorDataset(images, labels)  # images as one [0, 1] float tensor N x C x H x W
    train_all, test_all = holdout(len(base), cfg.holdout_fraction, cfg.split_seed)
    train_idx = choose(train_all, cfg.subset, cfg.split_seed, SUBSET)
    test_idx = choose(test_all, cfg.test_subset, cfg.split_seed, TEST_SUBSET)
    used = images[torch.as_tensor(train_idx)]
    mean = used.mean(dim=(0, 2, 3))
    std = used.std(dim=(0, 2, 3), unbiased=False)
    return Source(
        name="demo", train_base=base, train_indices=train_idx, test_base=base,
        test_indices=test_idx, num_classes=int(labels.max()) + 1, in_channels=1,
        input_size=size, mean=tuple(float(m) for m in mean), std=safe_std(std), resize=False,
        # A mirrored 2, 3, 5 or 7 is no longer that digit, so digits are only cropped.
        flip=False)
