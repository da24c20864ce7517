"""Search step throughput and peak memory: the fast step against the straightforward one.

For each pool state (cycle 1, cycles 2-5, cycle 8; see common.POOL_STATES) and
batch size, both variants of ``prnas.search.steps.SearchSteps`` train the
paper's search network (8 cells, C=16, 32x32) from the same initial weights,
timed interleaved in the same process:

- normal epoch step: one alpha step (alpha-half batch) + one weight step;
- grace epoch step: the weight step alone (alphas frozen).

The baseline ("reference") is the straightforward implementation: NCHW, every
candidate computed independently, alphas in the autograd graph in every step
(grace epochs included) and the alpha step as a full backward through all
weights. images/s counts weight-training images (the batch) per step.

Then the memory model: peak memory of the fast normal step against batch size
per pool state, and the least-squares line the adaptive batch size relies on.

    python benchmarks/search_step.py [--batch 32,64] [--states cycle1,cycles2-5,cycle8]
        [--repeat 3] [--memory-batches 24,48,72,96] [--extra bf16,compile] [--threads N]

Prints JSON lines, then the tables.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys

import torch
from common import (
    POOL_STATES,
    emit,
    fresh_process_peak,
    linear_fit,
    machine,
    median_time,
    peak_mib,
    pools_for,
    reset_peak,
    sync,
    table,
)
from torch import nn

from prnas.nn.search_net import SearchNetwork
from prnas.runtime.performance import PerformanceConfig, compiled, resolve
from prnas.search.steps import SearchSteps

VARIANTS = {
    "reference": {"fast_path": False, "channels_last": False},
    "fast": {},
    "fused": {"fuse": True},
    "fast+bf16": {"amp": "bf16"},
    "fast+compile": {"compile": True},
    "fused+compile": {"fuse": True, "compile": True},
}


def build(state: str, args, device: torch.device, seed: int = 0):
    torch.manual_seed(seed)
    pools = pools_for(state)
    net = SearchNetwork(pools, channels=args.channels, layers=args.layers, nodes=4,
                        num_classes=10)
    alphas = {t: nn.ParameterList(nn.Parameter(1e-3 * torch.randn(len(e))) for e in edges)
              for t, edges in pools.items()}
    return net, alphas


def steps_for(variant: str, net, alphas, device: torch.device) -> SearchSteps:
    net, alphas = copy.deepcopy(net), copy.deepcopy(alphas)
    perf = resolve(PerformanceConfig(**VARIANTS[variant]), device)
    fmt = torch.channels_last if perf.channels_last else torch.contiguous_format
    net = net.to(device, memory_format=fmt)
    alphas = {t: a.to(device) for t, a in alphas.items()}
    foreach = True if perf.fuse else None  # as prnas.search.supernet
    w_opt = torch.optim.SGD(net.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4,
                            foreach=foreach)
    a_opt = torch.optim.Adam([a for t in alphas for a in alphas[t]], lr=6e-4,
                             betas=(0.5, 0.999), weight_decay=1e-3, foreach=foreach)
    return SearchSteps(net, alphas, w_opt, a_opt, grad_clip=5.0, perf=perf, device=device,
                       forward=compiled(net, perf), alpha_grad_clip=5.0)


def batch(b: int, device: torch.device, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (b,), generator=g)
    return x.to(device), y.to(device)


def phases(steps: SearchSteps, b: int, device: torch.device):
    (x, y), (xa, ya) = batch(b, device, 1), batch(b, device, 2)

    def normal():
        steps.alpha_step(xa, ya)
        steps.weight_step(x, y)

    def grace():
        steps.weight_step(x, y)

    return {"normal": normal, "grace": grace}


def op_calls(fn) -> tuple[int, int]:
    """(every aten operator call, the top-level ones) of one call of ``fn``, from the torch
    profiler: the count of kernels a step launches, which bounds a small network on a GPU."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    ops = [e for e in prof.events() if e.name.startswith("aten::")]
    return len(ops), sum(1 for e in ops if e.cpu_parent is None
                         or not e.cpu_parent.name.startswith("aten::"))


def peak_of(state: str, variant: str, phase: str, b: int, args, device) -> float:
    """Peak memory of one step after a warm-up one: on CUDA the allocator's peak in this
    process, on a CPU the RSS peak of a fresh process (see common.fresh_process_peak)."""
    if device.type == "cuda":
        net, alphas = build(state, args, device)
        run = phases(steps_for(variant, net, alphas, device), b, device)[phase]
        run()
        reset_peak(device)
        run()
        sync(device)
        return peak_mib(device)
    return fresh_process_peak(__file__, [
        "--peak-only", f"{state},{variant},{phase},{b}", "--channels", str(args.channels),
        "--layers", str(args.layers), "--device", "cpu",
        *(["--threads", str(args.threads)] if args.threads else [])])


def measure_throughput(state: str, b: int, variants: list[str], args, device) -> list[dict]:
    net, alphas = build(state, args, device)
    runs = {v: phases(steps_for(v, net, alphas, device), b, device) for v in variants}
    warmup = {}
    for v, run in runs.items():  # warm-up: allocators, oneDNN/cuDNN kernels, compilation
        warmup[v] = median_time(run["normal"], device, 1)
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeat):  # interleaved, so machine noise hits all variants alike
        for v, run in runs.items():
            for phase, fn in run.items():
                times.setdefault((v, phase), []).append(median_time(fn, device, 1))
    rows = []
    for (v, phase), ts in times.items():
        ts.sort()
        t = ts[len(ts) // 2]
        ops, top = op_calls(runs[v][phase])
        rows.append({"bench": "search_step", "state": state, "batch": b, "phase": phase,
                     "variant": v, "ms_per_step": 1000 * t, "images_per_s": b / t,
                     "op_calls": ops, "top_level_ops": top,
                     # the first normal step: with compile, the compilation of both steps
                     "first_step_s": warmup[v]})
    del runs
    for r in rows:
        r["peak_mib"] = peak_of(state, r["variant"], r["phase"], b, args, device)
    base = {(r["phase"]): r["images_per_s"] for r in rows if r["variant"] == "reference"}
    for r in rows:
        r["speedup"] = r["images_per_s"] / base[r["phase"]] if r["phase"] in base else None
    return rows


def memory_model(state: str, sizes: list[int], args, device) -> dict:
    peaks = [peak_of(state, "fast", "normal", b, args, device) for b in sizes]
    fit = linear_fit(sizes, peaks)
    return {"bench": "memory_model", "state": state, "sizes": sizes, "peak_mib": peaks,
            "slope_mib_per_image": fit["slope"], "intercept_mib": fit["intercept"],
            "r2": fit["r2"],
            "memory": "cuda_allocated" if device.type == "cuda" else "rss_fresh_process"}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--states", default=",".join(POOL_STATES))
    p.add_argument("--batch", default="32,64")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--memory-batches", default="24,48,72,96",
                   help="batch sizes of the memory model; empty to skip it")
    p.add_argument("--variants", default="reference,fast,fused",
                   help=f"comma-separated, from {', '.join(VARIANTS)}")
    p.add_argument("--extra", default="",
                   help="further fast variants: bf16 (autocast), compile (torch.compile)")
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--peak-only", help=argparse.SUPPRESS)  # STATE,VARIANT,PHASE,BATCH
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.peak_only:
        state, variant, phase, b = args.peak_only.split(",")
        net, alphas = build(state, args, device)
        run = phases(steps_for(variant, net, alphas, device), int(b), device)[phase]
        run()
        reset_peak(device)
        run()
        print(json.dumps({"peak_mib": peak_mib(device)}))
        return
    states = [s for s in args.states.split(",") if s]
    unknown = set(states) - set(POOL_STATES)
    if unknown:
        sys.exit(f"unknown --states {sorted(unknown)}; allowed: {', '.join(POOL_STATES)}")
    variants = [v for v in args.variants.split(",") if v]
    variants += [f"fast+{e}" for e in args.extra.split(",") if e]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        sys.exit(f"unknown variants {bad}; allowed: {', '.join(VARIANTS)}")
    emit({"bench": "machine", "device": str(device), **machine()})
    rows = []
    for state in states:
        for b in (int(s) for s in args.batch.split(",")):
            for r in measure_throughput(state, b, variants, args, device):
                emit(r)
                rows.append(r)
    models = []
    sizes = [int(s) for s in args.memory_batches.split(",") if s]
    if len(sizes) >= 2:
        for state in states:
            models.append(memory_model(state, sizes, args, device))
            emit(models[-1])
    print()
    print(table(rows, [("state", "pools", "s"), ("batch", "batch", "d"), ("phase", "epoch", "s"),
                       ("variant", "variant", "s"), ("ms_per_step", "ms/step", ".0f"),
                       ("images_per_s", "img/s", ".1f"), ("speedup", "x ref", ".2f"),
                       ("op_calls", "aten ops", "d"), ("top_level_ops", "top-level", "d"),
                       ("peak_mib", "peak MiB", ".0f")]))
    if models:
        print()
        print(table(models, [("state", "pools", "s"), ("memory", "memory", "s"),
                             ("slope_mib_per_image", "MiB/image", ".2f"),
                             ("intercept_mib", "intercept MiB", ".0f"), ("r2", "R^2", ".4f")]))


if __name__ == "__main__":
    main()
