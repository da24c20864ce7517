"""Retraining as Ray Tune trials: one trial per (genotype, seed), one ``step()`` per epoch.

The Trainable is a thin shell around :class:`prnas.retrain.Retrainer`: its
checkpoint is the Retrainer's complete state, so a trial that dies (or a whole
experiment that is killed and restored with ``--resume``) continues from its
last epoch exactly as the in-process CLI does.

Each trial writes a retrain's files (``epochs.jsonl``, ``model.pt``:
:mod:`prnas.retrain.run_files`) into its folder; ``retrain.parquet`` is built
from them (:func:`result_rows`), not from Tune's result logs. The console gets
one line per epoch and trial (:class:`EpochPrinter`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune

from prnas.filenames import EPOCHS_FILE, RETRAIN_CHECKPOINT_FILE
from prnas.records import read_jsonl, trial_dirs
from prnas.retrain.config import RetrainConfig, build_config
from prnas.retrain.genotypes import GenotypeRef
from prnas.retrain.results import rows_to_frame
from prnas.retrain.run_files import RunFiles, run_labels
from prnas.retrain.trainer import Retrainer
from prnas.runtime.device import configure_threads, release_cached_memory
from prnas.storage import Location, as_location
from prnas.tune import ray_compat
from prnas.tune.cluster import (
    claim_gpu_share,
    data_on_this_node,
    resource_request,
    trial_gpu_fraction,
)
from prnas.tune.progress import TrialProgress, trial_log


class RetrainTrainable(tune.Trainable):
    """config: ``retrain`` (RetrainConfig dump), ``genotype`` (a label), ``genotypes`` (label ->
    GenotypeRef dict), ``seed``, ``threads`` (torch intra-op threads, = CPUs per trial)."""

    @classmethod
    def default_resource_request(cls, config: dict[str, Any]):
        return resource_request(config)

    def setup(self, config: dict[str, Any]) -> None:
        configure_threads(int(config.get("threads") or 1))
        self._build(config)

    def _build(self, config: dict[str, Any]) -> None:
        self.ref = GenotypeRef.from_dict(config["genotypes"][config["genotype"]])
        overrides: dict[str, Any] = {"seed": int(config["seed"])}
        budget = claim_gpu_share(trial_gpu_fraction(self))
        if budget is not None and config["retrain"]["batch"].get(
                "memory_budget_bytes") is None:
            overrides["batch.memory_budget_bytes"] = budget
        cfg = build_config(config["retrain"], overrides)
        self.retrainer = Retrainer(cfg, self.ref.load(), log=trial_log(
            f"{config['genotype']} r{cfg.seed} ({self.trial_id})",
            int(config.get("verbosity", 1))))
        with data_on_this_node():
            self.retrainer.setup()
        self.files = RunFiles(self.trial_folder, self.trial_id,
                              run_labels(self.ref, cfg, self.retrainer.info.name))

    def step(self) -> dict[str, Any]:
        row = self.files.epoch(self.retrainer)
        if self.retrainer.log is not None:  # the driver prints the epoch's line
            self.retrainer.log.mark()
        return {**row, "done": self.retrainer.done, "epochs": self.retrainer.cfg.epochs}

    def trial_folder(self) -> Location:
        """The trial's folder in the experiment storage, not Ray's scratch ``logdir``."""
        return ray_compat.trial_storage(self)

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        self.retrainer.save(Path(checkpoint_dir) / RETRAIN_CHECKPOINT_FILE)

    def load_checkpoint(self, checkpoint: str | dict | None) -> None:
        if not isinstance(checkpoint, str):
            raise TypeError(f"expected a checkpoint directory, got {type(checkpoint).__name__}")
        self.retrainer.restore(Path(checkpoint) / RETRAIN_CHECKPOINT_FILE)

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Reuse the actor for the next (genotype, seed): rebuild everything from scratch."""
        self.retrainer = None  # never two networks in memory at once
        release_cached_memory()
        self._build(new_config)
        self.config = new_config
        return True


def param_space(cfg: RetrainConfig, refs: Sequence[GenotypeRef], seeds: Sequence[int],
                threads: int, gpus_per_trial: float = 0.0,
                cpus_per_trial: float = 1.0, verbosity: int = 1) -> dict[str, Any]:
    """Grid over genotypes x seeds; everything else is the same validated protocol.

    The grid runs over labels (what Tune's progress table shows), each trial
    looks its reference up in ``genotypes``.
    """
    return {
        "retrain": cfg.model_dump(mode="json"),
        # Each cell travels in the config: a trial on any node needs no driver-side file.
        "genotypes": {r.label: r.embedded().to_dict() for r in refs},
        "genotype": tune.grid_search([r.label for r in refs]),
        "seed": tune.grid_search(list(seeds)),
        "threads": threads,
        "resources": {"cpu": cpus_per_trial, "gpu": gpus_per_trial},
        "verbosity": verbosity,  # the trial's own lines (prnas.tune.progress.trial_log)
    }


def _trial_dirname(trial: Any) -> str:
    label = str(trial.config["genotype"])
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:60]
    # "-r<seed>": the retrain seed, not to be read as the search seed the cell's own
    # label may carry (DL-seed0-<trial>).
    return f"{safe}-r{trial.config['seed']}-{trial.trial_id}"


class EpochPrinter(TrialProgress):
    """One line per epoch and trial, like the search's line per cycle."""

    def label(self, trial: Any) -> str:
        return f"{trial.config.get('genotype')} r{trial.config.get('seed')} ({trial.trial_id})"

    def line(self, result: dict[str, Any]) -> str | None:
        if "epoch" not in result or "test_error" not in result:
            return None
        of = f"/{result['epochs']}" if result.get("epochs") else ""
        return (f"epoch {result['epoch']}{of}: test err {result['test_error']:.2f}%, "
                f"train acc {result['train_acc']:.2f}%, lr {result['lr']:.5f}, "
                f"{result['epoch_time_s']:.1f}s")

    def finished(self, trial: Any) -> str | None:
        return (trial.last_result or {}).get("model_path")


def run_config(storage: str | os.PathLike | Location, name: str, max_failures: int = 1,
               verbose: int = 1, checkpoints: bool = True) -> tune.RunConfig:
    """``verbose``: 0 quiet, 1 a line per epoch and trial, 2 also Ray's status table.
    ``storage``: a folder (shared by all nodes on a cluster) or a storage URI.
    ``checkpoints``: Tune's, of a plain trial (a data-parallel one keeps Ray Train's)."""
    storage = as_location(storage)
    return tune.RunConfig(
        name=name,
        storage_path=storage.path,
        storage_filesystem=storage.ray_filesystem,
        failure_config=tune.FailureConfig(max_failures=max_failures),
        # Every epoch: an epoch is the unit of work and of loss on failure.
        checkpoint_config=(tune.CheckpointConfig(num_to_keep=2, checkpoint_frequency=1,
                                                 checkpoint_at_end=True)
                           if checkpoints else None),
        callbacks=[EpochPrinter()] if verbose >= 1 else [],
        verbose=verbose if verbose >= 2 else 0,
    )


def build_tuner(cfg: RetrainConfig, refs: Sequence[GenotypeRef], seeds: Sequence[int], *,
                storage: str | os.PathLike | Location, name: str, gpus_per_trial: float,
                cpus_per_trial: float,
                max_failures: int = 1, max_concurrent: int | None = None,
                verbose: int = 1, workers_per_trial: int | None = None,
                trainable: Any = None) -> tune.Tuner:
    """A fresh Tuner for genotypes x seeds; ``cfg`` must already hold absolute data paths.

    ``workers_per_trial``: each trial a data-parallel run on that many workers, each
    with ``gpus_per_trial`` and ``cpus_per_trial`` (``prnas.tune.retrain_ddp``);
    ``trainable``: in place of the default one (tests pass one that fails on purpose).
    """
    threads = max(1, int(cpus_per_trial))
    space = param_space(cfg, refs, seeds, threads, gpus_per_trial, cpus_per_trial, verbose)
    if workers_per_trial is not None:
        from prnas.tune.retrain_ddp import ddp_trainable

        space.update(workers=workers_per_trial, experiment=(as_location(storage) / name).uri,
                     max_failures=max_failures)
        trainable = trainable or ddp_trainable()
    return tune.Tuner(
        trainable or RetrainTrainable,
        param_space=space,
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, reuse_actors=False,
                                    trial_dirname_creator=_trial_dirname,
                                    trial_name_creator=_trial_dirname),
        run_config=run_config(storage, name, max_failures, verbose,
                              checkpoints=workers_per_trial is None),
    )


def restore_tuner(path: str | os.PathLike | Location, trainable: Any = None) -> tune.Tuner:
    """Continue a killed experiment: unfinished and errored trials resume from checkpoints,
    with the resources they first asked for (kept in their config). The trainable is the
    one the experiment ran: data-parallel trials or plain ones."""
    path = as_location(path)
    if trainable is None:
        from prnas.tune.retrain_ddp import ddp_trainable

        ddp = ddp_trainable()
        trainable = ddp if ddp.__name__ in ray_compat.trainable_names(path) else RetrainTrainable
    return tune.Tuner.restore(path.path, trainable, resume_unfinished=True,
                              resume_errored=True, storage_filesystem=path.ray_filesystem)


def can_restore(path: str | os.PathLike | Location) -> bool:
    path = as_location(path)
    return tune.Tuner.can_restore(path.path, storage_filesystem=path.ray_filesystem)


def result_rows(experiment: str | os.PathLike | Location) -> pd.DataFrame:
    """Every epoch of every trial from the trials' own ``epochs.jsonl``, in the documented
    parquet schema (Tune's result logs are not read: a restarted trial may leave them
    with epochs its retry replaced)."""
    rows = [r for d in trial_dirs(experiment, EPOCHS_FILE)
            for r in read_jsonl(d / EPOCHS_FILE, "epoch")]
    return rows_to_frame(rows)
