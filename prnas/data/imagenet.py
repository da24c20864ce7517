"""ImageNet (or any tree laid out like it) for the mobile-setting retrain.

The layout users already have: ``<data_dir>/train/<class>/<image>`` and
``<data_dir>/val/<class>/<image>`` (torchvision's ``ImageFolder`` under each,
the same class folders in both). The transforms are the standard ones of the
DARTS family's ImageNet scripts: training ``RandomResizedCrop`` + horizontal
flip + colour jitter (0.4, 0.4, 0.4, 0.2), evaluation ``Resize(size * 256/224)``
+ ``CenterCrop(size)``, normalised with ImageNet's channel statistics. Those
are fixed, not measured: a statistics pass over 1.28M images would take longer
than an epoch, and the published networks were trained with them.

Any small ImageFolder tree in this layout (a few classes of ImageNet, or your
own images) runs the same protocol for trying it out; ``data.subset`` and
``data.test_subset`` take a seeded part of a larger one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torchvision import datasets as tv_datasets
from torchvision import transforms as T

from prnas.data.config import DataConfig, resolve_data_dir
from prnas.data.images import open_as
from prnas.data.source import SUBSET, TEST_SUBSET, DatasetNotFoundError, Source, choose, register
from prnas.data.transforms import Cutout

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "eval_transform", "imagenet_source",
           "layout_error", "train_transform"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
JITTER = (0.4, 0.4, 0.4, 0.2)  # brightness, contrast, saturation, hue


def train_transform(size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD, *,
                    augment: bool = True, cutout: int = 0) -> Callable:
    if not augment:
        return eval_transform(size, mean, std)
    steps: list[Callable] = [
        T.RandomResizedCrop(size),
        T.RandomHorizontalFlip(),
        T.ColorJitter(*JITTER),
        T.ToTensor(),
        T.Normalize(tuple(mean), tuple(std)),
    ]
    if cutout:
        steps.append(Cutout(cutout))
    return T.Compose(steps)


def eval_transform(size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Callable:
    """Resize the short side to ``size * 256 / 224`` (256 at 224), centre-crop ``size``."""
    return T.Compose([
        T.Resize(round(size * 256 / 224)),
        T.CenterCrop(size),
        T.ToTensor(),
        T.Normalize(tuple(mean), tuple(std)),
    ])


def layout_error(root: Path, why: str) -> str:
    return (f"data.data_dir {root}: {why}; expected an ImageNet-style ImageFolder tree "
            f"{root}/train/<class>/<image> and {root}/val/<class>/<image> with the same "
            "class folders in both")


def _folder(root: Path, part: str) -> tv_datasets.ImageFolder:
    path = root / part
    if not path.is_dir():
        raise DatasetNotFoundError(layout_error(root, f"no {part}/ folder"))
    try:
        return tv_datasets.ImageFolder(str(path),
                                       loader=functools.partial(open_as, mode="RGB"))
    except FileNotFoundError as err:  # no class folders, or folders without images
        reason = " ".join(str(err).split())
        raise DatasetNotFoundError(layout_error(root, f"{part}/ is not a class-folder tree "
                                                      f"({reason})")) from None


@dataclass(frozen=True)
class _ImageNetSource(Source):
    """A source whose transforms are the ImageNet ones rather than CIFAR's crop-and-pad."""

    def transform(self, *, train: bool, augment: bool, cutout: int = 0) -> Callable:
        if train:
            return train_transform(self.input_size, self.mean, self.std, augment=augment,
                                   cutout=cutout)
        return eval_transform(self.input_size, self.mean, self.std)


@register("imagenet")
def imagenet_source(cfg: DataConfig) -> Source:
    """The ``imagenet`` dataset of ``cfg``: its train/ and val/ trees, subsets applied."""
    root = resolve_data_dir(cfg)
    if not root.is_dir():
        raise DatasetNotFoundError(layout_error(root, "not a folder"))
    train = _folder(root, "train")
    val = _folder(root, "val")
    if val.classes != train.classes:
        only_train = sorted(set(train.classes) - set(val.classes))[:5]
        only_val = sorted(set(val.classes) - set(train.classes))[:5]
        raise DatasetNotFoundError(layout_error(
            root, f"train/ and val/ class folders differ (only in train/: {only_train}, "
                  f"only in val/: {only_val})"))
    if len(train.classes) < 2:
        raise DatasetNotFoundError(layout_error(root, f"{len(train.classes)} class folder(s); "
                                                      "a classifier needs at least 2"))
    train_idx = choose(np.arange(len(train)), cfg.subset, cfg.split_seed, SUBSET)
    test_idx = choose(np.arange(len(val)), cfg.test_subset, cfg.split_seed, TEST_SUBSET)
    return _ImageNetSource(
        name="imagenet", train_base=train, train_indices=train_idx, test_base=val,
        test_indices=test_idx, num_classes=len(train.classes), in_channels=3,
        input_size=cfg.resolved_input_size, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        resize=True, flip=True)
