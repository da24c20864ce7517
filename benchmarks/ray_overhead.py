"""Ray's overhead on the same search, in-process vs one Tune trial: one-off start-up and per cycle.

Both run as fresh processes on the same config and seed (one torch thread):
``python -m prnas.search --quiet`` and ``tune_jobs/run_search.py --num-samples 1``.
Each prints one line per finished cycle, flushed; this script timestamps those
lines as they arrive, so both are timed the same way, from outside, without
touching the engine:

* **per cycle**: the time between successive cycle lines (cycles 2..N). In-process
  that is training the cycle, deciding and applying, the per-epoch checkpoints and
  the output files. Through Tune it additionally holds the scheduler's decision,
  the PAUSE with its checkpoint save and persist to storage, the actor reuse
  (``reset_config``), the restore, and result processing in the driver.
* **start-up**: time to the first cycle line, less that cycle's own training time
  (``cycle_time_s`` in the outputs): imports, datasets, network and, for Tune,
  starting Ray and the trial actor.
* **tail**: last cycle line to exit (parquet files, Ray shutdown for Tune).

Training time varies from run to run on a busy machine, so besides the raw
difference the table gives the difference of the per-cycle time *outside
training* (interval less ``cycle_time_s``), which is what the orchestration adds.
Prints one JSON line per run and a summary JSON line (medians over
``--repeat``), then a table. Measures; asserts nothing.

    python benchmarks/ray_overhead.py [--config tune_jobs/configs/demo.yaml] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INPROC_LINE = re.compile(r"^cycle (\d+) done:")
TUNE_LINE = re.compile(r"^\[.*\] cycle (\d+)/(\d+):")  # not "(reported again ...)" lines


def streamed(cmd: list[str], pattern: re.Pattern, log: Path, stream: str = "stdout") -> dict:
    """Run ``cmd``; the time (s since start) at which each matching line of ``stream``
    arrived (the other stream goes to ``log``)."""
    t0 = time.perf_counter()
    stamps: dict[int, float] = {}
    watched, other = ("stdout", "stderr") if stream == "stdout" else ("stderr", "stdout")
    with open(log, "w") as err, subprocess.Popen(
            cmd, cwd=ROOT, text=True, bufsize=1,
            **{watched: subprocess.PIPE, other: err}) as proc:
        for line in getattr(proc, watched):
            m = pattern.match(line)
            if m:
                stamps.setdefault(int(m.group(1)), time.perf_counter() - t0)
        rc = proc.wait()
    total = time.perf_counter() - t0
    if rc != 0:
        sys.exit(f"{' '.join(cmd)} failed with status {rc}; its stderr is in {log}:\n"
                 + "\n".join(log.read_text().splitlines()[-20:]))
    return {"total_s": total, "line_s": [stamps[c] for c in sorted(stamps)]}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def profile(run: dict, train_s: list[float], step_s: list[float] | None = None) -> dict:
    """Per-cycle intervals, start-up and tail of one run, from its line times."""
    lines = run["line_s"]
    if len(lines) != len(train_s):
        raise RuntimeError(f"saw {len(lines)} cycle lines but {len(train_s)} cycles recorded")
    interval = [b - a for a, b in zip(lines, lines[1:])]  # cycle k+2 ends - cycle k+1 ends
    out = {
        "total_s": run["total_s"],
        "startup_s": lines[0] - train_s[0],
        "tail_s": run["total_s"] - lines[-1],
        "train_s": train_s,
        "cycle_s": interval,  # cycles 2..N
        "outside_training_s": [i - t for i, t in zip(interval, train_s[1:])],
    }
    if step_s is not None:  # Tune: the trial's own step() time (apply decision + train)
        out["step_s"] = step_s
        out["between_steps_s"] = [i - s for i, s in zip(interval, step_s[1:])]
    return out


def run_inproc(config: str, tmp: Path) -> dict:
    out = tmp / "inproc"
    run = streamed([sys.executable, "-m", "prnas.search", "--config", config, "--out", str(out),
                    "--quiet", "--set", "num_threads=1"], INPROC_LINE, tmp / "inproc.out",
                   stream="stderr")  # progress lines go to stderr (prnas/cli.py)
    train = [float(r["cycle_time_s"]) for r in _jsonl(out / "cycles.jsonl")]
    return profile(run, train)


def run_tune(config: str, tmp: Path) -> dict:
    run = streamed([sys.executable, "tune_jobs/run_search.py", "--config", config,
                    "--num-samples", "1", "--cpus-per-trial", "1", "--storage", str(tmp),
                    "--name", "tune"], TUNE_LINE, tmp / "tune.err",
                   stream="stderr")  # the trials' lines are progress too (prnas/cli.py)
    (cycles,) = (tmp / "tune").glob("*/cycles.jsonl")
    rows = sorted(_jsonl(cycles), key=lambda r: r["cycle"])
    return profile(run, [float(r["cycle_time_s"]) for r in rows],
                   [float(r["wall_time_s"]) for r in rows])


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def summarise(inproc: list[dict], tune: list[dict]) -> dict:
    """Medians over repeats; per-cycle figures are means over cycles 2..N first."""
    def med(runs: list[dict], key: str, per_cycle: bool = False) -> float:
        return statistics.median(_mean(r[key]) if per_cycle else r[key] for r in runs)

    n = len(inproc[0]["cycle_s"])
    per_cycle = {mode: [statistics.median(r["cycle_s"][k] for r in runs) for k in range(n)]
                 for mode, runs in (("inproc", inproc), ("tune", tune))}
    cyc_a, cyc_b = med(inproc, "cycle_s", True), med(tune, "cycle_s", True)
    out_a, out_b = med(inproc, "outside_training_s", True), med(tune, "outside_training_s", True)
    return {
        "summary": True, "repeats": len(inproc),
        "inproc_cycle_s": per_cycle["inproc"], "tune_cycle_s": per_cycle["tune"],
        "inproc_per_cycle_s": cyc_a, "tune_per_cycle_s": cyc_b,
        "overhead_per_cycle_s": cyc_b - cyc_a, "overhead_per_cycle_pct": 100 * (cyc_b / cyc_a - 1),
        "inproc_outside_training_s": out_a, "tune_outside_training_s": out_b,
        "overhead_outside_training_s": out_b - out_a,
        "overhead_outside_training_pct": 100 * (out_b - out_a) / cyc_a,
        "tune_between_steps_s": med(tune, "between_steps_s", True),
        "inproc_startup_s": med(inproc, "startup_s"), "tune_startup_s": med(tune, "startup_s"),
        "startup_overhead_s": med(tune, "startup_s") - med(inproc, "startup_s"),
        "inproc_tail_s": med(inproc, "tail_s"), "tune_tail_s": med(tune, "tail_s"),
        "inproc_total_s": med(inproc, "total_s"), "tune_total_s": med(tune, "total_s"),
        "total_ratio": med(tune, "total_s") / med(inproc, "total_s"),
    }


def table(s: dict) -> str:
    rows = [("cycle", "in-process s", "Tune s", "overhead s", "overhead %")]
    for k, (a, b) in enumerate(zip(s["inproc_cycle_s"], s["tune_cycle_s"]), start=2):
        rows.append((str(k), f"{a:.2f}", f"{b:.2f}", f"{b - a:+.2f}", f"{100 * (b / a - 1):+.1f}"))
    rows.append(("mean", f"{s['inproc_per_cycle_s']:.2f}", f"{s['tune_per_cycle_s']:.2f}",
                 f"{s['overhead_per_cycle_s']:+.2f}", f"{s['overhead_per_cycle_pct']:+.1f}"))
    rows.append(("outside training", f"{s['inproc_outside_training_s']:.2f}",
                 f"{s['tune_outside_training_s']:.2f}",
                 f"{s['overhead_outside_training_s']:+.2f}",
                 f"{s['overhead_outside_training_pct']:+.1f}"))
    rows.append(("start-up", f"{s['inproc_startup_s']:.1f}", f"{s['tune_startup_s']:.1f}",
                 f"{s['startup_overhead_s']:+.1f}", ""))
    rows.append(("tail", f"{s['inproc_tail_s']:.1f}", f"{s['tune_tail_s']:.1f}",
                 f"{s['tune_tail_s'] - s['inproc_tail_s']:+.1f}", ""))
    rows.append(("total", f"{s['inproc_total_s']:.1f}", f"{s['tune_total_s']:.1f}",
                 f"{s['tune_total_s'] - s['inproc_total_s']:+.1f}",
                 f"ratio {s['total_ratio']:.2f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    note = (f"per-cycle rows: medians over {s['repeats']} run(s) of the time between successive "
            "cycle results; 'outside training' is that interval less the cycle's training time "
            f"(Tune between steps: {s['tune_between_steps_s']:.2f} s/cycle); % of the in-process "
            "cycle")
    return "\n".join([*lines, note])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="tune_jobs/configs/demo.yaml")
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args()
    inproc, tune = [], []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            inproc.append(run_inproc(args.config, Path(tmp)))
            print(json.dumps({"mode": "inproc", "run": i + 1, **inproc[-1]}), flush=True)
            tune.append(run_tune(args.config, Path(tmp)))
            print(json.dumps({"mode": "tune", "run": i + 1, **tune[-1]}), flush=True)
    s = summarise(inproc, tune)
    print(json.dumps(s), flush=True)
    print(table(s))


if __name__ == "__main__":
    main()
