"""Data-parallel retraining on local processes without Ray (``torch.multiprocessing``), for
the tests and ``benchmarks/retrain_ddp.py``: the same ``DataParallelRetrainer`` that Ray
Train drives in ``prnas.tune.retrain_ddp``, writing an in-process run's folder.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from prnas.filenames import CHECKPOINT_FILE
from prnas.retrain.config import RetrainConfig
from prnas.retrain.ddp import DataParallelRetrainer
from prnas.space.genotype import Genotype


def train_local(cfg: RetrainConfig, genotype: Genotype, world_size: int,
                out: str | os.PathLike, *, stop_after: int | None = None) -> None:
    """Train on ``world_size`` local processes (gloo on CPU, NCCL on CUDA: one GPU each),
    resuming from ``out/checkpoint.pt`` if present. Rank 0 writes the files of an
    in-process run (``prnas.retrain.run_files.folder_run``) and the checkpoint after
    every epoch, which also keeps each epoch's global step losses (``step_losses``).

    ``stop_after`` ends the processes after that many epochs in total (as a crash would).
    """
    import torch.multiprocessing as mp

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        init = f"file://{Path(tmp) / 'rendezvous'}"
        # A fork server imports torch and this module once and forks the workers from a
        # process that never ran autograd or CUDA (forking this one is not safe: its
        # autograd and CUDA state do not survive a fork), saving a torch import per worker.
        import multiprocessing

        multiprocessing.set_forkserver_preload([__name__])
        mp.start_processes(_local_worker, nprocs=world_size, join=True,
                           start_method="forkserver",
                           args=(world_size, init, cfg.model_dump(mode="json"),
                                 genotype.to_json(), str(out), stop_after))


def _local_worker(rank: int, world_size: int, init: str, cfg_raw: dict[str, Any],
                  genotype_json: str, out: str, stop_after: int | None) -> None:
    from prnas.retrain.config import build_config
    from prnas.retrain.run_files import folder_run

    cfg = build_config(cfg_raw)
    cuda = cfg.device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(rank)
        cfg = cfg.model_copy(update={"device": f"cuda:{rank}"})
    else:
        torch.set_num_threads(1)  # the workers share the machine's cores
    dist.init_process_group("nccl" if cuda else "gloo", init_method=init, rank=rank,
                            world_size=world_size)
    try:
        genotype = Genotype.from_dict(json.loads(genotype_json))
        trainer = DataParallelRetrainer(cfg, genotype, rank=rank, world_size=world_size)
        trainer.setup()
        folder = Path(out)
        if (folder / CHECKPOINT_FILE).is_file():
            trainer.restore(folder / CHECKPOINT_FILE)
        files = folder_run(folder, cfg, genotype, trainer.info.name) if trainer.is_chief else None
        while not trainer.done and (stop_after is None or trainer.epoch < stop_after):
            if files is not None:
                files.epoch(trainer)
                trainer.save(folder / CHECKPOINT_FILE)
            else:
                trainer.train_epoch()
            dist.barrier()
    finally:
        dist.destroy_process_group()
