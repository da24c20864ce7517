"""The population ablation: independent seeds against share, exploit, halve and all three,
at equal search compute, every found cell retrained with the same protocol.

Each arm is one ``tune_jobs/run_search.py`` experiment on the demo data (fresh driver
processes, seeds 0..n-1). Compute is the training steps the trials actually took
(``epoch_metrics[].steps`` of every cycle in ``results.parquet``); arms with halve get
as many seeds as fit the independent arm's budget, since stopped seeds free theirs.
Every trial's ``genotype.json`` is then retrained once (``run_retrain.py
--from-search``, the demo retrain protocol), and each arm's final test errors are
compared with the independent arm's by the reviewer statistics of ``analysis.baseline``
(percentile bootstrap interval of the difference of means, two-sided Mann-Whitney),
with the cells per arm a two-sample comparison would need to detect the observed
difference (80 % power, alpha 0.05, normal approximation).

Prints JSON lines (one per arm, then one per comparison) and a table. ``--smoke``:
two arms, two seeds, a shortened schedule and one retrain epoch (keeps the script
working; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (puts the repository on sys.path)
import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

from analysis import loaders
from analysis.baseline import cluster_bootstrap
from analysis.tables import retrain_trials
from prnas.search.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SEARCH, RETRAIN = ROOT / "tune_jobs/run_search.py", ROOT / "tune_jobs/run_retrain.py"
DEMO = ROOT / "tune_jobs/configs/demo.yaml"
RETRAIN_DEMO = ROOT / "tune_jobs/configs/retrain_demo.yaml"
ARMS = {"independent": None, "share": "share", "exploit": "exploit", "halve": "halve",
        "all": "share,exploit,halve"}


def seeds_for(arm: str, n: int, cfg) -> int:
    """Seeds an arm gets for the independent arm's budget of ``n`` seeds."""
    if "halve" not in (ARMS[arm] or ""):
        return n
    steps = [c.epochs * (cfg.steps_per_epoch or 1) for c in cfg.schedule]
    pop = load_config(DEMO, {"population.halve": {}}).population
    after = pop.halve_after(len(steps))[0]

    def cost(k: int) -> int:
        stopped = min(int(k * pop.halve.fraction), k - 1)
        return k * sum(steps[:after]) + (k - stopped) * sum(steps[after:])

    budget = n * sum(steps)
    return max(k for k in range(n, 4 * n) if cost(k) <= budget)


def run(cmd: list[str], log: Path) -> None:
    with log.open("a") as f:
        done = subprocess.run([sys.executable, *map(str, cmd)], cwd=ROOT, stdout=f, stderr=f)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({done.returncode}); see {log}")


def arm(name: str, seeds: int, root: Path, sets: list[str], retrain_sets: list[str]) -> dict:
    log = root / f"{name}.log"
    t0 = time.perf_counter()
    cmd = [SEARCH, "--config", DEMO, "--num-samples", seeds, "--storage", root,
           "--name", name, "--cpus-per-trial", 1, "-q", *sets]
    if ARMS[name]:
        cmd += ["--population", ARMS[name]]
    run(cmd, log)
    search_s = time.perf_counter() - t0
    results = loaders.load_results(root / name)
    steps = int(sum(e["steps"] for m in results["epoch_metrics"] for e in m))
    run([RETRAIN, "--config", RETRAIN_DEMO, "--from-search", root / name, "--num-samples", 1,
         "--storage", root, "--name", f"{name}-retrain", "--cpus-per-trial", 1, "-q",
         *retrain_sets], log)
    errors = retrain_trials(loaders.load_retrain(root / f"{name}-retrain"))["final_test_error"]
    events = results["population_event"].dropna()
    return {"arm": name, "seeds": seeds, "cells": len(errors), "search_steps": steps,
            "search_s": round(search_s, 1),
            "exploits": int(events.str.contains("exploit").sum()),
            "halved": int((events == "halved").sum()),
            "error_mean": float(errors.mean()), "error_std": float(errors.std(ddof=1)),
            "errors": [round(e, 3) for e in errors]}


def compare(arm: dict, ref: dict) -> dict:
    a, b = np.array(arm["errors"]), np.array(ref["errors"])
    low, high = cluster_bootstrap([np.array([e]) for e in a], [np.array([e]) for e in b])
    p = float(mannwhitneyu(a, b, alternative="two-sided").pvalue)
    diff = float(a.mean() - b.mean())
    sd = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    needed = math.ceil(2 * (1.96 + 0.8416) ** 2 * sd ** 2 / diff ** 2) if diff else None
    return {"arm": arm["arm"], "vs": ref["arm"], "diff": round(diff, 3),
            "ci95": [round(low, 3), round(high, 3)], "mann_whitney_p": round(p, 4),
            "compute_ratio": round(arm["search_steps"] / ref["search_steps"], 3),
            "cells_needed_per_arm": needed}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=4, help="seeds of the independent arm")
    p.add_argument("--arms", default=",".join(ARMS), help="comma-separated, from "
                   + ", ".join(ARMS))
    p.add_argument("--out", type=Path, help="keep the experiments here (default: a temp dir)")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",")]
    sets, retrain_sets = [], []
    if args.smoke:
        arms, args.seeds = ["independent", "share"], 2
        sets = ["--set", "schedule=[{epochs: 1, grace_epochs: 0, morphs: 1, candidates: 3},"
                "{epochs: 1, grace_epochs: 0, morphs: 0, candidates: 1}]",
                "--set", "steps_per_epoch=2"]
        retrain_sets = ["--epochs", "1"]
    cfg = load_config(DEMO)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        rows = []
        for name in arms:
            row = arm(name, seeds_for(name, args.seeds, cfg) if not args.smoke else args.seeds,
                      root, sets, retrain_sets)
            print(json.dumps(row), flush=True)
            rows.append(row)
        ref = rows[0]
        comparisons = [compare(r, ref) for r in rows[1:]]
        for c in comparisons:
            print(json.dumps(c), flush=True)
    table = pd.DataFrame(rows).drop(columns="errors").merge(
        pd.DataFrame(comparisons), on="arm", how="left")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
