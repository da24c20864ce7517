"""ImageNet retrain throughput: the data pipeline alone, and training on 1 vs N workers.

1. **Data pipeline**: images/s of the ImageNet training transform
   (decode JPEG, RandomResizedCrop, flip, colour jitter, normalise) through a
   DataLoader with pinned memory, per ``--loader-workers`` value, no model.
   This is the ceiling the GPUs can be fed at; compare it with (2).
2. **Training**: images/s of whole epochs of the data-parallel retrain
   (``DataParallelRetrainer`` on local processes, ``tests/ddp_local.py``) on 1 worker
   and on ``--workers`` workers,
   same global batch: one GPU per worker (NCCL) when CUDA is there, else CPU
   processes (gloo) sharing the cores, which shows the overhead rather than a
   speed-up.

Without ``--data`` a synthetic ImageNet-like tree of JPEGs is written to a
temporary folder (``--images`` per class, 2 classes, ``--jpeg-size`` px).

    python benchmarks/retrain_ddp.py [--data DIR] [--workers 2] [--loader-workers 0,4,8]
        [--input-size 224] [--batch 64] [--channels 48] [--layers 14]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import emit, machine, table
from ddp_local import train_local  # tests/ddp_local.py, on the path through common
from PIL import Image
from torch.utils.data import DataLoader

from prnas.data.config import DataConfig
from prnas.data.datasets import retrain_datasets
from prnas.presets import load_genotype
from prnas.retrain import build_config
from prnas.runtime import checkpoint


def write_tree(root: Path, per_class: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    for part, n in (("train", per_class), ("val", max(1, per_class // 4))):
        for k in range(2):
            folder = root / part / f"n{k:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (size, size * 4 // 3, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:05d}.JPEG", quality=90)
    return root


def pipeline_rate(data: Path, input_size: int, workers: int, batch: int) -> float:
    cfg = DataConfig(dataset="imagenet", data_dir=str(data), input_size=input_size)
    train, _, _ = retrain_datasets(cfg, cutout=0)
    loader = DataLoader(train, batch_size=batch, shuffle=True, num_workers=workers,
                        pin_memory=torch.cuda.is_available(), drop_last=False)
    start, seen = time.perf_counter(), 0
    for x, _ in loader:
        seen += len(x)
    return seen / (time.perf_counter() - start)


def training_rate(data: Path, world: int, args: argparse.Namespace, out: Path) -> float:
    cfg = build_config(overrides={
        "network.kind": "imagenet", "network.channels": args.channels,
        "network.layers": args.layers,
        "epochs": 1, "data.dataset": "imagenet", "data.data_dir": str(data),
        "data.input_size": args.input_size, "data.num_workers": 0,
        "batch.b_min": args.batch, "batch.b_max": args.batch,
        "eval_batch_size": args.batch, "device": "auto" if torch.cuda.is_available() else "cpu"})
    train_local(cfg, load_genotype(args.genotype), world, out)
    row = json.loads((out / "epochs.jsonl").read_text().splitlines()[-1])
    steps = len(checkpoint.load(out / "checkpoint.pt", kind="retrain")["step_losses"][-1])
    return steps * args.batch / row["epoch_time_s"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="ImageNet-style tree (train/, val/); default: synthetic")
    p.add_argument("--images", type=int, default=64, help="synthetic images per class")
    p.add_argument("--jpeg-size", type=int, default=375, help="synthetic JPEG height (px)")
    p.add_argument("--loader-workers", default="0,2", help="DataLoader workers to try")
    p.add_argument("--workers", type=int, default=2, help="data-parallel workers")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=32, help="global batch")
    p.add_argument("--genotype", default="darts-v2")
    p.add_argument("--channels", type=int, default=48)
    p.add_argument("--layers", type=int, default=14)
    args = p.parse_args(argv)
    emit({"bench": "machine", **machine()})
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else write_tree(Path(tmp) / "tree", args.images,
                                                            args.jpeg_size)
        rows = []
        for w in (int(v) for v in args.loader_workers.split(",")):
            rate = pipeline_rate(data, args.input_size, w, args.batch)
            rows.append({"bench": "data_pipeline", "loader_workers": w, "images_per_s": rate})
            emit(rows[-1])
        print(table(rows, [("loader_workers", "loader workers", "d"),
                           ("images_per_s", "pipeline images/s", ".0f")]))
        train_rows = []
        for world in sorted({1, args.workers}):
            rate = training_rate(data, world, args, Path(tmp) / f"run{world}")
            train_rows.append({"bench": "ddp_training", "workers": world,
                               "images_per_s": rate,
                               "backend": "nccl" if torch.cuda.is_available() else "gloo"})
            emit(train_rows[-1])
        base = train_rows[0]["images_per_s"]
        for r in train_rows:
            r["speedup"] = r["images_per_s"] / base
        print(table(train_rows, [("workers", "workers", "d"), ("backend", "backend", "s"),
                                 ("images_per_s", "train images/s", ".1f"),
                                 ("speedup", "speed-up", ".2f")]))


if __name__ == "__main__":
    main()
