"""Training data held on the accelerator, augmented there a whole batch at a time.

A CPU-side torchvision pipeline decodes, crops, flips and normalises one image
at a time in Python; with ``num_workers: 0`` it cannot keep a GPU step fed.
CIFAR-10/100 are about 150 MB as uint8, so the whole training set fits in
device memory. ``DeviceDataset`` keeps the images there as uint8 (float only for
sources that are float already, e.g. the demo digits) and applies the same
augmentation as ``prnas.data.transforms.build_transform`` to whole batches:

- random crop with zero padding ``p``: offsets uniform over ``0..2p`` in both axes
  (``T.RandomCrop(size, padding=p)``), on the unnormalised image;
- horizontal flip with probability 0.5 (``T.RandomHorizontalFlip()``);
- normalisation with the dataset's mean and std (``T.Normalize``);
- Cutout: a ``length`` square, clipped at the borders, zeroed after
  normalisation, its centre uniform over the image (``transforms.Cutout``).

The random draws come from a CPU ``torch.Generator`` the engine owns, seeds and
checkpoints, so a resumed run draws exactly what an uninterrupted one would and
the same seed gives the same augmentation on CPU and CUDA; only a few integers
per image travel to the device. Which images and transform a split uses is read
from the ``TransformedSubset`` that the CPU path would use, so both paths are
built from one description; anything this module does not recognise stays on
the CPU path.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import TensorDataset
from torchvision import transforms as T

from prnas.data.transforms import Cutout, to_tensor

__all__ = [
    "Augmentation",
    "DeviceBatches",
    "DeviceDataset",
    "augment_batch",
    "device_dataset",
    "read_augmentation",
]


@dataclass(frozen=True)
class Augmentation:
    """What a training (or plain) transform does after its images are tensors."""

    padding: int  # random-crop zero padding; 0 = no crop
    flip: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    cutout: int  # square side; 0 = off


def read_augmentation(transform: object) -> tuple[list, Augmentation] | None:
    """Split a ``build_transform`` pipeline into (steps before the tensor, augmentation).

    None when the pipeline holds a step this module cannot run on a batch, so a
    transform someone adds later never silently goes missing on the device.
    """
    steps = getattr(transform, "transforms", None)
    if steps is None:
        return None
    before: list = []
    padding, flip, cutout = 0, False, 0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    seen_tensor = False
    for step in steps:
        if not seen_tensor:
            if step is to_tensor:
                seen_tensor = True
            elif isinstance(step, T.Resize):
                before.append(step)
            else:
                return None
        elif isinstance(step, T.RandomCrop) and mean is None and not flip:
            if step.padding_mode != "constant" or step.fill != 0 or step.pad_if_needed:
                return None
            pad = step.padding
            if not isinstance(pad, int):
                return None
            padding = pad
        elif isinstance(step, T.RandomHorizontalFlip) and mean is None:
            if step.p != 0.5:
                return None
            flip = True
        elif isinstance(step, T.Normalize) and mean is None:
            mean, std = tuple(float(m) for m in step.mean), tuple(float(s) for s in step.std)
        elif isinstance(step, Cutout) and mean is not None:
            cutout = step.length
        else:
            return None
    if not seen_tensor or mean is None or std is None:
        return None
    return before, Augmentation(padding=padding, flip=flip, mean=mean, std=std, cutout=cutout)


# ---------------------------------------------------------------- batch augmentation


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor onto ``device`` without a stream sync: pinned, then asynchronous
    (the pinned block is reused only after the copy, by torch's caching host allocator)."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def _crop(x: torch.Tensor, padding: int, offsets: torch.Tensor) -> torch.Tensor:
    """``x`` (N, C, H, W) zero-padded by ``padding``, each image cut at its (dy, dx) offset."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    rows = offsets[:, 0, None] + torch.arange(h, device=x.device)  # N x H
    cols = offsets[:, 1, None] + torch.arange(w, device=x.device)  # N x W
    batch = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indexing over (N, H, W) with the channel slice kept: N x H x W x C.
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)


def _cutout_mask(n: int, h: int, w: int, length: int, centres: torch.Tensor,
                 device: torch.device) -> torch.Tensor:
    """1 outside each image's square, 0 inside; the square clipped at the borders."""
    y0 = centres[:, 0] - length // 2
    x0 = centres[:, 1] - length // 2
    ys = torch.arange(h, device=device)[None, :]
    xs = torch.arange(w, device=device)[None, :]
    in_y = (ys >= y0[:, None]) & (ys < y0[:, None] + length)  # N x H
    in_x = (xs >= x0[:, None]) & (xs < x0[:, None] + length)  # N x W
    inside = in_y[:, :, None] & in_x[:, None, :]
    return (~inside).unsqueeze(1)  # N x 1 x H x W


def augment_batch(images: torch.Tensor, aug: Augmentation, generator: torch.Generator | None,
                  *, train: bool = True) -> torch.Tensor:
    """Normalised float32 batch from raw images (uint8 0..255 or float 0..1), on their device.

    ``train=False`` only normalises. Every random draw comes from ``generator``
    (CPU), in a fixed order per batch: crop offsets, flip coins, Cutout centres.
    """
    n, c, h, w = images.shape
    device = images.device
    x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    if train and aug.padding:
        offsets = torch.randint(0, 2 * aug.padding + 1, (n, 2), generator=generator)
        x = _crop(x, aug.padding, _to_device(offsets, device))
    if train and aug.flip:
        flips = torch.rand(n, generator=generator) < 0.5
        flips = _to_device(flips, device)[:, None, None, None]
        x = torch.where(flips, x.flip(-1), x)
    mean, std = _stats(aug, device)
    x = (x - mean.view(1, c, 1, 1)) / std.view(1, c, 1, 1)
    if train and aug.cutout:
        centres = torch.stack([torch.randint(0, h, (n,), generator=generator),
                               torch.randint(0, w, (n,), generator=generator)], dim=1)
        x = x * _cutout_mask(n, h, w, aug.cutout, _to_device(centres, device), device)
    return x.contiguous()


_STATS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _stats(aug: Augmentation, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std as device tensors, made once per (statistics, device)."""
    key = (aug.mean, aug.std, str(device))
    if key not in _STATS:
        _STATS[key] = (torch.tensor(aug.mean, device=device), torch.tensor(aug.std, device=device))
    return _STATS[key]


# ---------------------------------------------------------------- datasets on the device


class DeviceDataset:
    """A split's images and labels on ``device``, with its augmentation.

    ``train``: whether the split's transform augments (training halves) or only
    normalises (test part); :meth:`batch` applies it to the given indices.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, aug: Augmentation) -> None:
        if images.dim() != 4 or len(images) != len(labels):
            raise ValueError("images must be N x C x H x W with one label each")
        self.images = images
        self.labels = labels
        self.aug = aug
        self.train = aug.padding > 0 or aug.flip or aug.cutout > 0

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: Sequence[int] | torch.Tensor, generator: torch.Generator | None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        idx = _to_device(torch.as_tensor(indices, dtype=torch.int64), self.images.device)
        x = augment_batch(self.images.index_select(0, idx), self.aug, generator,
                          train=self.train)
        return x, self.labels.index_select(0, idx)


class DeviceBatches:
    """Iterate ``(x, y)`` device batches for the index lists a batch sampler yields.

    Batches are formed when the loop asks for them, like ``DataLoader(num_workers=0)``,
    so a batch-size change applies to the very next step.
    """

    def __init__(self, dataset: DeviceDataset, batches: Iterable[Sequence[int]],
                 generator: torch.Generator | None) -> None:
        self.dataset, self.batches, self.generator = dataset, batches, generator

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in self.batches:
            yield self.dataset.batch(idx, self.generator)


def raw_nbytes(dataset: object) -> int | None:
    """Bytes the split would take on the device (before building it); None if unsupported."""
    parts = _raw_source(dataset)
    if parts is None:
        return None
    _base, indices, before, _aug = parts
    if not len(indices):
        return 0
    sample, _label = _raw_item(_base, int(indices[0]), before)
    return len(indices) * (sample.numel() * sample.element_size() + 8)


def device_dataset(dataset: object, device: torch.device) -> DeviceDataset | None:
    """``dataset`` (a ``TransformedSubset``) moved to ``device``; None if it cannot be.

    CIFAR without resizing is copied straight from torchvision's uint8 array and the
    demo digits from their float tensor; other sources are read once through the
    transform's deterministic steps (resize) and stored as uint8.
    """
    parts = _raw_source(dataset)
    if parts is None:
        return None
    base, indices, before, aug = parts
    data = getattr(base, "data", None)
    if not before and isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 4:
        images = torch.from_numpy(data[indices]).permute(0, 3, 1, 2).contiguous()
        labels = torch.as_tensor(np.asarray(base.targets)[indices], dtype=torch.int64)
    elif not before and isinstance(base, TensorDataset):  # the demo digits
        images = base.tensors[0][torch.as_tensor(indices)].contiguous()
        labels = base.tensors[1][torch.as_tensor(indices)].to(torch.int64)
    else:
        pairs = [_raw_item(base, int(i), before) for i in indices]
        images = torch.stack([p[0] for p in pairs])
        labels = torch.tensor([p[1] for p in pairs], dtype=torch.int64)
    return DeviceDataset(images.to(device), labels.to(device), aug)


def _raw_source(dataset: object):
    base = getattr(dataset, "base", None)
    indices = getattr(dataset, "indices", None)
    parsed = read_augmentation(getattr(dataset, "transform", None))
    if base is None or indices is None or parsed is None:
        return None
    before, aug = parsed
    return base, np.asarray(indices, dtype=np.int64), before, aug


def _raw_item(base, i: int, before: list) -> tuple[torch.Tensor, int]:
    """One image after the deterministic steps, as uint8 C x H x W (float if it was float),
    and its label."""
    img, label = base[i]
    for step in before:
        img = step(img)
    if isinstance(img, Image.Image):
        arr = np.asarray(img, dtype=np.uint8)
        arr = arr[:, :, None] if arr.ndim == 2 else arr
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous(), int(label)
    return torch.as_tensor(img), int(label)
