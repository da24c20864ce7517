"""What the benchmark scripts share: the pool states the issue names, memory readings,
and output as JSON lines (for machines) plus a table (for people)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from a checkout
    sys.path.insert(0, str(ROOT))
if str(ROOT / "tests") not in sys.path:  # the tests' dataset writers: `from data_folders import`
    sys.path.insert(0, str(ROOT / "tests"))

from prnas.runtime.memory import reset_rss_peak, rss_peak_bytes  # noqa: E402
from prnas.space import Op  # noqa: E402
from prnas.space.pools import CELL_TYPES, num_edges  # noqa: E402

# Paper Fig. 2's typical pools, the same on every edge of both cell types.
POOL_STATES: dict[str, tuple[str, ...]] = {
    # cycle 1: the initial pool
    "cycle1": ("max_pool_3x3", "avg_pool_3x3", "skip", "conv_k3_d1"),
    # cycles 2-5: three survivors and three convs morphed from conv_k3_d1 (DL morphisms)
    "cycles2-5": ("max_pool_3x3", "skip", "conv_k3_d1", "conv_k5_d1", "conv_k3_d2",
                  "conv_k3_d1_e1"),
    # cycle 8: two convs left
    "cycle8": ("conv_k3_d1_e1", "conv_k5_d1_e1"),
}


def pools_for(state: str, nodes: int = 4) -> dict[str, tuple[tuple[Op, ...], ...]]:
    ops = tuple(Op.parse(s) for s in POOL_STATES[state])
    return {t: tuple(ops for _ in range(num_edges(nodes))) for t in CELL_TYPES}


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads()}
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f
                               if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_rss_peak()


def peak_mib(device: torch.device) -> float:
    """CUDA: this process's allocated peak; CPU: its resident-set peak (VmHWM), which is
    what the adaptive batch size reads on a CPU with a memory budget."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return rss_peak_bytes() / 2**20


def fresh_process_peak(script: str, args: Sequence[str]) -> float:
    """``peak_mib`` printed (last JSON line) by ``script args`` run in a fresh process.

    For CPU peaks: a long-lived process keeps freed pages resident, so its RSS peak only
    shows the largest step so far. glibc's mmap threshold is lowered in the child so that
    freed tensors leave the RSS: the peak is the step's live memory plus the process's
    fixed part (interpreter, libraries, weights).
    """
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, script, *args], env=env, check=True,
                         capture_output=True, text=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["peak_mib"])


def median_time(fn: Callable[[], object], device: torch.device, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> dict:
    """Least-squares line and its R^2: how well 'memory is linear in the batch size' holds."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    intercept = my - slope * mx
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys)
    return {"slope": slope, "intercept": intercept,
            "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0}


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> str:
    """``columns``: (key, header, format spec); missing values print as '-'."""
    cells = [[h for _, h, _ in columns]]
    for r in rows:
        cells.append([format(r[k], f) if r.get(k) is not None else "-" for k, _, f in columns])
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
