"""Data-parallel retraining as a trial of the retrain experiment: one (genotype, seed) on N
workers (GPUs) with DDP, through Ray Train inside Ray Tune.

Each trial is a Tune function (:func:`ddp_trainable`) that runs one
``ray.train.torch.TorchTrainer``, the pattern Ray documents for Train runs in a
Tune sweep. Its workers drive :class:`prnas.retrain.ddp.DataParallelRetrainer`
(the DDP loop that matches a single process, see that module). Ray Train places
the workers (one GPU each, on one node or across several), sets up the process
group (NCCL on GPUs, gloo on CPUs) and restarts the worker group from the last
checkpoint after a failure (``max_failures``); a killed experiment resumed with
``--resume`` starts the trial again, and Ray Train continues the run of the same
name from its last checkpoint.

So a data-parallel run has the layout of a plain one: the trial folder holds
``epochs.jsonl`` and, at the end, ``model.pt`` (written by the chief worker through
:class:`prnas.retrain.run_files.RunFiles`, on a shared folder or an object store), Ray
Train's checkpoints sit in the trial's ``train/`` folder, the rows reach the
driver's console line by line through Tune, and ``retrain.parquet`` is built from
the trials' ``epochs.jsonl`` as for any retrain. Several runs proceed at once when
the cluster has room for their workers.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
from ray import tune
from ray.train import Checkpoint, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from prnas.filenames import RETRAIN_CHECKPOINT_FILE
from prnas.retrain.config import build_config
from prnas.retrain.ddp import DataParallelRetrainer
from prnas.retrain.genotypes import GenotypeRef
from prnas.retrain.run_files import RunFiles, run_labels
from prnas.storage import as_location
from prnas.tune.progress import trial_log

#: The Tune trial only waits for its TorchTrainer, whose workers hold the real resources;
#: Tune refuses a trial of no resources at all.
DRIVER_CPU = 0.01
TRAIN_FOLDER = "train"  # Ray Train's checkpoints, inside the trial folder


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One worker: ``config`` holds ``retrain`` (config dump), ``genotype`` (GenotypeRef
    dict), ``seed``, ``verbosity`` (the job's), ``folder`` (the trial folder's URI) and
    ``trial_id``."""
    ctx = ray.train.get_context()
    device = ray.train.torch.get_device()
    overrides: dict[str, Any] = {"seed": int(config["seed"]),
                                 "device": str(device) if device.type == "cuda" else "cpu"}
    cfg = build_config(config["retrain"], overrides)
    ref = GenotypeRef.from_dict(config["genotype"])
    rank = ctx.get_world_rank()
    # The chief's lines, as a plain trial's: the driver prints one per epoch, the chief
    # one within an epoch that runs long (none with -q).
    trainer = DataParallelRetrainer(cfg, ref.load(), rank=rank,
                                    world_size=ctx.get_world_size(),
                                    log=trial_log(f"{ref.label} r{cfg.seed}",
                                                  int(config.get("verbosity", 1)))
                                    if rank == 0 else None)
    trainer.setup()
    restored = ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            trainer.restore(Path(folder) / RETRAIN_CHECKPOINT_FILE)
    folder = as_location(config["folder"])
    files = RunFiles(lambda: folder, str(config["trial_id"]),
                     {**run_labels(ref, cfg, trainer.info.name), "workers": trainer.world_size})
    while not trainer.done:
        # The same epoch, computed together; only the chief writes.
        row = files.epoch(trainer) if trainer.is_chief else trainer.train_epoch()
        row = {**row, "done": trainer.done, "epochs": cfg.epochs}
        if trainer.log is not None:  # the driver prints the epoch's line
            trainer.log.mark()
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if trainer.is_chief:
                trainer.save(Path(tmp) / RETRAIN_CHECKPOINT_FILE)
                checkpoint = Checkpoint.from_directory(tmp)
            ray.train.report(row, checkpoint=checkpoint)


def ddp_trainable(loop: Callable[[dict[str, Any]], None] = train_loop_per_worker) -> Any:
    """The Tune trainable of data-parallel trials (named ``ddp_trial`` for Tune); ``loop``:
    each worker's training loop (tests pass one that fails once)."""

    def ddp_trial(config: dict[str, Any]) -> None:
        """config: as a plain retrain trial's (``prnas.tune.retrain.param_space``), with
        ``workers`` and ``resources`` per worker, ``experiment`` (its storage URI) and
        ``max_failures`` (of the worker group)."""
        from ray.tune.integration.ray_train import TuneReportCallback

        context = tune.get_context()
        folder = as_location(config["experiment"]) / context.get_trial_name()
        ref = GenotypeRef.from_dict(config["genotypes"][config["genotype"]])
        resources = config["resources"]
        trainer = TorchTrainer(
            loop,
            train_loop_config={"retrain": config["retrain"], "genotype": ref.to_dict(),
                               "seed": config["seed"], "verbosity": config.get("verbosity", 1),
                               "folder": folder.uri, "trial_id": context.get_trial_id()},
            scaling_config=ScalingConfig(num_workers=int(config["workers"]),
                                         use_gpu=float(resources["gpu"]) > 0,
                                         resources_per_worker={"CPU": float(resources["cpu"])}),
            run_config=RunConfig(name=TRAIN_FOLDER, storage_path=folder.path,
                                 # Ray Train's own lines (a checkpoint, a report per
                                 # worker and epoch) only with -v, beside Ray's table.
                                 logging_config=LoggingConfig(
                                     "INFO" if int(config.get("verbosity", 1)) >= 2
                                     else "WARNING"),
                                 storage_filesystem=folder.ray_filesystem,
                                 failure_config=FailureConfig(
                                     max_failures=int(config["max_failures"])),
                                 callbacks=[TuneReportCallback()]))
        result = trainer.fit()
        if result.error is not None:
            raise result.error

    return tune.with_resources(ddp_trial, {"cpu": DRIVER_CPU})
