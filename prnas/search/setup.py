"""Everything a search needs before its first step: threads, then the run set-up
(:mod:`prnas.runtime.prepare`: device, seeds, data) with the search's own splits.

Kept apart from the supernet and the loop (as Lightning keeps a DataModule and
the trainer's device set-up apart from the model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prnas.data.datasets import search_datasets, test_dataset
from prnas.runtime.device import configure_threads
from prnas.runtime.prepare import RunSetup
from prnas.runtime.prepare import prepare as prepare_run
from prnas.search.config import SearchConfig
from prnas.space.constraints import Constraints


@dataclass
class Split:
    dataset: Any
    n: int


@dataclass
class SearchSetup(RunSetup):
    """The run set-up with the search's splits. ``cfg`` is the search's one copy of its
    config: the engine, the supernet and the epoch loop all read it here."""

    cfg: SearchConfig
    constraints: Constraints
    weights: Split
    alphas: Split
    test: Any | None


def prepare(cfg: SearchConfig) -> SearchSetup:
    """Threads, then device, seeds and data (:func:`prnas.runtime.prepare.prepare`): the
    weight and alpha halves of the training set and the test set when asked for."""
    configure_threads(cfg.num_threads)

    def load() -> list[Any]:  # weights half, alphas half, [test part,] info
        *halves, info = search_datasets(cfg.data)
        return [*halves, *([test_dataset(cfg.data)] if cfg.evaluate_test else []), info]

    run = prepare_run(cfg, load)
    w_ds, a_ds, *rest = run.datasets
    return SearchSetup(**vars(run), cfg=cfg, constraints=cfg.resolved_constraints(),
                       weights=Split(w_ds, len(w_ds)), alphas=Split(a_ds, len(a_ds)),
                       test=rest[0] if rest else None)
