#!/usr/bin/env python
"""PR-DARTS searches as Ray Tune trials: seeds x search spaces, one Tune step per cycle.

Examples (from the repository root):

  python tune_jobs/run_search.py --config tune_jobs/configs/demo.yaml --num-samples 3
  python tune_jobs/run_search.py --num-samples 2 --spaces DL,DR,UR --data-dir ~/data
  python tune_jobs/run_search.py --name NAME --resume       # continue an interrupted run
  python tune_jobs/run_search.py --out runs/NAME --resume   # the same, one path

Between cycles a Tune scheduler prunes and replaces each trial's candidates;
the trial resumes from its checkpoint with the new pools. Each trial folder
gets genotype.json; the experiment folder gets results.parquet and
candidates.parquet (schema: docs/search.md). Seeds are seed..seed+N-1 for
--num-samples N (seed: --seed, else the config's, 0 by default), the rule of
every prnas command.

Exit status (prnas/cli.py, docs/errors.md): 0 all trials finished, 1 some
failed, 2 bad arguments or config (or the experiment is in use by another
driver), 130 interrupted (continue with --resume). Tune's own experiment
files (tuner.pkl) are pickles: resume only experiments from folders you trust.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prnas import cli
from prnas.search.config import ConfigError, SearchConfig, load_config
from prnas.space.constraints import PRESETS
from prnas.storage import Location

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "search_dl.yaml"


def _parser() -> argparse.ArgumentParser:
    p = cli.parser("run_search.py", __doc__)
    cli.add_config(p, "tune_jobs/configs/search_dl.yaml, the paper's DL search on CIFAR-10")
    p.add_argument("--num-samples", type=int, default=1,
                   help=f"seeds per search space; {cli.SEED_RULE}")
    p.add_argument("--spaces", help="comma-separated constraint presets to fan out over, "
                   f"from {','.join(PRESETS)} (default: the config's space)")
    p.add_argument("--population", metavar="MECHANISMS",
                   help="the seeds of a space decide together, with these comma-separated "
                        f"mechanisms at their defaults: {', '.join(MECHANISMS)} (the config's "
                        "population section; docs/search.md, Population)")
    cli.add_data(p)
    cli.add_seed(p, fan_out=True)
    cli.add_device(p)
    cli.add_out(p, tune=True)
    cli.add_resume(p, "the experiment (--out, or --storage/--name): unfinished and failed "
                   "trials")
    p.add_argument("--address", help="join a Ray cluster (e.g. auto); default: start locally")
    p.add_argument("--num-cpus", type=int, help="CPUs of a locally started Ray")
    p.add_argument("--max-failures", type=int, default=1,
                   help="retries of a failed trial from its last checkpoint")
    p.add_argument("--gpus-per-trial", type=float,
                   help="may be fractional; default: 1 if the cluster has GPUs, else 0")
    p.add_argument("--cpus-per-trial", type=float,
                   help="default: 1 + data.num_workers; also torch's thread count")
    p.add_argument("--dashboard", action="store_true",
                   help="start Ray's dashboard, print its URL, and (on a terminal) keep it up "
                        "after the search until Enter is pressed")
    cli.add_verbosity(p)
    return p


_fail = cli.error


MECHANISMS = ("share", "exploit", "halve")


def population_overrides(text: str | None) -> dict[str, Any]:
    """``--population share,exploit`` -> ``{"population.share": {}, ...}``: each named
    mechanism on at its defaults (``--set population.share.temperature=2`` after it)."""
    if text is None:
        return {}
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in MECHANISMS]
    if bad or not names:
        raise ConfigError(f"--population: unknown mechanism(s) {', '.join(bad) or '(none)'}; "
                          f"allowed: {', '.join(MECHANISMS)}")
    # Merged into the config file's section: its settings of a named mechanism stay.
    return {"population": {n: {} for n in names}}


def _spaces(args: argparse.Namespace, cfg: SearchConfig) -> list[str]:
    if not args.spaces:
        return [cfg.space]
    spaces = [s.strip().upper() for s in args.spaces.split(",") if s.strip()]
    bad = [s for s in spaces if s not in PRESETS]
    if bad or not spaces:
        raise ConfigError(f"--spaces: unknown preset(s) {', '.join(bad) or '(none)'}; "
                          f"allowed: {', '.join(PRESETS)}")
    if len(set(spaces)) != len(spaces):
        raise ConfigError(f"--spaces lists a preset twice: {args.spaces}")
    if cfg.constraints is not None:
        raise ConfigError("--spaces fans out over presets, but the config sets custom "
                          "constraints, which override any preset")
    return spaces


def _prepare_data(cfg: SearchConfig) -> SearchConfig:
    """Absolute data paths; missing data fails here, once, and a download happens once."""
    from prnas.data.datasets import search_datasets
    from prnas.data.source import DatasetNotFoundError

    data = cfg.data.with_absolute_paths()
    try:
        search_datasets(data)
    except (DatasetNotFoundError, ValueError) as err:
        raise ConfigError(str(err)) from None
    return cfg.model_copy(update={"data": data.model_copy(update={"download": False})})


def main(argv: list[str] | None = None, *, trainable: type | None = None,
         callbacks: Sequence[Any] = ()) -> int:
    """``trainable`` and ``callbacks``: a Trainable class and Tune callbacks in place of
    ``SearchTrainable`` and beside the console's (how tests inject faults)."""
    args = _parser().parse_args(argv)
    from prnas.config_io import MAX_SEED
    from prnas.runtime.lock import FolderLocked
    from prnas.tune.cluster import (
        check_address,
        check_experiment_name,
        experiment_lock,
        experiment_storage,
    )

    lock = None
    try:
        args.storage, args.name = cli.experiment_path(args)
        storage = experiment_storage(args.storage)
        if args.num_samples < 1:
            raise ConfigError(f"--num-samples must be >= 1, got {args.num_samples}")
        if args.max_failures < 0:
            raise ConfigError(f"--max-failures must be >= 0, got {args.max_failures}")
        if args.num_cpus is not None and args.num_cpus < 1:
            raise ConfigError(f"--num-cpus must be >= 1, got {args.num_cpus}")
        if args.name is not None:
            check_experiment_name(args.name)
        if args.address:
            check_address(args.address)
        if args.resume:
            if not args.name:
                raise ConfigError("--resume needs the --name of the experiment to continue")
            experiment = storage / args.name
            if not (experiment / "tuner.pkl").is_file():  # also on remote storage
                raise ConfigError(f"--resume: no Tune experiment at {experiment}")
            from prnas.tune.cluster import check_resume
            from prnas.tune.search_trainable import CHECKPOINT_FILE

            check_resume(experiment, "search", CHECKPOINT_FILE)
            if args.config or args.spaces or args.data_dir or args.set or args.seed is not None:
                cli.progress("note: --resume continues the stored trials with their stored "
                             "config; --config/--set/--seed/--spaces/--data-dir are ignored")
            lock = experiment_lock(storage, args.name).acquire()
            cfg = spaces = None
        else:
            cfg = load_config(args.config or DEFAULT_CONFIG,
                              {**population_overrides(args.population), **cli.overrides(args)})
            if cfg.seed + args.num_samples - 1 > MAX_SEED:
                raise ConfigError(f"seed: seeds {cfg.seed}..{cfg.seed + args.num_samples - 1} "
                                  f"exceed {MAX_SEED}; lower seed or --num-samples")
            spaces = _spaces(args, cfg)
            name = args.name or f"search-{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            check_experiment_name(name)
            experiment = storage / name
            if experiment.exists():
                raise ConfigError(f"experiment {experiment} already exists; continue it with "
                                  f"--name {name} --resume, or choose another --name "
                                  "(nothing is overwritten)")
            cfg = _prepare_data(cfg)
            lock = experiment_lock(storage, name).acquire()
            if experiment.exists():  # another driver got here first
                raise ConfigError(f"experiment {experiment} already exists; choose another "
                                  "--name (nothing is overwritten)")
    except (ConfigError, ValueError, FolderLocked, ConnectionError, OSError) as err:
        if lock is not None:
            lock.release()
        return _fail(str(err))
    with lock:
        return _run(args, cfg, spaces, experiment, trainable, callbacks)


def _run(args: argparse.Namespace, cfg: SearchConfig | None, spaces: list[str] | None,
         experiment: Location, trainable: type | None, callbacks: Sequence[Any]) -> int:
    from prnas.tune.cluster import (
        ClusterConnectError,
        ClusterResourceError,
        check_resources,
        cluster_gpus,
        start_driver,
    )
    from prnas.tune.experiment import SearchExperiment, run_search
    from prnas.tune.search_trainable import SearchTrainable

    trainable = trainable or SearchTrainable

    try:  # the driver prints its own line per cycle: Ray's loggers stay quiet there
        url = start_driver(args.address, args.num_cpus, args.dashboard,
                           verbosity=args.verbosity, quiet_driver=True)
    except ClusterConnectError as err:
        return _fail(str(err))
    if url:
        cli.progress(f"Ray dashboard: {url}")
    gpus = args.gpus_per_trial if args.gpus_per_trial is not None else (
        1.0 if cluster_gpus() > 0 else 0.0)
    cpus = args.cpus_per_trial if args.cpus_per_trial is not None else (
        1.0 + (cfg.data.explicit_workers if cfg else 0))
    try:
        check_resources(gpus, cpus)
    except (ClusterResourceError, ValueError) as err:
        return _fail(str(err))
    if args.resume:
        cli.progress(f"resuming {experiment}")
        exp = None
    else:
        seeds = cli.seeds(cfg.seed, args.num_samples)
        cli.progress(f"searching {len(spaces)} space(s) x {len(seeds)} seed(s) "
                     f"({', '.join(spaces)}; seeds {seeds[0]}..{seeds[-1]}), "
                     f"{len(cfg.schedule)} cycles each, {cpus:g} CPU / {gpus:g} GPU per trial, "
                     f"into {experiment}")
        exp = SearchExperiment(cfg=cfg, storage=experiment.parent, name=experiment.name,
                               spaces=spaces, seeds=seeds, cpus_per_trial=cpus,
                               gpus_per_trial=gpus, max_failures=args.max_failures,
                               verbosity=args.verbosity, trainable=trainable,
                               callbacks=tuple(callbacks))
    # Tune prints its experiment box and TensorBoard hint on stdout, which carries only
    # results here: everything said while the trials run goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        outcome = run_search(exp, resume_path=experiment if args.resume else None,
                             trainable=trainable)
    print(f"\nexperiment: {outcome.path}")
    print(f"results:    {outcome.results_path} ({len(outcome.results)} rows)")
    print(f"candidates: {outcome.candidates_path}")
    if len(outcome.summary):
        print(outcome.summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if outcome.errors:
        for tid, err in outcome.errors.items():
            cli.progress(f"trial {tid} failed: {err}")
        cli.progress(f"fix the cause and continue with --name {outcome.path.name} --resume")
        return cli.EXIT_FAILED
    if not outcome.complete:
        cli.progress(f"interrupted; continue with --name {outcome.path.name} --resume"
                     + (f" --storage {outcome.path.parent.uri}" if args.storage else ""))
        return cli.EXIT_INTERRUPTED
    if url and args.address is None:
        _keep_dashboard_up(url)
    return cli.EXIT_OK


def _keep_dashboard_up(url: str) -> None:
    """A local Ray (and its dashboard) dies with this process: hold it open for browsing."""
    if not sys.stdin.isatty():
        return
    print(f"\nthe Ray dashboard stays up at {url}; press Enter or Ctrl+C to shut it down",
          flush=True)
    with contextlib.suppress(KeyboardInterrupt, EOFError):
        input()


if __name__ == "__main__":
    sys.exit(main())
