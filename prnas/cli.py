"""One command-line convention for every prnas entry point.

``python -m prnas.search``, ``python -m prnas.retrain``, ``tune_jobs/run_search.py``,
``tune_jobs/run_retrain.py``, ``python -m analysis`` and ``python -m prnas.space``
take their shared flags from here, so a flag means the same thing, is spelt the same
way and fails the same way everywhere:

* ``--config FILE``, ``--set KEY=VALUE`` (repeatable), ``--seed N``, ``--data-dir DIR``,
  ``--download``, ``--device auto|cpu|cuda|cuda:N``: overrides applied to the config
  before validation.
* ``--out DIR``: the run's (or experiment's) folder; refused if not empty unless
  ``--resume``. The Tune jobs also take ``--storage DIR --name NAME`` (= ``DIR/NAME``).
* ``--resume``: continue the run in ``--out`` (Tune: the experiment); the stored
  config wins over ``--config``/``--set``.
* ``-q/--quiet``, ``-v/--verbose``: verbosity level 0 (no per-epoch lines: errors,
  results and the search's one line per cycle), 1 (the default: also one line per
  epoch, and a line within any stretch of training silent for 30 s, Tune trials
  included: ``prnas.runtime.progress_log``), 2 (also per-batch progress bars, Ray's
  status table, trials' epoch lines).
* **Seeds**: a run uses ``seed``; N runs of one config (``--num-samples N``) use
  ``seed, seed+1, ..., seed+N-1``, where ``seed`` is the config's (0 by default) or
  ``--seed``. :func:`seeds` is that rule.
* **Streams**: progress (per-epoch and per-cycle lines, notes, bars) goes to stderr;
  results (JSON rows, summaries, paths written) to stdout; errors are one
  ``error: ...`` line on stderr.
* **Exit codes**: :data:`EXIT_CODES`, the table docs/errors.md shows (a test keeps
  the two equal).
* **Counting** of discoverable ops: ``--counting paper|functional``, default
  :data:`COUNTING_DEFAULT` in both ``prnas.space`` and ``analysis``.

* **Threads on a shared CPU**: :func:`wait_policy`, applied when an entry point
  imports this module (before torch starts its OpenMP threads).

No torch, no Ray: the pure-Python ``prnas.space`` CLI imports this module too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl+C

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "finished (or `--stop-after-cycles N` reached in the in-process search)",
    EXIT_FAILED: "the run failed while training: divergence (non-finite loss), disk full or "
                 "folder removed while writing, or (Tune) some trials failed",
    EXIT_BAD_INPUT: "bad input: invalid config field or flag, unreadable/corrupt/foreign "
                    "checkpoint, bad genotype, corrupt image, unusable output folder, "
                    "unreachable `--address`, or the folder is in use by another run",
    EXIT_INTERRUPTED: "interrupted (Ctrl+C): the last "
                      "checkpoint is kept; continue with `--resume`",
}

COUNTING_CHOICES = ("paper", "functional")
# The paper's counting (1x1 kernels with dilation 2 distinct) reproduces Table III's
# 15/39/83; one default for every command so their numbers agree.
COUNTING_DEFAULT = "paper"

def runnable_now() -> int:
    """Processes running or waiting for a CPU right now (``/proc/loadavg``'s 4th field),
    this one included; the median of five readings 20 ms apart. 1 where unreadable."""
    readings = []
    for _ in range(5):
        try:
            with open("/proc/loadavg", encoding="ascii") as f:
                readings.append(int(f.read().split()[3].split("/")[0]))
        except (OSError, IndexError, ValueError):
            return 1
        time.sleep(0.02)
    return int(statistics.median(readings))


def wait_policy(environ: dict[str, str] | None = None,
                runnable: Callable[[], int] = runnable_now, cores: int | None = None
                ) -> str | None:
    """``OMP_WAIT_POLICY=PASSIVE`` when other processes keep at least half of this
    process's cores busy at its start, unless a policy is set already; returns the policy
    set, or None.

    On a CPU another torch job uses, the default policy (idle threads spin before they
    sleep) makes two jobs 2.2x slower than one after the other; PASSIVE for the second
    one nearly removes that, but it doubles the time of a job alone (its threads sleep
    after each of a tiny supernet's many small kernels), so a job that starts on an idle
    CPU keeps the default. Figures: benchmarks/README.md, "Contention". The count is the
    whole machine's (in a container, the host's).
    """
    env = os.environ if environ is None else environ
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    if "OMP_WAIT_POLICY" in env or runnable() - 1 < max(1, cores // 2):
        return None
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return "PASSIVE"


def _entry_point() -> bool:
    """This process runs one of prnas' commands (not a library user, a test runner or a
    Ray worker)."""
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None) or ""
    path = Path(getattr(main, "__file__", None) or "")
    return name.startswith("prnas.") or path.parent.name == "tune_jobs"


if _entry_point() and "torch" not in sys.modules:
    wait_policy()

SEED_RULE = "N runs use seeds seed..seed+N-1 (seed: --seed, else the config's, default 0)"


def seeds(first: int, n: int) -> list[int]:
    """The seeds of ``n`` runs of one config: ``first, first+1, ..., first+n-1``."""
    return [first + i for i in range(n)]


def error(msg: str) -> int:
    """Print the one-line error and return the bad-input exit code."""
    print(f"error: {msg}", file=sys.stderr)
    return EXIT_BAD_INPUT


def training_failed(err: Exception, out: Any) -> int:
    """The one line for a run that failed while training (a non-finite loss, or a write
    into ``out`` that failed, e.g. a full disk); the last complete checkpoint stays."""
    if isinstance(err, OSError):
        msg = (f"cannot write to {out}: {err.strerror or err}; the last complete checkpoint "
               "is kept, continue with --resume once fixed")
    else:
        msg = str(err)
    print(f"error: {msg}", file=sys.stderr)
    return EXIT_FAILED


def progress(msg: str) -> None:
    """A progress line (per epoch, per cycle, a note): stderr, flushed."""
    print(msg, file=sys.stderr, flush=True)


def result(msg: str) -> None:
    """A result line (a JSON row, a path written, a summary): stdout, flushed."""
    print(msg, flush=True)


def parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """Every command's parser: no abbreviated flags, its module docstring as help, verbatim."""
    return argparse.ArgumentParser(allow_abbrev=False, prog=prog, description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_config(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--config", help=f"YAML config (default: {default})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field by dotted name, value parsed as YAML "
                        "(e.g. --set network.channels=8; repeatable)")


def add_seed(p: argparse.ArgumentParser, *, fan_out: bool = False) -> None:
    p.add_argument("--seed", type=int, help="overrides seed" + (f"; {SEED_RULE}" if fan_out
                                                                 else ""))


def add_data(p: argparse.ArgumentParser, *, download: bool = True) -> None:
    p.add_argument("--data-dir", help="dataset folder (overrides data.data_dir)")
    if download:
        p.add_argument("--download", action="store_true",
                       help="download CIFAR into the data folder if missing (needs internet)")


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (overrides device)")


def add_out(p: argparse.ArgumentParser, *, tune: bool = False) -> None:
    if tune:
        p.add_argument("--out", metavar="DIR", help="experiment folder (= --storage "
                       "PARENT --name NAME); refused if it exists, unless --resume")
        p.add_argument("--storage", help="experiments folder, shared by all nodes on a "
                       "cluster, or a URI such as s3://bucket/prefix (default: "
                       "$PRNAS_STORAGE or ./runs)")
        p.add_argument("--name", help="experiment name (a plain folder name)")
    else:
        p.add_argument("--out", required=True, help="output folder (refused if it exists "
                       "and is not empty, unless --resume)")


def add_resume(p: argparse.ArgumentParser, what: str = "the run in --out") -> None:
    p.add_argument("--resume", action="store_true",
                   help=f"continue {what} from its last checkpoint, under its stored config")


def add_verbosity(p: argparse.ArgumentParser) -> None:
    """``-q`` (level 0), default 1, ``-v`` (level 2) into ``args.verbosity``."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=0,
                   help="no per-epoch lines (errors, results and per-cycle lines only)")
    g.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=2,
                   help="also per-batch progress bars and Ray's status table")
    p.set_defaults(verbosity=1)


def add_counting(p: argparse.ArgumentParser) -> None:
    p.add_argument("--counting", choices=COUNTING_CHOICES, default=COUNTING_DEFAULT,
                   help="how discoverable convs are counted: the paper's way (1x1 kernels "
                   "with dilation 2 distinct; reproduces Table III's 15/39/83) or "
                   f"functionally (1x1 kernels once); default {COUNTING_DEFAULT}")


def overrides(args: argparse.Namespace, names: Sequence[str] = ()) -> dict[str, Any]:
    """Config overrides from ``--set`` and the shared flags present on ``args``, as dotted
    keys; ``names`` adds top-level fields set by flags of the same name (``epochs``)."""
    from prnas.config_io import parse_set_args

    out = parse_set_args(getattr(args, "set", None) or [])
    if getattr(args, "data_dir", None):
        out["data.data_dir"] = args.data_dir
    if getattr(args, "download", False):
        out["data.download"] = True
    for key in ("seed", "device", *names):
        if getattr(args, key, None) is not None:
            out[key] = getattr(args, key)
    return out


def experiment_path(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(storage, name) of a Tune job from ``--out DIR`` or ``--storage``/``--name``;
    ValueError when both spellings are given."""
    if getattr(args, "out", None):
        if args.storage or args.name:
            raise ValueError("--out DIR is --storage PARENT --name NAME; give one or the other")
        from prnas.storage import location

        out = location(args.out)
        return out.parent.uri, out.name
    return args.storage, args.name
