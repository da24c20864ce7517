"""What a cycle boundary costs: prune and replace, weight transfer, the next network, an
atomic checkpoint; in seconds, and as a share of a cycle at demo and at paper scale.

Demo scale: the demo search (tune_jobs/configs/demo.yaml) in-process, each
cycle's training and evaluation wall time against its boundary.

Paper scale: the paper's search network (8 cells, C=16, 32x32 CIFAR-format
images, Table I pools: 4 -> 6 -> 6 candidates per edge), driven through the same
engine with one training step per epoch so as to reach real boundaries quickly.
The paper-scale cycle time is estimated from the engine's own measured
throughput on the 6-candidate network: grace epochs x 25,000 images at the
grace-epoch rate plus the other epochs at the normal-epoch rate (Table I's cycle
2: 15 epochs, 5 grace), leaving out the per-epoch validation, which would only
make the share smaller.

    python benchmarks/cycle_overhead.py [--skip-demo] [--skip-paper] [--steps 4]
        [--channels 16 --layers 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import ROOT, emit, machine, table
from data_folders import write_cifar_folder  # tests/data_folders.py, on the path through common

from prnas.runtime import checkpoint
from prnas.search.config import build_config, load_config
from prnas.search.engine import Search

TRAIN_IMAGES = 25_000  # the CIFAR-10 half that trains the weights


def boundary(s: Search, path: Path) -> dict:
    """One cycle boundary, timed part by part, exactly as the in-process CLI runs it."""
    metrics = s.cycle_metrics()
    t0 = time.perf_counter()
    result = s.decide()
    t1 = time.perf_counter()
    s.apply(result, metrics)  # new network, survivors' and morphed weights, fresh optimisers
    t2 = time.perf_counter()
    checkpoint.save_atomic(s.state_dict(), path)
    t3 = time.perf_counter()
    return {"decide_s": t1 - t0, "apply_s": t2 - t1, "checkpoint_s": t3 - t2,
            "overhead_s": t3 - t0, "checkpoint_mib": path.stat().st_size / 2**20}


def demo_scale(tmp: Path) -> list[dict]:
    s = Search(load_config(ROOT / "tune_jobs/configs/demo.yaml", {"device": "cpu"}), log=None)
    rows = []
    while not s.finished:
        t0 = time.perf_counter()
        s.run_cycle()
        train = time.perf_counter() - t0
        row = {"bench": "cycle_overhead", "scale": "demo", "cycle": s.cycle + 1,
               "cycle_train_s": train, **boundary(s, tmp / "demo.pt")}
        row["overhead_pct"] = 100 * row["overhead_s"] / (train + row["overhead_s"])
        emit(row)
        rows.append(row)
    return rows


def paper_scale(tmp: Path, steps: int, channels: int = 16, layers: int = 8) -> list[dict]:
    data = write_cifar_folder(tmp / "cifar", n_train=512, n_test=16)
    table_i = [{"epochs": 1, "grace_epochs": 0, "morphs": 3, "candidates": 6},
               {"epochs": 4, "grace_epochs": 2, "morphs": 3, "candidates": 6},
               {"epochs": 1, "grace_epochs": 0, "morphs": 0, "candidates": 4}]
    cfg = build_config({"name": "paper-scale", "device": "cpu", "schedule": table_i,
                        "network": {"channels": channels, "layers": layers},
                        "data": {"data_dir": str(data)}, "steps_per_epoch": 1,
                        "eval_batch_size": 64})
    s = Search(cfg, log=None)
    rows = []
    rates: dict[str, float] = {}
    measured: dict[str, int] = {}
    while not s.finished:
        if s.cycle == 1:
            # The 6-candidate network: per phase one warm-up epoch of one step, then
            # `steps` measured steps (the engine's own images/s). Search.cfg is the one
            # config the loop reads, so the measured epoch really runs `steps` steps.
            for phase in ("grace", "normal"):
                s.train_epoch()
                s.cfg = s.cfg.model_copy(update={"steps_per_epoch": steps})
                m = s.train_epoch()
                rates[phase], measured[phase] = m["images_per_s"], m["steps"]
                s.cfg = s.cfg.model_copy(update={"steps_per_epoch": 1})
        else:
            s.run_cycle()
        row = {"bench": "cycle_overhead", "scale": "paper", "cycle": s.cycle + 1,
               "candidates": len(s.pools["normal"][0]), **boundary(s, tmp / "paper.pt")}
        rows.append(row)
    # Table I cycle 2 (15 epochs, 5 of them grace) at the measured rates.
    est = 5 * TRAIN_IMAGES / rates["grace"] + 10 * TRAIN_IMAGES / rates["normal"]
    for row in rows:
        row.update(images_per_s_grace=rates["grace"], images_per_s_normal=rates["normal"],
                   steps_grace=measured["grace"], steps_normal=measured["normal"],
                   cycle_train_s=est, overhead_pct=100 * row["overhead_s"] / est)
        emit(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skip-demo", action="store_true")
    p.add_argument("--skip-paper", action="store_true")
    p.add_argument("--steps", type=int, default=4,
                   help="steps per measured epoch of the paper-scale network")
    p.add_argument("--channels", type=int, default=16,
                   help="C of the paper-scale network (16: the paper's; smaller for a quick run)")
    p.add_argument("--layers", type=int, default=8, help="its cells (8: the paper's)")
    args = p.parse_args(argv)
    emit({"bench": "machine", **machine()})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_demo:
            rows += demo_scale(Path(tmp))
        if not args.skip_paper:
            rows += paper_scale(Path(tmp), args.steps, args.channels, args.layers)
    print()
    print(table(rows, [("scale", "scale", "s"), ("cycle", "after cycle", "d"),
                       ("cycle_train_s", "cycle s", ".1f"), ("decide_s", "decide s", ".3f"),
                       ("apply_s", "apply s", ".3f"), ("checkpoint_s", "ckpt s", ".3f"),
                       ("overhead_s", "overhead s", ".3f"), ("overhead_pct", "overhead %", ".3f"),
                       ("checkpoint_mib", "ckpt MiB", ".1f")]))
    paper = [r for r in rows if r["scale"] == "paper"]
    if paper:
        print(f"\npaper-scale cycle estimated at {paper[0]['cycle_train_s']:.0f} s from "
              f"{paper[0]['images_per_s_grace']:.1f} img/s (grace) and "
              f"{paper[0]['images_per_s_normal']:.1f} img/s (normal) on this machine")


if __name__ == "__main__":
    main()
