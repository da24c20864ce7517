"""Retrain step throughput for the DARTS V2 and PR-DARTS DL2 cells at the paper's size.

20 cells, C=36, auxiliary head (weight 0.4), drop-path 0.2, batch 96, 32x32
inputs: one SGD step per measurement, through ``RetrainNetwork.step`` itself, so
what is timed is what a retrain runs. Variants differ only in
``performance`` settings; "nchw" (default layout, fp32) is the baseline.

    python benchmarks/retrain_step.py [--genotypes darts-v2,prdarts-dl2] [--batch 96]
        [--repeat 3] [--extra bf16,compile] [--threads N]
"""

from __future__ import annotations

import argparse
import json

import torch
from common import (
    emit,
    fresh_process_peak,
    machine,
    median_time,
    peak_mib,
    reset_peak,
    sync,
    table,
)

from prnas.data.source import DataInfo
from prnas.presets import load_genotype
from prnas.retrain import Retrainer, build_config

VARIANTS = {
    "nchw": {"channels_last": False},
    "channels_last": {"channels_last": True},
    "channels_last+bf16": {"channels_last": True, "amp": "bf16"},
    "channels_last+compile": {"channels_last": True, "compile": True},
}


def trainer(genotype: str, variant: str, args) -> Retrainer:
    overrides = {"network.channels": args.channels, "network.layers": args.layers,
                 "device": args.device,
                 **{f"performance.{k}": v for k, v in VARIANTS[variant].items()}}
    r = Retrainer(build_config(overrides=overrides), load_genotype(genotype))
    torch.manual_seed(0)
    info = DataInfo(name="synthetic", num_classes=10, in_channels=3, input_size=32,
                    mean=(0.0,) * 3, std=(1.0,) * 3, train_size=0, test_size=0)
    r.setup(datasets=([], [], info))  # the step needs no dataset
    r.model.drop_path_prob = 0.2
    return r


def batch(b: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, 3, 32, 32, generator=g).to(device)
    return x, torch.randint(0, 10, (b,), generator=g).to(device)


def step_peak(name: str, variant: str, args, device: torch.device) -> float:
    """Peak memory of one step after a warm-up one (CPU: run it in a fresh process)."""
    r = trainer(name, variant, args)
    x, y = batch(args.batch, device)
    r.net.step(x, y)
    reset_peak(device)
    r.net.step(x, y)
    sync(device)
    return peak_mib(device)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--genotypes", default="darts-v2,prdarts-dl2")
    p.add_argument("--batch", type=int, default=96)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--channels", type=int, default=36)
    p.add_argument("--layers", type=int, default=20)
    p.add_argument("--extra", default="", help="further variants: bf16, compile")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--peak-only", help=argparse.SUPPRESS)  # GENOTYPE,VARIANT
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.peak_only:
        name, variant = args.peak_only.split(",")
        print(json.dumps({"peak_mib": step_peak(name, variant, args, device)}))
        return
    variants = ["nchw", "channels_last"] + [f"channels_last+{e}"
                                            for e in args.extra.split(",") if e]
    emit({"bench": "machine", "device": str(device), **machine()})
    x, y = batch(args.batch, device)
    rows = []
    for name in args.genotypes.split(","):
        runs = {v: trainer(name, v, args) for v in variants}
        for r in runs.values():
            r.net.step(x, y)  # warm-up
        times: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(args.repeat):  # interleaved against machine noise
            for v, r in runs.items():
                times[v].append(median_time(lambda r=r: r.net.step(x, y), device, 1))
        for v, r in runs.items():
            t = sorted(times[v])[len(times[v]) // 2]
            rows.append({"bench": "retrain_step", "genotype": name, "variant": v,
                         "batch": args.batch, "params": r.params, "ms_per_step": 1000 * t,
                         "images_per_s": args.batch / t})
        del runs
        for r in rows[-len(variants):]:
            if device.type == "cuda":
                r["peak_mib"] = step_peak(name, r["variant"], args, device)
            else:
                r["peak_mib"] = fresh_process_peak(__file__, [
                    "--peak-only", f"{name},{r['variant']}", "--batch", str(args.batch),
                    "--channels", str(args.channels), "--layers", str(args.layers),
                    "--device", "cpu",
                    *(["--threads", str(args.threads)] if args.threads else [])])
        base = next(r["images_per_s"] for r in rows
                    if r["genotype"] == name and r["variant"] == "nchw")
        for r in rows:
            if r["genotype"] == name:
                r["speedup"] = r["images_per_s"] / base
        for r in rows[-len(variants):]:
            emit(r)
    print()
    print(table(rows, [("genotype", "cells", "s"), ("variant", "variant", "s"),
                       ("params", "params", ",d"), ("batch", "batch", "d"),
                       ("ms_per_step", "ms/step", ".0f"), ("images_per_s", "img/s", ".1f"),
                       ("speedup", "x nchw", ".2f"), ("peak_mib", "peak MiB", ".0f")]))


if __name__ == "__main__":
    main()
