"""Everything a run needs before its model: device, seeds, data, batch-size controller.

The search and the retrain set the process up in the same order, and the order
fixes every random draw after it (the model's first weights, the batch order),
so it is written down once, here, as Lightning keeps the device set-up and a
DataModule apart from the model and the loop. ``cfg`` is a search's or a
retrain's config: both have ``device``, ``performance``, ``seed``, ``batch`` and
``data`` sections.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from prnas.data.loading import augment_generator, device_splits, resolve_num_workers
from prnas.data.source import DataInfo
from prnas.runtime.batch_size import BatchSizeController
from prnas.runtime.device import pick_device, seed_everything
from prnas.runtime.memory import probe_for
from prnas.runtime.performance import Resolved, resolve


@dataclass
class RunSetup:
    """The process and data a run trains on; built once, never checkpointed (the
    ``augment_rng`` state is, by the run)."""

    device: torch.device
    perf: Resolved
    info: DataInfo
    controller: BatchSizeController
    #: Crops, flips and Cutout of device-resident data (``prnas.data.loading``).
    augment_rng: torch.Generator
    datasets: list[Any]
    data_on_device: bool
    num_workers: int


def prepare(cfg: Any, load: Callable[[], Sequence[Any]]) -> RunSetup:
    """Device and seeds first (in this order), then ``load()``'s datasets (and, last, their
    ``DataInfo``), all on the device when ``data.device_resident`` says so (together:
    the memory check is for their sum)."""
    device = pick_device(cfg.device)
    perf = resolve(cfg.performance, device)
    seed_everything(cfg.seed)
    *datasets, info = load()
    controller = BatchSizeController(cfg.batch, probe_for(device, cfg.batch.memory_budget_bytes))
    probe = controller.probe
    resident = device_splits(cfg.data.device_resident, device, list(datasets),
                             probe.total_bytes() if probe is not None else None)
    on_device = resident is not None
    return RunSetup(device=device, perf=perf, info=info, controller=controller,
                    augment_rng=augment_generator(cfg.seed),
                    datasets=list(resident if on_device else datasets),
                    data_on_device=on_device,
                    num_workers=resolve_num_workers(cfg.data.num_workers, device, on_device))
