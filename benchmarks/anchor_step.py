"""prnas' search step against the authors' supernet step, side by side in one process.

The anchor for every speed claim: the authors' public PR-DARTS code
(github.com/cogsys-tuebingen/prdarts), fetched by you, nothing of it in this repository.
Point ``--reference-code`` at the folder holding its ``model_search.py`` and
``operations.py`` (``genotypes.py`` and ``utils.py`` may lie beside them; they are not
imported). Both networks are built on the same pools (the same ops on every edge),
with the same channels, cells, batch and threads, and must have the same number of
weights; both run the first-order DARTS step of the authors' ``train_search.py``: an
alpha step on one batch (Adam, alpha gradients clipped to norm 5), then a weight step
on another (SGD, clip 5). The variants are timed interleaved, so machine noise hits
them alike, and the ratio to the authors' images/s is printed per pool state.

    python benchmarks/anchor_step.py --reference-code ~/src/prdarts \\
        [--states cycle1,cycles2-5] [--batch 32] [--repeat 5] [--threads N]

Without ``--reference-code`` it says so and exits 0: nothing to compare against.
The authors' code calls ``.cuda()`` when it makes its alphas; on a CPU that call is
made a no-op while their network is built.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from pathlib import Path

import torch
from common import POOL_STATES, emit, machine, median_time, pools_for, table
from torch import nn

from prnas.nn.search_net import SearchNetwork
from prnas.runtime.performance import PerformanceConfig, resolve
from prnas.search.steps import SearchSteps
from prnas.space import Op
from prnas.space.pools import CELL_TYPES

OURS = {"fast": {}, "fused": {"fuse": True}}


def authors_op(op: Op) -> tuple[str, dict]:
    """The authors' (name, kwargs) of an op (their ``genotypes.py`` notation)."""
    if op.kind == "skip":
        return "skip", {}
    if op.is_pool:
        return "pool", {"k": 3, "type_": "max" if op.kind == "max_pool_3x3" else "avg"}
    return "conv", {"c_mul": list(op.expansions), "k": op.kernel, "dil": op.dilation}


class Switches:
    """The part of the authors' ``SwitchManager`` their network reads: one row of flags
    per edge over ``current_ops``, and where each op was morphed from (nothing here)."""

    def __init__(self, edges: tuple[tuple[Op, ...], ...]) -> None:
        ops = sorted({op for edge in edges for op in edge}, key=str)
        self.current_ops = [authors_op(op) for op in ops]
        self.rows = [[op in edge for op in ops] for edge in edges]
        self.morphed_from = [{} for _ in edges]

    def __getitem__(self, i: int) -> list[bool]:
        return self.rows[i]

    def __len__(self) -> int:
        return len(self.rows)


@contextlib.contextmanager
def _cuda_as_noop(device: torch.device):
    if device.type == "cuda":
        yield
        return
    cuda = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.Tensor.cuda = cuda


def load_authors(folder: Path):
    if not (folder / "model_search.py").is_file() or not (folder / "operations.py").is_file():
        raise SystemExit(f"{folder}: no model_search.py and operations.py (the authors' code, "
                         "github.com/cogsys-tuebingen/prdarts)")
    sys.path.insert(0, str(folder))
    try:
        for name in ("operations", "model_search"):
            sys.modules.pop(name, None)
        return importlib.import_module("model_search")
    finally:
        sys.path.remove(str(folder))


def _params(module: nn.Module, skip: tuple[str, ...] = ()) -> int:
    return sum(p.numel() for n, p in module.named_parameters()
               if not any(n.endswith(s) for s in skip))


def authors_step(model_search, pools, args, device):
    torch.manual_seed(0)
    criterion = nn.CrossEntropyLoss()
    with _cuda_as_noop(device):
        net = model_search.Network(args.channels, 10, args.layers, criterion,
                                   switches_normal=Switches(pools["normal"]),
                                   switches_reduce=Switches(pools["reduce"]), steps=4, p=0.0)
    net = net.to(device)
    for a in net.arch_parameters:
        a.data = a.data.to(device)
    opt = torch.optim.SGD(net.net_parameters, 0.025, momentum=0.9, weight_decay=3e-4)
    opt_a = torch.optim.Adam(net.arch_parameters, lr=6e-4, betas=(0.5, 0.999),
                             weight_decay=1e-3)
    net.train()

    def step(x, y, xa, ya):
        opt_a.zero_grad()
        loss_a = criterion(net(xa), ya)
        loss_a.backward()
        nn.utils.clip_grad_norm_(net.arch_parameters, 5.0)
        opt_a.step()
        opt.zero_grad()
        loss = criterion(net(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(net.net_parameters, 5.0)
        opt.step()

    return step, _params(net, ("alphas_normal", "alphas_reduce"))


def our_step(variant: str, pools, args, device):
    torch.manual_seed(0)
    perf = resolve(PerformanceConfig(**OURS[variant]), device)
    net = SearchNetwork(pools, channels=args.channels, layers=args.layers, nodes=4,
                        num_classes=10).to(device, memory_format=perf.memory_format)
    alphas = {t: nn.ParameterList(nn.Parameter(1e-3 * torch.randn(len(e), device=device))
                                  for e in pools[t]) for t in CELL_TYPES}
    foreach = True if perf.fuse else None  # as prnas.search.supernet
    w_opt = torch.optim.SGD(net.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4,
                            foreach=foreach)
    a_opt = torch.optim.Adam([a for t in CELL_TYPES for a in alphas[t]], lr=6e-4,
                             betas=(0.5, 0.999), weight_decay=1e-3, foreach=foreach)
    steps = SearchSteps(net, alphas, w_opt, a_opt, grad_clip=5.0, perf=perf, device=device,
                        alpha_grad_clip=5.0)
    net.train()

    def step(x, y, xa, ya):
        steps.alpha_step(xa, ya)
        steps.weight_step(x, y)

    return step, _params(net)


def compare(model_search, state: str, args, device) -> list[dict]:
    pools = pools_for(state)
    g = torch.Generator().manual_seed(1)
    x, xa = (torch.randn(args.batch, 3, args.size, args.size, generator=g).to(device)
             for _ in range(2))
    y, ya = (torch.randint(0, 10, (args.batch,), generator=g).to(device) for _ in range(2))
    runs = {"authors": authors_step(model_search, pools, args, device)}
    runs.update({v: our_step(v, pools, args, device) for v in OURS})
    counts = {v: n for v, (_, n) in runs.items()}
    if len(set(counts.values())) != 1:
        raise SystemExit(f"{state}: the networks differ in size, {counts} weights: not the "
                         "same supernet")
    for fn, _ in runs.values():  # warm-up
        fn(x, y, xa, ya)
    times: dict[str, list[float]] = {v: [] for v in runs}
    for _ in range(args.repeat):
        for v, (fn, _) in runs.items():
            times[v].append(median_time(lambda fn=fn: fn(x, y, xa, ya), device, 1))
    rows = []
    for v, ts in times.items():
        t = sorted(ts)[len(ts) // 2]
        rows.append({"bench": "anchor_step", "state": state, "batch": args.batch,
                     "variant": v, "params": counts[v], "ms_per_step": 1000 * t,
                     "images_per_s": args.batch / t})
    base = rows[0]["images_per_s"]
    for r in rows:
        r["x_authors"] = r["images_per_s"] / base
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference-code", type=Path,
                   help="folder with the authors' model_search.py and operations.py")
    p.add_argument("--states", default="cycle1,cycles2-5")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--size", type=int, default=32, help="image side")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.reference_code is None:
        print("anchor_step: skipped, no --reference-code folder (the authors' code, fetched "
              "from github.com/cogsys-tuebingen/prdarts, is what it compares against)")
        return 0
    states = [s for s in args.states.split(",") if s]
    unknown = set(states) - set(POOL_STATES)
    if unknown:
        raise SystemExit(f"unknown --states {sorted(unknown)}; allowed: "
                         f"{', '.join(POOL_STATES)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model_search = load_authors(args.reference_code.expanduser())
    emit({"bench": "machine", "device": str(device), **machine()})
    rows = []
    for state in states:
        for r in compare(model_search, state, args, device):
            emit(r)
            rows.append(r)
    print()
    print(table(rows, [("state", "pools", "s"), ("variant", "variant", "s"),
                       ("params", "weights", "d"), ("ms_per_step", "ms/step", ".0f"),
                       ("images_per_s", "img/s", ".1f"), ("x_authors", "x authors", ".2f")]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
