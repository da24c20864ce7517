"""Does the search search? A planted-architecture check on data that needs known ops.

The task (written as an ImageFolder tree, then searched through the normal engine
and config): 16x16 grayscale images of Gaussian noise holding bright dot pairs.
The class is the direction of the pairs (horizontal, vertical, two diagonals), always
4 pixels apart. Telling a pair from two unrelated dots needs one linear filter that
sees both dots before a nonlinearity, so a footprint of at least 5x5:

- **normal cell (planted: ``conv_k3_d2`` or ``conv_k5_d1``)**: of the candidates,
  only a dilated 3x3 (its outer taps are 4 apart) and a 5x5 kernel cover the pair.
  Neither is in the start pool: the search reaches both only by morphing
  ``conv_k3_d1`` after its first cycle. ``conv_k3_d1``, its stacked variant
  ``conv_k3_d1_e1`` (a ReLU between its two 3x3 filters), the pools and skip do not.
- **reduction cells (planted: ``max_pool_3x3``)**: what the normal cell hands on is a
  sparse map of pair detections; a max pool keeps each peak while halving the
  resolution, an average pool dilutes it among its neighbours.

The supernet is the proxy network cut down until one normal cell does the
detection: 3 cells (normal, reduce, reduce), 1 node (2 edges per cell type), C=8.
Two cycles: the start pool, then six candidates per edge after one round of
morphisms (Table I's rule), so the planted convs are on every normal edge in
cycle 2. ``recovered`` is the fraction of the final genotype's edges (both edges of
both cell types) whose op is a planted one; ``chance`` is the same fraction when
every decision is taken on random alphas, estimated by running the search's own
policy (``prnas.search.decision.decide_cycle``) on random alphas many times.

The summary line adds ``p_chance``: the probability of recovering at least as many
planted edges if every decision were random.

``--control frozen`` runs the same searches with the alphas frozen at their
initialisation (alpha_lr 1e-12): its ``recovered`` must fall to ``chance``. One JSON
line per seed, then a summary line and a table.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from statistics import fmean

import numpy as np
from common import emit, machine, table
from PIL import Image

from prnas import cli
from prnas.search.config import SearchConfig, build_config
from prnas.search.decision import decide_cycle
from prnas.search.engine import Search
from prnas.space.pools import CELL_TYPES, initial_histories, initial_pools

PLANTED: dict[str, frozenset[str]] = {
    "normal": frozenset({"conv_k3_d2", "conv_k5_d1"}),
    "reduce": frozenset({"max_pool_3x3"}),
}
DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))  # the classes: pair direction (dy, dx)


def make_task(root: Path, *, per_class: int = 300, size: int = 16, lag: int = 4,
              pairs: int = 10, noise: float = 0.3, amplitude: float = 2.0, seed: int = 0
              ) -> Path:
    """Write the dot-pair task as an ImageFolder tree (one folder per direction)."""
    rng = np.random.default_rng(seed)
    for c, (uy, ux) in enumerate(DIRECTIONS):
        dy, dx = uy * lag, ux * lag
        folder = root / f"direction{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.normal(0.0, noise, (size, size))
            for _ in range(pairs):
                y = int(rng.integers(max(0, -dy), size - max(0, dy)))
                x = int(rng.integers(max(0, -dx), size - max(0, dx)))
                img[y, x] += amplitude
                img[y + dy, x + dx] += amplitude
            pixels = np.clip(128 + 40 * img, 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "L").save(folder / f"{i:04d}.png")
    return root


def search_config(train_dir: Path, seed: int, *, steps: int = 30, epochs: int = 6,
                  grace: int = 2, alpha_lr: float = 0.03, threads: int | None = None
                  ) -> SearchConfig:
    """The planted search: the engine's config, shrunk (see the module docstring)."""
    cycle = {"epochs": epochs, "grace_epochs": grace}
    return build_config({
        "name": "planted", "space": "DL", "seed": seed, "device": "cpu",
        "num_threads": threads,
        "data": {"dataset": "imagefolder", "train_dir": str(train_dir), "input_size": 16,
                 "augment": False},
        "network": {"channels": 8, "layers": 3, "nodes": 1},
        "schedule": [{**cycle, "morphs": 3, "candidates": 6},
                     {**cycle, "morphs": 0, "candidates": 1}],
        "batch": {"b_min": 32, "b_mult": 16, "b_max": 32},
        "steps_per_epoch": steps,
        "optim": {"alpha_lr": alpha_lr},
    })


def genotype_ops(genotype) -> dict[str, list[str]]:
    return {"normal": [str(op) for op, _ in genotype.normal],
            "reduce": [str(op) for op, _ in genotype.reduce]}


def recovery(ops: dict[str, list[str]]) -> dict[str, float]:
    """Fraction of genotype edges holding a planted op: per cell type and over all edges."""
    hits = {t: [op in PLANTED[t] for op in ops[t]] for t in CELL_TYPES}
    out = {f"recovered_{t}": fmean(hits[t]) for t in CELL_TYPES}
    out["recovered"] = fmean(hits["normal"] + hits["reduce"])
    return out


def chance(cfg: SearchConfig, draws: int = 400) -> dict[str, float]:
    """``recovery`` when every decision reads random alphas: the search's own policy, run
    ``draws`` times with standard-normal alphas and its own seeded RNG per draw."""
    totals: dict[str, list[float]] = {}
    rng = random.Random("planted-chance")
    for d in range(draws):
        c = cfg.model_copy(update={"seed": d})
        pools = initial_pools(cfg.network.nodes, cfg.initial_ops())
        hist = initial_histories(pools)
        for cycle in range(len(cfg.schedule)):
            alphas = {t: [[rng.gauss(0, 1) for _ in edge] for edge in pools[t]]
                      for t in CELL_TYPES}
            result = decide_cycle(c, cycle, pools, alphas, hist)
            pools, hist = result.pools, result.histories
        # after the final decision every edge holds its one top op
        for k, v in recovery({t: [str(e[0]) for e in pools[t]] for t in CELL_TYPES}).items():
            totals.setdefault(k, []).append(v)
    return {k.replace("recovered", "chance"): fmean(v) for k, v in totals.items()}


def _config(train_dir: Path, seed: int, args: argparse.Namespace) -> SearchConfig:
    alpha_lr = 1e-12 if args.control == "frozen" else args.alpha_lr
    return search_config(train_dir, seed, steps=args.steps, epochs=args.epochs,
                         grace=args.grace, alpha_lr=alpha_lr, threads=args.threads)


def chance_tail(rows: list[dict]) -> float:
    """P(at least the observed number of planted edges | every decision random): edges are
    independent under random alphas, so the count is a sum of Bernoulli draws with each
    cell type's chance level (a Poisson-binomial tail, by convolution)."""
    dist = np.array([1.0])
    hits = 0
    for r in rows:
        for t in CELL_TYPES:
            p = r[f"chance_{t}"]
            for op in r[t]:
                dist = np.convolve(dist, [1 - p, p])
                hits += op in PLANTED[t]
    return float(dist[hits:].sum())


def run_seed(train_dir: Path, seed: int, args: argparse.Namespace,
             chance_level: dict[str, float]) -> dict:
    cfg = _config(train_dir, seed, args)
    t0 = time.perf_counter()
    search = Search(cfg, log=None)
    genotype = search.run()
    last = search.cycle_log[-1]
    ops = genotype_ops(genotype)
    return {"bench": "planted", "seed": seed, "control": args.control, **recovery(ops),
            **chance_level, "valid_acc": last["valid_acc"],
            **{k: last[k] for k in ("alpha_steps", "alpha_spread", "alpha_spread_noise")},
            "normal": ops["normal"], "reduce": ops["reduce"],
            "time_s": time.perf_counter() - t0}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="4 seeds instead of 10 (about 2 min)")
    p.add_argument("--seeds", type=int, default=None, help="number of search seeds (0..N-1)")
    p.add_argument("--control", choices=("none", "frozen"), default="none",
                   help="frozen: alphas frozen at their initialisation (decisions are noise)")
    p.add_argument("--steps", type=int, default=30, help="training steps per epoch")
    p.add_argument("--epochs", type=int, default=6, help="epochs per cycle")
    p.add_argument("--grace", type=int, default=2, help="grace epochs per cycle")
    p.add_argument("--alpha-lr", type=float, default=0.03)
    p.add_argument("--per-class", type=int, default=300, help="images per class")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    p.add_argument("--chance-draws", type=int, default=400)
    p.add_argument("--data", type=Path, default=None,
                   help="keep the generated task here (default: a temporary folder)")
    return p


def main(argv: list[str] | None = None) -> list[dict]:
    args = _parser().parse_args(argv)
    seeds = args.seeds if args.seeds is not None else (4 if args.smoke else 10)
    try:  # bad input: one line and exit 2 before anything is written or trained
        for flag, value in (("--seeds", seeds), ("--per-class", args.per_class),
                            ("--chance-draws", args.chance_draws)):
            if value < 1:
                raise ValueError(f"{flag} must be >= 1, got {value}")
        if args.data is not None and args.data.exists() and not args.data.is_dir():
            raise ValueError(f"--data {args.data} is a file, not a folder")
        _config(Path("unused"), 0, args)  # the search config, validated (steps, epochs, ...)
    except ValueError as err:  # ConfigError is one
        raise SystemExit(cli.error(str(err))) from None
    emit({"bench": "machine", **machine()})
    with tempfile.TemporaryDirectory(prefix="prnas-planted-") as tmp:
        root = args.data if args.data is not None else Path(tmp) / "task"
        if not root.exists():
            make_task(root, per_class=args.per_class)
        # the chance level depends on the schedule and the space, not on the seed
        chance_level = chance(_config(root, 0, args), args.chance_draws)
        rows = []
        for seed in range(seeds):
            rows.append(run_seed(root, seed, args, chance_level))
            emit(rows[-1])
    summary = {"bench": "planted_summary", "control": args.control, "seeds": seeds,
               **{k: fmean(r[k] for r in rows) for k in
                  ("recovered", "chance", "recovered_normal", "chance_normal",
                   "recovered_reduce", "chance_reduce", "valid_acc", "alpha_spread",
                   "alpha_spread_noise")},
               "seeds_above_chance": sum(r["recovered"] > r["chance"] for r in rows),
               "p_chance": chance_tail(rows)}
    emit(summary)
    print(table(rows, [("seed", "seed", "d"), ("recovered", "recovered", ".2f"),
                       ("chance", "chance", ".2f"), ("recovered_normal", "normal", ".2f"),
                       ("recovered_reduce", "reduce", ".2f"), ("valid_acc", "valid", ".3f"),
                       ("alpha_spread", "spread", ".3f"),
                       ("alpha_spread_noise", "noise", ".3f"), ("time_s", "s", ".0f")]),
          file=sys.stderr)
    return rows + [summary]


if __name__ == "__main__":
    main()
