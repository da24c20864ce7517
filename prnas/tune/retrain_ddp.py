"""Data-parallel retraining through Ray Train: one retrain on N workers (GPUs) with DDP.

Each (genotype, seed) is one ``ray.train.torch.TorchTrainer`` run whose
workers drive :class:`prnas.retrain.ddp.DataParallelRetrainer` (the DDP loop
that matches a single process, see that module). Ray Train places the
workers (one GPU each, on one node or across several), sets up the process
group (NCCL on GPUs, gloo on CPUs) and restarts the worker group from the last
checkpoint after a failure (``max_failures``); re-running a killed experiment
under the same storage and name continues each run from its last checkpoint,
as Ray Train does for a run of the same name. A TorchTrainer also runs inside
a Tune trial, so this is what a Tune fan-out of multi-GPU trials would call.

Every epoch the chief worker reports the row and a checkpoint holding the
complete retrain state; after the last epoch it adds ``model.pt`` and the
inference cost. The driver then writes the run's ``model.pt``,
``result.json`` and ``metrics.jsonl`` into ``<storage>/<name>/<genotype>-seed<k>/``
and all rows into ``<storage>/<name>/retrain.parquet`` (the schema of the
Tune fan-out).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import ray.train
import ray.train.torch
from ray.train import Checkpoint, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from prnas._io import atomic_write_text
from prnas.filenames import (
    METRICS_FILE,
    MODEL_FILE,
    RESULT_FILE,
    RETRAIN_CHECKPOINT_FILE,
    RETRAIN_FILE,
)
from prnas.retrain.config import RetrainConfig, build_config, protocol_json
from prnas.retrain.ddp import DataParallelRetrainer
from prnas.retrain.genotypes import GenotypeRef
from prnas.retrain.results import rows_to_frame, write_parquet
from prnas.retrain.trainer import log_line
from prnas.runtime import checkpoint as ckpt_io
from prnas.tune.progress import trial_log

CHECKPOINT_FILE = RETRAIN_CHECKPOINT_FILE


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One worker: ``config`` holds ``retrain`` (config dump), ``genotype`` (GenotypeRef
    dict), ``seed`` and ``verbosity`` (the job's)."""
    ctx = ray.train.get_context()
    device = ray.train.torch.get_device()
    overrides: dict[str, Any] = {"seed": int(config["seed"]),
                                 "device": str(device) if device.type == "cuda" else "cpu"}
    cfg = build_config(config["retrain"], overrides)
    ref = GenotypeRef.from_dict(config["genotype"])
    rank = ctx.get_world_rank()
    # The chief's lines (none with -q): every epoch, and one within an epoch that runs
    # long (Ray Train prints no line of its own per report).
    speak = rank == 0 and int(config.get("verbosity", 1)) >= 1
    trainer = DataParallelRetrainer(cfg, ref.load(), rank=rank,
                                    world_size=ctx.get_world_size(),
                                    log=trial_log(f"{ref.label} r{cfg.seed}", 2) if speak
                                    else None)
    trainer.setup()
    restored = ray.train.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            trainer.restore(Path(folder) / CHECKPOINT_FILE)
    labels = {"genotype": ref.label, "genotype_path": ref.path, "kind": ref.kind,
              "protocol": protocol_json(cfg),
              "seed": cfg.seed, "dataset": trainer.info.name,
              "workers": trainer.world_size}
    while not trainer.done:
        row = {**trainer.train_epoch(), **labels}
        if trainer.log is not None:
            trainer.log.epoch(log_line(row))
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if trainer.is_chief:
                trainer.save(Path(tmp) / CHECKPOINT_FILE)
                if trainer.done:
                    trainer.save_model(Path(tmp) / MODEL_FILE)
                    row.update(trainer.measure_timing().as_dict())
                    atomic_write_text(Path(tmp) / RESULT_FILE, json.dumps(row, indent=1) + "\n")
                checkpoint = Checkpoint.from_directory(tmp)
            ray.train.report(row, checkpoint=checkpoint)


def ddp_trainer(cfg: RetrainConfig, ref: GenotypeRef, seed: int, *, workers: int,
                use_gpu: bool, storage: Path, name: str, max_failures: int = 1,
                cpus_per_worker: float = 1.0, extra: dict[str, Any] | None = None,
                loop: Callable[[dict[str, Any]], None] = train_loop_per_worker
                ) -> TorchTrainer:
    """The TorchTrainer of one (genotype, seed); ``cfg`` must hold absolute data paths.
    ``loop``: the training loop of each worker (tests pass one that fails once)."""
    return TorchTrainer(
        loop,
        train_loop_config={"retrain": cfg.model_dump(mode="json"), "genotype": ref.to_dict(),
                           "seed": seed, **(extra or {})},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker}),
        run_config=RunConfig(name=name, storage_path=str(storage),
                             failure_config=FailureConfig(max_failures=max_failures)),
    )


def run_name(ref: GenotypeRef, seed: int) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in ref.label)[:60]
    return f"{safe}-r{seed}"


def fit_one(cfg: RetrainConfig, ref: GenotypeRef, seed: int, *, workers: int, use_gpu: bool,
            experiment: Path, max_failures: int = 1, cpus_per_worker: float = 1.0,
            extra: dict[str, Any] | None = None,
            loop: Callable[[dict[str, Any]], None] = train_loop_per_worker) -> pd.DataFrame:
    """Train (or continue) one run; its artefacts in ``experiment/<run>/``; its rows."""
    name = run_name(ref, seed)
    trainer = ddp_trainer(cfg, ref, seed, workers=workers, use_gpu=use_gpu,
                          storage=experiment / "ray", name=name, max_failures=max_failures,
                          cpus_per_worker=cpus_per_worker, extra=extra, loop=loop)
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    folder = experiment / name
    folder.mkdir(parents=True, exist_ok=True)
    with result.checkpoint.as_directory() as final:
        state = ckpt_io.load(Path(final) / CHECKPOINT_FILE, kind="retrain")
        summary = json.loads((Path(final) / RESULT_FILE).read_text())
        shutil.copyfile(Path(final) / MODEL_FILE, folder / (MODEL_FILE + ".tmp"))
    (folder / (MODEL_FILE + ".tmp")).replace(folder / MODEL_FILE)
    labels = {k: summary[k] for k in ("genotype", "genotype_path", "kind", "seed", "dataset",
                                      "workers", "protocol")}
    rows = [{**r, **labels, "trial_id": name} for r in state["history"]]
    timing = {k: summary.get(k) for k in ("latency_ms_b1", "throughput_b64", "cost_device",
                                          "cost_threads")}
    rows[-1].update(timing, model_path=str(folder / MODEL_FILE))
    atomic_write_text(folder / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_text(folder / RESULT_FILE, json.dumps(summary, indent=1) + "\n")
    return rows_to_frame(rows)


def run_all(cfg: RetrainConfig, refs: Sequence[GenotypeRef], seeds: Sequence[int], *,
            workers: int, use_gpu: bool, experiment: Path, max_failures: int = 1,
            cpus_per_worker: float = 1.0, verbosity: int = 1) -> pd.DataFrame:
    """Every (genotype, seed) in turn, each on all ``workers``; ``retrain.parquet``."""
    frames = [fit_one(cfg, ref, seed, workers=workers, use_gpu=use_gpu, experiment=experiment,
                      max_failures=max_failures, cpus_per_worker=cpus_per_worker,
                      extra={"verbosity": verbosity})
              for ref in refs for seed in seeds]
    df = pd.concat(frames, ignore_index=True) if frames else rows_to_frame([])
    df = rows_to_frame(df.to_dict("records"))
    write_parquet(df, experiment / RETRAIN_FILE)
    return df
