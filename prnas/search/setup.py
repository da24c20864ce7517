"""Everything a search needs before its first step: threads, device, seeds, data.

Kept apart from the supernet and the loop (as Lightning keeps a DataModule and
the trainer's device set-up apart from the model) so that the order in which
the process is configured, which fixes every random draw after it, is written
down once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from prnas.data.datasets import search_datasets, test_dataset
from prnas.data.loading import augment_generator, device_splits, resolve_num_workers
from prnas.data.source import DataInfo
from prnas.runtime.batch_size import BatchSizeController
from prnas.runtime.device import configure_threads, pick_device, seed_everything
from prnas.runtime.memory import probe_for
from prnas.runtime.performance import Resolved, resolve
from prnas.search.config import SearchConfig
from prnas.space.constraints import Constraints


@dataclass
class Split:
    dataset: Any
    n: int


@dataclass
class SearchSetup:
    """The process and data a search runs on; built once, never checkpointed (the
    ``augment_rng`` state is, by the engine). ``cfg`` is the search's one copy of its
    config: the engine, the supernet and the epoch loop all read it here."""

    cfg: SearchConfig
    device: torch.device
    perf: Resolved
    constraints: Constraints
    info: DataInfo
    controller: BatchSizeController
    augment_rng: torch.Generator
    weights: Split
    alphas: Split
    test: Any | None
    data_on_device: bool
    num_workers: int


def prepare(cfg: SearchConfig) -> SearchSetup:
    """Threads, device and seeds first (in this order), then the data: the weight and
    alpha halves of the training set, the test set when asked for, on the device when
    ``data.device_resident`` says so."""
    configure_threads(cfg.num_threads)
    device = pick_device(cfg.device)
    perf = resolve(cfg.performance, device)
    seed_everything(cfg.seed)
    constraints = cfg.resolved_constraints()
    w_ds, a_ds, info = search_datasets(cfg.data)
    test = test_dataset(cfg.data) if cfg.evaluate_test else None
    controller = BatchSizeController(cfg.batch, probe_for(device, cfg.batch.memory_budget_bytes))
    # Device-resident data (prnas.data.loading): the splits as DeviceDatasets,
    # augmented from a stream of their own that the checkpoint keeps.
    augment_rng = augment_generator(cfg.seed)
    probe = controller.probe
    resident = device_splits(cfg.data.device_resident, device,
                             [w_ds, a_ds] + ([test] if test is not None else []),
                             probe.total_bytes() if probe is not None else None)
    if resident is not None:
        w_ds, a_ds, *rest = resident
        test = rest[0] if rest else None
    on_device = resident is not None
    return SearchSetup(
        cfg=cfg, device=device, perf=perf, constraints=constraints, info=info,
        controller=controller,
        augment_rng=augment_rng, weights=Split(w_ds, len(w_ds)), alphas=Split(a_ds, len(a_ds)),
        test=test, data_on_device=on_device,
        num_workers=resolve_num_workers(cfg.data.num_workers, device, on_device))
