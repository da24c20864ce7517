"""A search experiment: seeds x search spaces as Tune trials, then parquet results.

``run_search`` is what ``tune_jobs/run_search.py`` calls after it validated its
arguments and started (or joined) Ray; tests call it too, on a shared Ray.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from ray import tune

from prnas.search.alpha_signal import noise_warning, signal_text
from prnas.search.config import SearchConfig
from prnas.storage import Location, as_location
from prnas.tune.progress import TrialProgress
from prnas.tune.results import summary, write_results
from prnas.tune.scheduler import FanOutSearch, PruneAndReplaceScheduler
from prnas.tune.search_trainable import SEARCH_KEY, SearchTrainable


@dataclass(frozen=True)
class SearchExperiment:
    """What to run: one validated base config fanned out over spaces and seeds."""

    cfg: SearchConfig  # data paths already absolute: trials run in other directories
    storage: Location  # a folder (shared by all nodes on a cluster) or a storage URI
    name: str
    spaces: Sequence[str] = ("DL",)
    seeds: Sequence[int] = (0,)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 0
    verbosity: int = 1  # trials: 0 silent, 1 a line after 30 s of silence, 2 every epoch
    # What runs each trial, and Tune callbacks beside the console's (tests pass a
    # trainable that fails on purpose, or a callback that interrupts the driver).
    trainable: type[SearchTrainable] = SearchTrainable
    callbacks: Sequence[Any] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "storage", as_location(self.storage))

    @property
    def path(self) -> Location:
        return self.storage / self.name


@dataclass
class SearchOutcome:
    """Where the experiment and its parquet files are, and how its trials ended."""

    path: Location
    results_path: Location
    candidates_path: Location
    results: pd.DataFrame
    summary: pd.DataFrame
    errors: dict[str, str]
    grid: tune.ResultGrid

    @property
    def complete(self) -> bool:
        return (not self.errors and bool(len(self.summary))
                and bool(self.summary["status"].isin(["done", "halved"]).all()))


def param_space(exp: SearchExperiment) -> dict[str, Any]:
    cfg = exp.cfg
    if exp.gpus_per_trial == 0 and cfg.device == "auto":
        # A zero-GPU trial on a GPU node must not quietly use a GPU it did not reserve.
        cfg = cfg.model_copy(update={"device": "cpu"})
    space: dict[str, Any] = {
        SEARCH_KEY: cfg.model_dump(mode="json"),
        "space": tune.grid_search(list(exp.spaces)),
        "seed": tune.grid_search(list(exp.seeds)),
        "resources": {"cpu": exp.cpus_per_trial, "gpu": exp.gpus_per_trial},
        "verbosity": exp.verbosity,
    }
    return space


def trial_dirname(trial: Any) -> str:
    return f"{trial.config['space']}-seed{trial.config['seed']}-{trial.trial_id}"


class ProgressPrinter(TrialProgress):
    """One readable line per cycle, finished trial and error (Tune's tables would show JSON)."""

    def label(self, trial: Any) -> str:
        return f"{trial.config.get('space')} seed {trial.config.get('seed')} ({trial.trial_id})"

    def line(self, result: dict[str, Any]) -> str | None:
        if "cycle" not in result:
            return None
        again = " (reported again for a decision)" if result.get("redecide") else ""
        return (f"cycle {result['cycle']}/{result['num_cycles']}{again}: "
                f"valid acc {result['valid_acc']:.3f}, train acc {result['train_acc']:.3f}, "
                f"{result['candidates_normal']}+{result['candidates_reduce']} candidates, "
                f"{signal_text(result)}, {result['cycle_time_s']:.1f}s")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        super().on_trial_result(iteration, trials, trial, result, **info)
        if "cycle" in result and not result.get("redecide"):
            warning = noise_warning(result)
            if warning:
                self.out(f"[{self.label(trial)}] {warning}")

    def finished(self, trial: Any) -> str | None:
        return (trial.last_result or {}).get("genotype_path")


def build_tuner(exp: SearchExperiment) -> tune.Tuner:
    return tune.Tuner(
        exp.trainable,
        param_space=param_space(exp),
        tune_config=tune.TuneConfig(
            scheduler=PruneAndReplaceScheduler(), num_samples=1,
            # A paused trial's actor is handed to the next trial to run via
            # reset_config(); FanOutSearch keeps Tune from dropping it once the grid of
            # trials is exhausted, which would start a new process for every cycle.
            search_alg=FanOutSearch(), reuse_actors=True,
            trial_dirname_creator=trial_dirname, trial_name_creator=trial_dirname),
        run_config=tune.RunConfig(
            name=exp.name, storage_path=exp.storage.path,
            storage_filesystem=exp.storage.ray_filesystem,
            failure_config=tune.FailureConfig(max_failures=exp.max_failures),
            # One checkpoint per cycle (taken when the scheduler pauses the trial), all
            # kept: a cycle is the unit of resumption and each holds the weights that
            # were carried into the next pools.
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=True),
            callbacks=[ProgressPrinter(), *exp.callbacks],
            verbose=2 if exp.verbosity >= 2 else 0,  # -v: Ray's status table too
        ),
    )


def restore_tuner(path: Location, trainable: type[SearchTrainable] = SearchTrainable
                  ) -> tune.Tuner:
    """Continue an interrupted experiment from its storage alone (any driver machine);
    errored trials resume from their checkpoints too. ``trainable``: the class the
    experiment ran (Tune refuses another)."""
    return tune.Tuner.restore(path.path, trainable, resume_unfinished=True,
                              resume_errored=True, storage_filesystem=path.ray_filesystem)


def run_search(exp: SearchExperiment | None = None, *,
               resume_path: str | os.PathLike | Location | None = None,
               trainable: type[SearchTrainable] = SearchTrainable) -> SearchOutcome:
    """Run (or, given ``resume_path``, continue: ``trainable`` as it ran) an experiment and
    write its parquet files.

    Ray must be initialised already (``prnas.tune.cluster.init_ray``).
    """
    if (exp is None) == (resume_path is None):
        raise ValueError("pass either an experiment or a resume_path")
    if resume_path is not None:
        path = as_location(resume_path)
        tuner = restore_tuner(path, trainable)
    else:
        path = exp.path
        if path.exists():
            raise FileExistsError(f"experiment {path} already exists; continue it with "
                                  "--resume or choose another --name (nothing is overwritten)")
        tuner = build_tuner(exp)
    grid = tuner.fit()
    errors: dict[str, str] = {}
    for r in grid:
        if r.error is not None:
            tid = (r.metrics or {}).get("trial_id") or r.path.rstrip("/").rsplit("-", 1)[-1]
            errors[tid] = f"{type(r.error).__name__}: {r.error}"
    res_path, cand_path, frame = write_results(path, overwrite=resume_path is not None)
    return SearchOutcome(path, res_path, cand_path, frame, summary(frame, errors), errors, grid)
