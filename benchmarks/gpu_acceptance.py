"""GPU acceptance: every CUDA path of prnas on one GPU, in one run of a few minutes.

One command for the moment a GPU is free; only the in-process engine
(``prnas.search``, ``prnas.retrain``, ``prnas.runtime``), never Ray, so it runs on
an air-gapped node with the node's own PyTorch (>= 2.3) plus the few packages in
``EXTRA_PACKAGES`` (benchmarks/README.md: how to bring them as wheels). Checks:

1. search step throughput (paper network, three pool states, two batch sizes):
   reference vs fast vs fused vs fast+bf16, and fast+compile if it compiles within 90 s;
2. the memory model on CUDA: peak allocated memory against batch size is linear;
3. the adaptive batch size on real memory under a low budget, then a forced
   out-of-memory (ballast under an allocator cap): back-off without a repeated
   optimiser step;
4. a fractional share (0.25 of the card): the allocator cap and the controller
   keep the process's reserved memory within the share while growing;
5. a search end to end on a generated CIFAR-10 folder, straight and resumed;
6. the retrain step (C=36, 20 cells) for DARTS V2 and PR-DARTS DL2;
7. the input pipelines (CPU workers and device-resident) against the step rates;
8. headline estimates: the paper's DL search and one 600-epoch retrain in GPU-hours.

Prints one JSON line per check (its criterion, whether it is enforced here, its
figures), then a summary table; exits 1 if an enforced check failed, 2 on bad
usage. ``--smoke`` runs every check at tiny sizes on the CPU (no timing or
memory criteria enforced; the same code paths where the device allows) and is
part of the test suite.

    python benchmarks/gpu_acceptance.py [--budget-s 480] [--skip-compile]
    python benchmarks/gpu_acceptance.py --smoke
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import math
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from common import (
    POOL_STATES,
    emit,
    linear_fit,
    machine,
    median_time,
    peak_mib,
    reset_peak,
    sync,
    table,
)
from retrain_step import batch as retrain_batch
from retrain_step import step_peak as retrain_step_peak
from retrain_step import trainer as retrain_trainer
from search_step import batch as search_batch
from search_step import build as build_search
from search_step import phases, steps_for

from prnas.data import DataConfig, retrain_datasets, search_datasets
from prnas.data.device_resident import DeviceBatches, device_dataset
from prnas.data.loading import resolve_num_workers
from prnas.runtime import checkpoint
from prnas.runtime.batch_size import BatchSizeConfig, BatchSizeController, run_step_with_backoff
from prnas.runtime.memory import BudgetProbe, CudaMemoryProbe, is_oom, rss_peak_bytes
from prnas.search.__main__ import write_outputs
from prnas.search.config import build_config as search_config
from prnas.search.engine import Search

# What prnas needs beyond the node's PyTorch, torchvision, numpy, pandas, pyarrow,
# matplotlib, scikit-learn, pyyaml, tqdm and nvidia-ml-py (PyPI names). pydantic
# validates every config; the rest are its dependencies (typing-extensions comes with
# torch too, but pydantic may need a newer one). tests/test_gpu_acceptance.py checks
# that importing the in-process engine and this script needs nothing else.
EXTRA_PACKAGES = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection",
                  "typing-extensions")

PAPER_SEARCH_GPU_HOURS = 0.82 * 24  # paper: 0.82 GPU-days on a GTX 1080 Ti
COMPILE_LIMIT_S = 90.0


@dataclass(frozen=True)
class Sizes:
    channels: int = 16
    layers: int = 8
    states: tuple[str, ...] = tuple(POOL_STATES)
    batches: tuple[int, ...] = (64, 128)
    repeat: int = 5
    memory_batches: tuple[int, ...] = (32, 64, 128, 192, 256)
    memory_states: tuple[str, ...] = tuple(POOL_STATES)
    budget_mib: int = 4096  # check 3's artificially low budget
    grow_state: str = "cycles2-5"
    settle: int = 4  # growth decisions without a change that count as settled
    grow_b_min: int = 24
    grow_b_mult: int = 8
    grow_b_max: int = 1024
    share: float = 0.25
    share_b_mult: int = 32
    share_b_max: int = 4096
    retrain_channels: int = 36
    retrain_layers: int = 20
    retrain_batches: tuple[int, ...] = (96, 256)
    n_train: int = 4000
    n_test: int = 1000
    search_nodes: int = 4
    steps_per_epoch: int = 20
    search_batch: tuple[int, int, int] = (24, 8, 128)  # b_min, b_mult, b_max (paper)
    eval_batch: int = 256
    pipeline_batch: int = 128
    pipeline_batches: int = 60


SMOKE = Sizes(channels=4, layers=1, states=("cycle8",), batches=(2,), repeat=1,
              memory_batches=(2, 4, 6), memory_states=("cycle8",), budget_mib=256,
              grow_state="cycle8", settle=1, grow_b_min=4, grow_b_mult=4, grow_b_max=16,
              share_b_mult=4, share_b_max=16, retrain_channels=4,
              retrain_layers=3, retrain_batches=(4,), n_train=64, n_test=16, search_nodes=2,
              steps_per_epoch=1, search_batch=(8, 8, 16), eval_batch=32, pipeline_batch=16,
              pipeline_batches=4)

# Table I of the paper: (epochs, grace epochs) per cycle, and the measured pool state
# whose rates stand in for that cycle's pools (see benchmarks/README.md).
TABLE_I = [(15, 5, "cycle1"), (15, 5, "cycles2-5"), (10, 3, "cycles2-5"), (10, 3, "cycles2-5"),
           (10, 3, "cycles2-5"), (10, 3, "cycles2-5"), (10, 3, "cycles2-5"), (10, 3, "cycle8"),
           (10, 3, "cycle8")]
SEARCH_HALF = 25_000
RETRAIN_EPOCHS, CIFAR_TRAIN, CIFAR_TEST = 600, 50_000, 10_000
FORWARD_SHARE = 1 / 3  # a forward pass costs about a third of forward + backward


@dataclass
class Check:
    number: int
    name: str
    criterion: str
    passed: bool | None = None  # None: not evaluated (informational or skipped)
    enforced: bool = True
    skipped: str | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    @property
    def status(self) -> str:
        if self.error is not None:
            return "error"
        if self.skipped is not None:
            return "skip"
        if self.passed is None:
            return "info"
        if self.passed:
            return "pass"
        return "fail" if self.enforced else "not met"

    @property
    def failed(self) -> bool:
        return self.status in ("error", "fail")

    def record(self) -> dict:
        return {"check": self.number, "name": self.name, "status": self.status,
                "criterion": self.criterion, "enforced": self.enforced,
                "skipped": self.skipped, "error": self.error,
                "seconds": round(self.seconds, 2), **self.figures}


@dataclass
class Context:
    device: torch.device
    sizes: Sizes
    smoke: bool
    budget_s: float
    skip_compile: bool
    tmp: Path
    start: float = field(default_factory=time.perf_counter)
    results: dict[int, Check] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def timed(self) -> bool:
        """Timing and memory criteria apply: a real run on CUDA."""
        return self.cuda and not self.smoke

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def net_args(self) -> SimpleNamespace:
        return SimpleNamespace(channels=self.sizes.channels, layers=self.sizes.layers)


# ---------------------------------------------------------------- helpers


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in the main thread after ``seconds`` (Unix); a no-op elsewhere."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(_sig, _frame):
        raise TimeoutError(f"over {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class StepCounter:
    """Counts completed ``optimizer.step()`` calls (post hooks, torch >= 2.0)."""

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.counts = [0] * len(optimizers)
        for i, opt in enumerate(optimizers):
            opt.register_step_post_hook(lambda *_a, i=i: self._hit(i))

    def _hit(self, i: int) -> None:
        self.counts[i] += 1


def rate(rows: list[dict], **match: Any) -> float | None:
    """Largest images/s among rows whose fields equal ``match``."""
    vals = [r["images_per_s"] for r in rows if all(r.get(k) == v for k, v in match.items())]
    return max(vals) if vals else None


# ---------------------------------------------------------------- 1. search step


def _compile_steps(state: str, ctx: Context, net, alphas, b: int):
    """The fast+compile steps, warmed up (both phases) within the time limit, or the reason."""
    steps = steps_for("fast+compile", net, alphas, ctx.device)
    t0 = time.perf_counter()
    try:
        with time_limit(COMPILE_LIMIT_S):
            run = phases(steps, b, ctx.device)
            run["normal"]()
            run["grace"]()
            sync(ctx.device)
    except TimeoutError:
        torch._dynamo.reset()
        return None, time.perf_counter() - t0, f"did not compile within {COMPILE_LIMIT_S:.0f} s"
    except Exception as err:  # a compiler failure is a finding, not a crash of the check
        torch._dynamo.reset()
        return None, time.perf_counter() - t0, f"compile failed: {type(err).__name__}: {err}"
    return steps, time.perf_counter() - t0, None


def check_search_steps(ctx: Context, c: Check) -> None:
    s = ctx.sizes
    compile_state = "cycles2-5" if "cycles2-5" in s.states else s.states[0]
    want_compile = ctx.cuda and not ctx.smoke and not ctx.skip_compile
    rows: list[dict] = []
    compile_info: dict[str, Any] = {"state": compile_state}
    if not want_compile:
        compile_info["skipped"] = ("--skip-compile" if ctx.skip_compile else
                                   "CPU: a compile takes 90-160 s there (benchmarks/README)")
    for state in s.states:
        net, alphas = build_search(state, ctx.net_args(), ctx.device)
        variants = {v: steps_for(v, net, alphas, ctx.device)
                    for v in ("reference", "fast", "fused", "fast+bf16")}
        if want_compile and state == compile_state:
            if ctx.elapsed() > 0.4 * ctx.budget_s:
                compile_info["skipped"] = f"time budget: {ctx.elapsed():.0f} s used"
            else:
                steps, secs, why = _compile_steps(state, ctx, net, alphas, s.batches[0])
                compile_info["compile_s"] = round(secs, 1)
                if steps is None:
                    compile_info["skipped"] = why
                else:
                    variants["fast+compile"] = steps
        for b in s.batches:
            runs = {v: phases(st, b, ctx.device) for v, st in variants.items()}
            for run in runs.values():  # warm-up: allocator, cuDNN / oneDNN kernels
                run["normal"]()
                run["grace"]()
            times: dict[tuple[str, str], list[float]] = {}
            for _ in range(s.repeat):  # interleaved, so machine noise hits all alike
                for v, run in runs.items():
                    for phase, fn in run.items():
                        times.setdefault((v, phase), []).append(median_time(fn, ctx.device, 1))
            for (v, phase), ts in times.items():
                t = sorted(ts)[len(ts) // 2]
                row = {"state": state, "batch": b, "phase": phase, "variant": v,
                       "ms_per_step": 1000 * t, "images_per_s": b / t}
                if ctx.cuda:
                    reset_peak(ctx.device)
                    runs[v][phase]()
                    sync(ctx.device)
                    row["peak_mib"] = peak_mib(ctx.device)
                rows.append(row)
        del variants, runs
        release(ctx.device)
    ratios = []
    for r in rows:
        ref = rate(rows, state=r["state"], batch=r["batch"], phase=r["phase"],
                   variant="reference")
        r["speedup"] = r["images_per_s"] / ref
        if r["variant"] == "fast":
            ratios.append(r["speedup"])
    c.figures.update(rows=rows, compile=compile_info, min_fast_speedup=min(ratios))
    c.passed = min(ratios) >= 1.5
    c.enforced = ctx.timed


# ---------------------------------------------------------------- 2. memory model


def step_peak(state: str, b: int, ctx: Context) -> float:
    """Peak of one fast normal step after a warm-up one (search_step.peak_of's CUDA way; on a
    CPU the in-process RSS high-water mark, which only reports)."""
    net, alphas = build_search(state, ctx.net_args(), ctx.device)
    run = phases(steps_for("fast", net, alphas, ctx.device), b, ctx.device)["normal"]
    run()
    sync(ctx.device)
    reset_peak(ctx.device)
    run()
    sync(ctx.device)
    peak = peak_mib(ctx.device)
    del run, net, alphas
    release(ctx.device)
    return peak


def check_memory_model(ctx: Context, c: Check) -> None:
    s = ctx.sizes
    fits = []
    for state in s.memory_states:
        sizes, peaks = [], []
        for b in s.memory_batches:
            try:
                peaks.append(step_peak(state, b, ctx))
                sizes.append(b)
            except Exception as err:  # a smaller card: fit the sizes that ran
                if not is_oom(err):
                    raise
                release(ctx.device)
        fit = linear_fit(sizes, peaks)
        fits.append({"state": state, "sizes": sizes, "peak_mib": peaks,
                     "slope_mib_per_image": fit["slope"], "intercept_mib": fit["intercept"],
                     "r2": fit["r2"]})
    c.figures.update(memory="cuda_allocated" if ctx.cuda else "rss_in_process", fits=fits,
                     min_r2=min(f["r2"] for f in fits))
    c.passed = min(f["r2"] for f in fits) >= 0.99
    c.enforced = ctx.timed


# ---------------------------------------------------------------- 3. adaptive batch + OOM


def grow(ctx: Context, cfg: BatchSizeConfig, probe, *, settle: int, max_steps: int = 300
         ) -> dict:
    """Real fast normal steps under the engine's controller until the size settles; the same
    two-half loop as ``Search.train_epoch`` (alpha half backs off without recording)."""
    net, alphas = build_search(ctx.sizes.grow_state, ctx.net_args(), ctx.device)
    steps = steps_for("fast", net, alphas, ctx.device)
    xa, ya = search_batch(cfg.b_max, ctx.device, 2)
    x, y = search_batch(cfg.b_max, ctx.device, 1)
    steps.alpha_step(xa[: cfg.b_min], ya[: cfg.b_min])  # warm-up
    steps.weight_step(x[: cfg.b_min], y[: cfg.b_min])
    ctl = BatchSizeController(cfg, probe)
    counter = StepCounter(steps.w_opt, steps.a_opt)
    ooms: list[int] = []

    def one_step(fail_from: int | None = None) -> None:
        def alpha(b: int) -> None:
            if fail_from is not None and b >= fail_from:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated ballast)")
            steps.alpha_step(xa[:b], ya[:b])

        def weight(b: int):
            if fail_from is not None and b >= fail_from:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated ballast)")
            return steps.weight_step(x[:b], y[:b])

        run_step_with_backoff(alpha, ctl, record=False, on_retry=ooms.append)
        run_step_with_backoff(weight, ctl, on_retry=ooms.append, used_size=lambda r: r[2])

    n = unchanged = 0
    trace = []
    while unchanged < settle * cfg.grow_every and n < max_steps:
        before = ctl.batch_size
        one_step()
        n += 1
        unchanged = unchanged + 1 if ctl.batch_size == before else 0
        trace.append(ctl.batch_size)
    points = dict(ctl.state_dict()["points"])
    final = ctl.batch_size
    usable = probe.total_bytes() if probe is not None else None
    out = {"steps": n, "final_batch": final, "trace": trace, "oom_backoffs": len(ooms),
           "peak_mib_at_final": points.get(final, 0) / 2**20,
           "threshold_mib": cfg.threshold * usable / 2**20 if usable else None,
           "hit_b_max": final == cfg.largest_size(),
           "optimizer_steps": list(counter.counts), "training_steps": n}
    if usable:
        out["reached_pct"] = 100 * points.get(final, 0) / (cfg.threshold * usable)
    out["_live"] = (steps, ctl, counter, ooms, one_step, points)
    return out


def check_adaptive_batch(ctx: Context, c: Check) -> None:
    s = ctx.sizes
    budget = s.budget_mib * 2**20
    if ctx.cuda:
        release(ctx.device)
        probe = CudaMemoryProbe(ctx.device, budget_bytes=budget)
    else:  # a CPU has no device memory: an RSS budget above the current usage
        budget = rss_peak_bytes() + budget
        probe = BudgetProbe(budget, measure=rss_peak_bytes, reset=_reset_rss)
    cfg = BatchSizeConfig(b_min=s.grow_b_min, b_mult=s.grow_b_mult, b_max=s.grow_b_max,
                          grow_every=1, memory_budget_bytes=budget)
    g = grow(ctx, cfg, probe, settle=s.settle)
    steps, ctl, counter, ooms, one_step, points = g.pop("_live")
    grew_ok = g["oom_backoffs"] == 0 and g.get("reached_pct", 0) >= 90 and not g["hit_b_max"]
    # Forced out-of-memory: ballast so that the settled size and the one below it no longer
    # fit, then keep training. CUDA: a real allocation under an allocator cap at the budget;
    # CPU: the same back-off path, with the failure raised by the step itself.
    settled = ctl.batch_size
    before_ooms, before_counts = len(ooms), list(counter.counts)
    more = cfg.grow_every + 3  # the back-offs happen in the first of these steps
    ballast = None
    fail_from = None
    if ctx.cuda:
        xs = sorted(points)
        slope = linear_fit(xs, [points[k] for k in xs])["slope"] if len(xs) > 1 else 0.0
        release(ctx.device)
        total = torch.cuda.get_device_properties(ctx.device).total_memory
        torch.cuda.set_per_process_memory_fraction(budget / total, ctx.device)
        cap = budget
        size = int(cap - points[settled] + 1.5 * cfg.b_mult * slope)
        size = max(0, min(size, cap - torch.cuda.memory_allocated(ctx.device) - 2**20))
        ballast = torch.empty(size, dtype=torch.uint8, device=ctx.device)
        g["ballast_mib"] = size / 2**20
    else:
        fail_from = max(cfg.b_min + 1, settled - cfg.b_mult)
    try:
        for _ in range(more):
            one_step(fail_from)
    finally:
        del ballast
        if ctx.cuda:
            torch.cuda.set_per_process_memory_fraction(1.0, ctx.device)
            release(ctx.device)
    after = [a - b for a, b in zip(counter.counts, before_counts)]
    g.update(forced_oom_backoffs=len(ooms) - before_ooms, batch_after_oom=ctl.batch_size,
             steps_after_oom=more, weight_steps_after_oom=after[0],
             alpha_steps_after_oom=after[1])
    oom_ok = (len(ooms) - before_ooms >= 1 and ctl.batch_size < settled
              and after == [more, more] and counter.counts == [g["training_steps"] + more] * 2)
    c.figures.update(g)
    c.figures["grew_to_90pct"] = grew_ok
    c.figures["oom_backoff_ok"] = oom_ok
    # The back-off logic is checked everywhere; the 90 % only against real device memory.
    c.passed = oom_ok and (grew_ok or not ctx.timed)
    c.enforced = True
    del steps
    release(ctx.device)


def _reset_rss() -> None:
    from prnas.runtime.memory import reset_rss_peak

    reset_rss_peak()


# ---------------------------------------------------------------- 4. fractional share


def check_fractional_share(ctx: Context, c: Check) -> None:
    s = ctx.sizes
    if not ctx.cuda:
        c.skipped = "needs CUDA: the allocator cap is torch.cuda.set_per_process_memory_fraction"
        return
    release(ctx.device)
    total = torch.cuda.get_device_properties(ctx.device).total_memory
    budget = int(total * s.share)  # as prnas.tune.cluster.claim_gpu_share
    torch.cuda.set_per_process_memory_fraction(s.share, ctx.device)
    torch.cuda.reset_peak_memory_stats(ctx.device)
    try:
        cfg = BatchSizeConfig(b_min=s.share_b_mult, b_mult=s.share_b_mult, b_max=s.share_b_max,
                              grow_every=1, memory_budget_bytes=budget)
        probe = CudaMemoryProbe(ctx.device, budget_bytes=budget)
        g = grow(ctx, cfg, probe, settle=min(2, s.settle))
        g.pop("_live")
        reserved = torch.cuda.max_memory_reserved(ctx.device)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, ctx.device)
        release(ctx.device)
    g.pop("trace", None)
    c.figures.update(g, share=s.share, total_mib=total / 2**20,
                     peak_reserved_mib=reserved / 2**20, peak_reserved_pct=100 * reserved / total)
    c.passed = reserved <= s.share * total
    c.enforced = ctx.timed


# ---------------------------------------------------------------- 5. search end to end


def _cifar_root(ctx: Context) -> Path:
    # tests/data_folders.py (on the path through common), imported here so that importing this
    # script loads only the engine's modules (tests/test_gpu_acceptance.py checks which).
    from data_folders import write_cifar_folder

    root = ctx.tmp / "cifar"
    if not (root / "cifar-10-batches-py").is_dir():
        write_cifar_folder(root, n_train=ctx.sizes.n_train, n_test=ctx.sizes.n_test, seed=0)
    return root


def _search_cfg(ctx: Context):
    s = ctx.sizes
    b_min, b_mult, b_max = s.search_batch
    raw = {"name": "acceptance", "seed": 0, "device": str(ctx.device),
           "data": {"dataset": "cifar10", "data_dir": str(_cifar_root(ctx))},
           "network": {"channels": s.channels, "layers": s.layers, "nodes": s.search_nodes},
           "schedule": [{"epochs": 2, "grace_epochs": 1, "morphs": 3, "candidates": 6},
                        {"epochs": 2, "grace_epochs": 1, "morphs": 0, "candidates": 3},
                        {"epochs": 2, "grace_epochs": 1, "morphs": 0, "candidates": 1}],
           "batch": {"b_min": b_min, "b_mult": b_mult, "b_max": b_max},
           "steps_per_epoch": s.steps_per_epoch, "eval_batch_size": s.eval_batch}
    return search_config(raw)


def _search_pair(ctx: Context, tag: str) -> dict:
    cfg = _search_cfg(ctx)
    out = {}
    t0 = time.perf_counter()
    straight = Search(cfg, log=None)
    straight.run()
    write_outputs(ctx.tmp / f"{tag}-straight", straight)
    out["straight_s"] = time.perf_counter() - t0
    out["data_on_device"] = straight.data_on_device
    out["num_workers"] = straight.num_workers
    out["batch_size_max"] = max(m["batch_size_max"] for m in straight.cycle_log)
    out["images_per_s"] = [round(m["images_per_s"], 1) for m in straight.cycle_log]
    out["pools_after_cycle"] = [len(m.pools_next["normal"][0]) for m in straight.cycle_log]
    del straight
    t0 = time.perf_counter()
    first = Search(cfg, log=None)
    first.run(stop_after_cycles=1)
    ckpt = ctx.tmp / f"{tag}-checkpoint.pt"
    checkpoint.save_atomic(first.state_dict(), ckpt)
    del first
    resumed = Search(cfg, log=None)
    resumed.load_state_dict(checkpoint.load(ckpt))
    resumed.run()
    write_outputs(ctx.tmp / f"{tag}-resumed", resumed)
    out["resumed_s"] = time.perf_counter() - t0
    del resumed
    a = ctx.tmp / f"{tag}-straight" / "genotype.json"
    b = ctx.tmp / f"{tag}-resumed" / "genotype.json"
    out["genotype_written"] = a.is_file() and b.is_file()
    out["identical"] = out["genotype_written"] and a.read_text() == b.read_text()
    release(ctx.device)
    return out


def check_search_end_to_end(ctx: Context, c: Check) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        run = _search_pair(ctx, "default")
    c.figures.update(run)
    if not run["identical"] and ctx.elapsed() < 0.75 * ctx.budget_s:
        # Same pair with deterministic kernels, to tell CUDA nondeterminism from a resume bug.
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                det = _search_pair(ctx, "deterministic")
        finally:
            torch.use_deterministic_algorithms(False)
        c.figures["deterministic"] = {k: det[k] for k in
                                      ("identical", "straight_s", "resumed_s")}
        c.figures["deterministic"]["cost_x"] = det["straight_s"] / run["straight_s"]
    elif not run["identical"]:
        c.figures["deterministic"] = f"skipped: time budget ({ctx.elapsed():.0f} s used)"
    c.passed = run["genotype_written"]
    c.enforced = True


# ---------------------------------------------------------------- 6. retrain step


RETRAIN_VARIANTS = ("nchw", "channels_last", "channels_last+bf16")


def check_retrain_step(ctx: Context, c: Check) -> None:
    s = ctx.sizes
    rows = []
    for name in ("darts-v2", "prdarts-dl2"):
        for b in s.retrain_batches:
            args = SimpleNamespace(channels=s.retrain_channels, layers=s.retrain_layers,
                                   device=str(ctx.device), batch=b)
            runs = {v: retrain_trainer(name, v, args) for v in RETRAIN_VARIANTS}
            x, y = retrain_batch(b, ctx.device)
            for r in runs.values():
                r.net.step(x, y)  # warm-up
            times: dict[str, list[float]] = {v: [] for v in runs}
            for _ in range(s.repeat):
                for v, r in runs.items():
                    times[v].append(median_time(lambda r=r, x=x, y=y: r.net.step(x, y),
                                                ctx.device, 1))
            params = next(iter(runs.values())).params
            del runs
            release(ctx.device)
            for v in RETRAIN_VARIANTS:
                t = sorted(times[v])[len(times[v]) // 2]
                rows.append({"genotype": name, "batch": b, "variant": v, "params": params,
                             "ms_per_step": 1000 * t, "images_per_s": b / t,
                             "peak_mib": retrain_step_peak(name, v, args, ctx.device)})
                release(ctx.device)
    c.figures["rows"] = rows
    c.passed = all(math.isfinite(r["images_per_s"]) and r["images_per_s"] > 0 for r in rows)
    c.enforced = True


# ---------------------------------------------------------------- 7. data pipeline


def _pipeline_rate(batches: Callable[[], Any], n_batches: int, device: torch.device) -> float:
    """Images/s of ``n_batches`` batches delivered on ``device`` (after the first, so worker
    start-up is left out), cycling the loader as often as needed."""
    seen, it = 0, iter(batches())

    def nxt():
        nonlocal it
        try:
            return next(it)
        except StopIteration:
            it = iter(batches())
            return next(it)

    x, _ = nxt()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n_batches):
        x, y = nxt()
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        seen += len(y)
    sync(device)
    return seen / (time.perf_counter() - t0)


def check_data_pipeline(ctx: Context, c: Check) -> None:
    s = ctx.sizes
    root = _cifar_root(ctx)
    cfg = DataConfig(dataset="cifar10", data_dir=str(root))
    weights, _alphas, _ = search_datasets(cfg)
    train, _test, _ = retrain_datasets(cfg, cutout=16)
    workers = resolve_num_workers(cfg.num_workers, ctx.device)
    b = s.pipeline_batch
    rows = []
    for part, ds in (("search", weights), ("retrain", train)):
        def cpu_loader(ds=ds):
            return torch.utils.data.DataLoader(ds, batch_size=b, shuffle=True,
                                               num_workers=workers, drop_last=True,
                                               pin_memory=ctx.cuda,
                                               persistent_workers=workers > 0)

        loader = cpu_loader()
        cpu = _pipeline_rate(lambda loader=loader: loader, s.pipeline_batches, ctx.device)
        del loader
        dev_ds = device_dataset(ds, ctx.device)
        gen = torch.Generator().manual_seed(0)

        def dev_batches(dev_ds=dev_ds, gen=gen):
            order = torch.randperm(len(dev_ds), generator=gen).tolist()
            return DeviceBatches(dev_ds, [order[i:i + b] for i in range(0, len(order) - b + 1, b)],
                                 gen)

        resident = _pipeline_rate(dev_batches, s.pipeline_batches, ctx.device)
        rows.append({"pipeline": part, "batch": b, "cpu_workers": workers,
                     "cpu_images_per_s": cpu, "device_resident_images_per_s": resident})
        del dev_ds
    release(ctx.device)
    # What the step consumes: a normal search step takes a weight and an alpha batch.
    steps1 = ctx.results[1].figures.get("rows", [])
    steps6 = ctx.results[6].figures.get("rows", [])
    big = max((r["batch"] for r in steps1), default=None)
    need_search = max(filter(None, [rate(steps1, variant="fast", phase="grace", batch=big),
                                    2 * (rate(steps1, variant="fast", phase="normal",
                                              batch=big) or 0)]), default=None)
    need_retrain = rate(steps6, variant="nchw")
    default_resident = ctx.cuda  # device_resident: auto picks it on CUDA for CIFAR
    ok = []
    for r, need in zip(rows, (need_search, need_retrain)):
        r["step_consumes_images_per_s"] = need
        used = r["device_resident_images_per_s"] if default_resident else r["cpu_images_per_s"]
        r["default_path"] = "device_resident" if default_resident else "cpu"
        r["ratio"] = used / need if need else None
        r["cpu_ratio"] = r["cpu_images_per_s"] / need if need else None
        ok.append(r["ratio"] is not None and r["ratio"] >= 2.0)
    c.figures["rows"] = rows
    c.passed = all(ok)
    c.enforced = ctx.timed


# ---------------------------------------------------------------- 8. estimates


def check_estimates(ctx: Context, c: Check) -> None:
    rows1 = ctx.results[1].figures.get("rows", [])
    rows6 = ctx.results[6].figures.get("rows", [])
    if not rows1 or not rows6:
        c.skipped = "needs the rates of checks 1 and 6"
        return
    b_max = 128  # the search's and the retrain's default b_max
    batch = max(r["batch"] for r in rows1 if r["batch"] <= b_max) if any(
        r["batch"] <= b_max for r in rows1) else max(r["batch"] for r in rows1)
    fits = {f["state"]: f for f in ctx.results[2].figures.get("fits", [])}
    # The batch the controller reaches: b_max unless the memory model says it does not fit.
    reached = b_max
    if ctx.cuda and fits:
        usable = torch.cuda.get_device_properties(ctx.device).total_memory / 2**20 * 0.95
        for f in fits.values():
            most = (usable - f["intercept_mib"]) / max(f["slope_mib_per_image"], 1e-9)
            reached = min(reached, int(most))
    seconds = 0.0
    per_cycle = []
    measured = {r["state"] for r in rows1}
    for epochs, grace, state in TABLE_I:
        state = state if state in measured else sorted(measured)[0]  # smoke: one state
        g = rate(rows1, variant="fast", phase="grace", batch=batch, state=state)
        n = rate(rows1, variant="fast", phase="normal", batch=batch, state=state)
        eval_s = SEARCH_HALF / (g / FORWARD_SHARE)
        t = grace * SEARCH_HALF / g + (epochs - grace) * SEARCH_HALF / n + epochs * eval_s
        per_cycle.append(round(t / 3600, 3))
        seconds += t
    out: dict[str, Any] = {"search_batch": batch, "controller_reaches": reached,
                           "search_gpu_hours": seconds / 3600,
                           "search_gpu_hours_per_cycle": per_cycle,
                           "paper_search_gpu_hours_1080ti": PAPER_SEARCH_GPU_HOURS}
    for variant in ("nchw", "channels_last+bf16"):
        r = rate(rows6, variant=variant, genotype="prdarts-dl2",
                 batch=min(r["batch"] for r in rows6))
        t = RETRAIN_EPOCHS * (CIFAR_TRAIN / r + CIFAR_TEST / (r / FORWARD_SHARE))
        out[f"retrain_gpu_hours_{variant}"] = t / 3600
    out["assumptions"] = ("fast step rates at the largest measured batch <= 128; cycle 1 at "
                          "the cycle-1 pools, cycles 2-7 at the cycles-2-5 pools, 8-9 at the "
                          "cycle-8 pools; an evaluation pass over the alpha half (search) or "
                          "the test set (retrain) per epoch at 3x the training rate; retrain "
                          "of PR-DARTS DL2 at the smallest measured batch; no data-loading "
                          "or checkpoint time")
    c.figures.update(out)
    vals = [out["search_gpu_hours"], out["retrain_gpu_hours_nchw"]]
    c.passed = all(math.isfinite(v) and v > 0 for v in vals)
    c.enforced = True


# ---------------------------------------------------------------- driver


CHECKS: list[tuple[int, str, str, Callable[[Context, Check], None]]] = [
    (1, "search step throughput",
     "fast >= 1.5x reference images/s for every pool state, batch and epoch kind",
     check_search_steps),
    (2, "memory model on CUDA", "peak allocated memory linear in the batch size: R^2 >= 0.99",
     check_memory_model),
    (3, "adaptive batch on real memory",
     "settles at >= 90 % of the threshold without out-of-memory; after forced ballast it "
     "backs off, continues, and no optimiser steps twice for one batch", check_adaptive_batch),
    (4, "fractional share", "share 0.25: peak reserved memory <= 25 % of the card while growing",
     check_fractional_share),
    (5, "search end to end",
     "3-cycle search straight and stopped after cycle 1 + resumed both write genotype.json "
     "(identical genotypes reported)", check_search_end_to_end),
    (6, "retrain step", "DARTS V2 and PR-DARTS DL2, fp32 NCHW / channels_last / bf16: "
     "images/s and peak memory measured", check_retrain_step),
    (7, "data pipeline", "the default input pipeline delivers >= 2x the images/s the fast "
     "step consumes (search: max(grace, 2 x normal); retrain: fp32 NCHW)", check_data_pipeline),
    (8, "headline estimates", "the paper's DL search and a 600-epoch retrain in GPU-hours "
     "from the measured rates (finite, positive)", check_estimates),
]


def run_checks(ctx: Context) -> list[Check]:
    for number, name, criterion, fn in CHECKS:
        c = Check(number, name, criterion)
        ctx.results[number] = c
        t0 = time.perf_counter()
        try:
            fn(ctx, c)
        except Exception as err:
            c.error = f"{type(err).__name__}: {err}"
            traceback.print_exc(file=sys.stderr)
            release(ctx.device)
        c.seconds = time.perf_counter() - t0
        emit(c.record())
    return list(ctx.results.values())


def headline(c: Check) -> str:
    """The one figure per check for the summary table."""
    f = c.figures
    if c.status in ("error", "skip"):
        return str(c.error or c.skipped)
    if c.number == 1:
        return f"min fast/ref {f['min_fast_speedup']:.2f}x"
    if c.number == 2:
        return f"min R^2 {f['min_r2']:.4f}"
    if c.number == 3:
        return (f"batch {f['final_batch']} ({f.get('reached_pct', 0):.1f} %), "
                f"forced OOM -> {f['batch_after_oom']}")
    if c.number == 4:
        return f"peak reserved {f['peak_reserved_pct']:.1f} %"
    if c.number == 5:
        return f"identical genotypes: {f['identical']}"
    if c.number == 6:
        return f"{len(f['rows'])} measurements"
    if c.number == 7:
        return " / ".join(f"{r['pipeline']} {r['ratio']:.1f}x" if r["ratio"] else r["pipeline"]
                          for r in f["rows"])
    return (f"search {f['search_gpu_hours']:.1f} h, retrain "
            f"{f['retrain_gpu_hours_nchw']:.1f} h (paper search 19.7 h)")


def summary(checks: list[Check]) -> str:
    rows = []
    for c in checks:
        try:
            result = headline(c)
        except (KeyError, TypeError, ValueError):
            result = "-"
        rows.append({"check": c.number, "name": c.name, "status": c.status,
                     "enforced": "yes" if c.enforced else "no", "seconds": c.seconds,
                     "result": result})
    return table(rows, [("check", "#", "d"), ("name", "check", "s"), ("status", "status", "s"),
                        ("enforced", "enforced", "s"), ("seconds", "s", ".0f"),
                        ("result", "result", "s")])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true",
                   help="every check at tiny sizes on the CPU; no timing criteria")
    p.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    p.add_argument("--budget-s", type=float, default=480.0,
                   help="wall-time budget; optional parts (compile, deterministic rerun) "
                        "are skipped when it runs short")
    p.add_argument("--skip-compile", action="store_true", help="leave out fast+compile")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = p.parse_args(argv)
    device = torch.device(args.device or ("cpu" if args.smoke else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device here; run with --smoke for the CPU check of the script",
              file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        # Deterministic cuBLAS for check 5's rerun; must be set before cuBLAS starts.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.cuda.set_device(device)
    emit({"check": 0, "name": "machine", "device": str(device), "smoke": args.smoke,
          **machine(), "cuda": torch.version.cuda,
          "total_memory_mib": (torch.cuda.get_device_properties(device).total_memory / 2**20
                               if device.type == "cuda" else None)})
    with tempfile.TemporaryDirectory(prefix="prnas-acceptance-") as tmp:
        ctx = Context(device=device, sizes=SMOKE if args.smoke else Sizes(), smoke=args.smoke,
                      budget_s=args.budget_s, skip_compile=args.skip_compile, tmp=Path(tmp))
        checks = run_checks(ctx)
    print()
    print(summary(checks))
    print(f"\ntotal {ctx.elapsed():.0f} s on {device}"
          f"{' (smoke: timing and memory criteria not enforced)' if args.smoke else ''}")
    return 1 if any(c.failed for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
