"""How a training loop gets its batches: on the device, or through CPU workers.

Two decisions, pure functions of the config and the machine, so the engine,
the retrainer and the GPU acceptance script take them the same way:

- ``device_resident``: ``auto`` keeps a dataset on a CUDA device when it takes at
  most ``RESIDENT_SHARE`` of the memory the run may use (CIFAR-10's 150 MB on any
  current GPU); never on a CPU, where the images are in host memory anyway and
  the per-image pipeline is the one the tests and the demo numbers were made with.
- ``num_workers``: ``auto`` gives the CPU-side pipeline ``min(8, cpus - 1)``
  workers on CUDA (``cpus``: the CPUs this process may run on, capped by torch's
  thread count, which a Ray trial sets to its reserved CPUs), and none when the
  data is on the device or the step itself runs on the CPU cores.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from prnas.data.device_resident import DeviceDataset, device_dataset, raw_nbytes

__all__ = ["MAX_AUTO_WORKERS", "RESIDENT_SHARE", "augment_generator", "available_cpus",
           "device_splits", "resolve_num_workers", "sequential_batches", "use_device_resident"]

RESIDENT_SHARE = 0.25
MAX_AUTO_WORKERS = 8


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by torch's intra-op threads."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, torch.get_num_threads()))


def resolve_num_workers(value: int | Literal["auto"], device: torch.device | None,
                        resident: bool = False, cpus: int | None = None) -> int:
    """DataLoader workers for ``data.num_workers`` (an int is taken as it is)."""
    if value != "auto":
        return int(value)
    if resident or device is None or device.type != "cuda":
        return 0
    n = available_cpus() if cpus is None else cpus
    return max(0, min(MAX_AUTO_WORKERS, n - 1))


def use_device_resident(value: bool | Literal["auto"], device: torch.device,
                        nbytes: int | None, usable_bytes: int | None) -> bool:
    """Whether to hold the data on ``device``; ``nbytes`` None: the data cannot be held there.

    ``True`` forces it (on a CPU too, which is how the tests run it) and fails
    when the dataset is of a kind this path does not handle.
    """
    if value is True:
        if nbytes is None:
            raise ValueError("data.device_resident is true, but this dataset's images or "
                             "transform cannot be held on the device; use auto or false")
        return True
    if value is False or nbytes is None or device.type != "cuda":
        return False
    return usable_bytes is None or nbytes <= RESIDENT_SHARE * usable_bytes


def augment_generator(seed: int) -> torch.Generator:
    """The augmentation stream of device-resident data, seeded from the run's seed.

    A stream of its own (not the global RNG), so the engine checkpoints it next to
    the other RNG states and a resumed run draws the same crops, flips and Cutouts.
    """
    state = np.random.SeedSequence([seed, 7]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def device_splits(value: bool | Literal["auto"], device: torch.device, splits: Sequence[object],
                  usable_bytes: int | None) -> list[DeviceDataset] | None:
    """All ``splits`` on ``device`` when ``data.device_resident`` says so (together, as the
    memory check is for their sum), else None: the CPU-side pipeline."""
    if value is False or (value == "auto" and device.type != "cuda"):
        return None  # decided without reading an image
    sizes = [raw_nbytes(s) for s in splits]
    total = None if any(n is None for n in sizes) else sum(sizes)  # type: ignore[misc]
    if not use_device_resident(value, device, total, usable_bytes):
        return None
    out = [device_dataset(s, device) for s in splits]
    return out  # type: ignore[return-value]


def sequential_batches(n: int, batch_size: int) -> list[list[int]]:
    """Index lists of an unshuffled pass, as ``DataLoader(batch_size=..., shuffle=False)``."""
    return [list(range(i, min(n, i + batch_size))) for i in range(0, n, batch_size)]
