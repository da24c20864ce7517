"""Any class-folder tree of images (one subfolder per class), with an optional test tree."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from prnas.data.config import DataConfig
from prnas.data.images import check_images, folder_stats, image_folder, majority_mode, open_as
from prnas.data.source import SUBSET, TEST_SUBSET, Source, choose, holdout, register


@register("imagefolder")
def imagefolder_source(cfg: DataConfig) -> Source:
    assert cfg.train_dir is not None  # DataConfig enforces it
    train_dir = Path(cfg.train_dir).expanduser().resolve()
    train_base = image_folder(train_dir, "train_dir")
    if len(train_base.classes) < 2:
        raise ValueError(f"train_dir {train_dir} has {len(train_base.classes)} class folder(s) "
                         f"({', '.join(train_base.classes)}); a classifier needs at least 2")
    mode = majority_mode(train_base)
    train_base.loader = functools.partial(open_as, mode=mode)

    if cfg.test_dir is not None:
        test_dir = Path(cfg.test_dir).expanduser().resolve()
        test_base = image_folder(test_dir, "test_dir", mode)
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
        train_all, test_all = holdout(len(train_base), cfg.holdout_fraction, cfg.split_seed)

    train_idx = choose(train_all, cfg.subset, cfg.split_seed, SUBSET)
    test_idx = choose(test_all, cfg.test_subset, cfg.split_seed, TEST_SUBSET)
    size = cfg.resolved_input_size
    check_images([train_base.samples[int(i)][0] for i in train_idx], full=False,
                 role="train_dir")
    check_images([test_base.samples[int(i)][0] for i in test_idx], full=True,
                 role="test_dir" if test_base is not train_base else "train_dir (hold-out part)")
    mean, std = folder_stats(train_base, train_idx, mode, size, cfg.explicit_workers)
    return Source(
        name="imagefolder", train_base=train_base, train_indices=train_idx,
        test_base=test_base, test_indices=test_idx, num_classes=len(train_base.classes),
        in_channels=len(mode), input_size=size, mean=mean, std=std, resize=True, flip=True)
