"""Wall time of the same search in-process and as one Ray Tune trial, and their ratio.

Both run as fresh processes (imports and, for Tune, Ray's start-up included),
on the same config and seed, so the difference is what the orchestration costs.

    python benchmarks/ray_overhead.py [--config tune_jobs/configs/demo.yaml] [--repeat 1]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="tune_jobs/configs/demo.yaml")
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args()
    inproc, tune = [], []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            inproc.append(timed([sys.executable, "-m", "prnas.search", "--config", args.config,
                                 "--out", f"{tmp}/inproc", "--quiet", "--set", "num_threads=1"]))
            tune.append(timed([sys.executable, "tune_jobs/run_search.py", "--config",
                               args.config, "--num-samples", "1", "--cpus-per-trial", "1",
                               "--storage", tmp, "--name", f"bench{i}"]))
        print(f"run {i + 1}: in-process {inproc[-1]:.1f} s, Ray Tune {tune[-1]:.1f} s", flush=True)
    a, b = statistics.median(inproc), statistics.median(tune)
    print(f"median: in-process {a:.1f} s, Ray Tune {b:.1f} s, ratio {b / a:.2f}, "
          f"overhead {b - a:.1f} s")


if __name__ == "__main__":
    main()
