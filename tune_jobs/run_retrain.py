#!/usr/bin/env python
"""Retrain genotypes x seeds as Ray Tune trials; results in ``<experiment>/retrain.parquet``.

Examples (from the repository root):

  python tune_jobs/run_retrain.py --genotype prdarts-dl1,prdarts-dl2 --num-samples 3
  python tune_jobs/run_retrain.py --genotype darts-v2 --num-samples 2 \\
      --config tune_jobs/configs/retrain_demo.yaml --name demo
  python tune_jobs/run_retrain.py --from-search runs/search-dl --num-samples 3 --dataset cifar100
  python tune_jobs/run_retrain.py --from-search runs/search-dl --random DL:5 --num-samples 3
  python tune_jobs/run_retrain.py --genotype prdarts-dl2 --params-only --dataset cifar100
  python tune_jobs/run_retrain.py --genotype darts-v2,pdarts --params-only --network imagenet
  python tune_jobs/run_retrain.py --name demo --resume          # continue a killed experiment
  python tune_jobs/run_retrain.py --genotype darts-v2 --network imagenet \\
      --data-dir /data/imagenet --workers-per-trial 8 --name in-dartsv2   # DDP on 8 GPUs
  python tune_jobs/run_retrain.py --out runs/demo --resume      # the same, one path

Seeds are seed..seed+N-1 for ``--num-samples N`` (seed: ``--seed``, else the
config's, 0 by default; the rule of every prnas command, see ``prnas/cli.py``).
``--random SPACE:N[:STEPS]`` adds N cells drawn uniformly from the cells a
search in SPACE with STEPS morph rounds (default 5, the paper's schedule) can produce, saved under
``<experiment>/random_cells/``; ``retrain.parquet``'s ``kind`` column tells
searched, random and preset cells apart. The config defaults to the paper's
protocol (tune_jobs/configs/retrain.yaml); see docs/retrain.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from prnas import cli
from prnas.config_io import MAX_SEED
from prnas.filenames import RETRAIN_CHECKPOINT_FILE, RETRAIN_FILE
from prnas.retrain.config import ConfigError, RetrainConfig, load_config
from prnas.retrain.genotypes import (
    RANDOM_SYNTAX,
    GenotypeRef,
    parse_genotype_list,
    parse_random,
    random_cells,
    resolve,
    write_random_cells,
)
from prnas.retrain.params import dataset_shape, network_cost
from prnas.space.genotype import Genotype
from prnas.storage import Location

PARQUET = RETRAIN_FILE
IMAGENET_CONFIG = Path(__file__).resolve().parent / "configs" / "retrain_imagenet.yaml"
RANDOM_DIR = "random_cells"


def _parser() -> argparse.ArgumentParser:
    p = cli.parser("run_retrain.py", __doc__)
    p.add_argument("--genotype", action="append", default=[], metavar="NAME_OR_PATH[,...]",
                   help="preset names and/or genotype JSON files, comma-separated (repeatable)")
    p.add_argument("--from-search", action="append", default=[], metavar="EXPERIMENT_DIR",
                   help="retrain every genotype.json found below an earlier search folder")
    p.add_argument("--random", action="append", default=[], metavar="SPACE:N[:STEPS][,...]",
                   help="also retrain N random cells of SPACE (DL, DR, UR) for a schedule with "
                   "STEPS morph rounds (default 5), the random-search baseline; repeatable")
    p.add_argument("--random-seed", type=int, default=0,
                   help="seed of the random cells (default 0)")
    p.add_argument("--num-samples", type=int, default=1,
                   help=f"seeds per genotype; {cli.SEED_RULE}")
    cli.add_config(p, "the paper's protocol, tune_jobs/configs/retrain.yaml")
    p.add_argument("--network", choices=["cifar", "imagenet"],
                   help="evaluation network; imagenet without --config uses the ImageNet "
                        "protocol (tune_jobs/configs/retrain_imagenet.yaml)")
    p.add_argument("--dataset", choices=["cifar10", "cifar100", "demo", "imagefolder",
                                         "imagenet"],
                   help="override data.dataset")
    cli.add_data(p)
    cli.add_seed(p, fan_out=True)
    cli.add_device(p)
    p.add_argument("--epochs", type=int, help="override epochs (the cosine schedule follows)")
    cli.add_out(p, tune=True)
    cli.add_resume(p, "the experiment (--out, or --storage/--name)")
    p.add_argument("--gpus-per-trial", type=float,
                   help="default: 1 if the cluster has GPUs, else 0")
    p.add_argument("--cpus-per-trial", type=float,
                   help="default: 1 + data.num_workers; also torch's thread count")
    p.add_argument("--max-concurrent", type=int, help="cap on trials running at once")
    p.add_argument("--workers-per-trial", type=int, metavar="N",
                   help="data-parallel retraining (PyTorch DDP through Ray Train): each "
                        "(genotype, seed) a trial on N workers, one GPU each when the cluster "
                        "has GPUs (--cpus-per-trial and --gpus-per-trial then count per "
                        "worker); global batch = batch.b_max (docs/retrain.md)")
    p.add_argument("--max-failures", type=int, default=1,
                   help="retries of a failed trial from its last checkpoint")
    p.add_argument("--address", help="join a Ray cluster (e.g. auto); default: start locally")
    p.add_argument("--num-cpus", type=int, help="CPUs of a locally started Ray")
    p.add_argument("--dashboard", action="store_true", help="start Ray's dashboard")
    cli.add_verbosity(p)
    p.add_argument("--params-only", action="store_true",
                   help="print each genotype's parameter count, MACs, latency and throughput "
                        "as JSON lines; no Ray, no training")
    p.add_argument("--no-timing", action="store_true",
                   help="with --params-only: skip the latency/throughput measurement")
    return p


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out = cli.overrides(args, ("epochs",))
    if args.network:
        out["network.kind"] = args.network
    if args.dataset:
        out["data.dataset"] = args.dataset
    return out


def _refs(args: argparse.Namespace, extra: list[GenotypeRef] | None = None) -> list[GenotypeRef]:
    names = [n for item in args.genotype for n in parse_genotype_list(item)]
    return resolve(names, args.from_search, extra or ())


def _random(args: argparse.Namespace) -> list[Genotype]:
    """The random cells asked for, drawn (not yet written) so a bad request fails first."""
    requests = [r for item in args.random for r in parse_random(item)]
    if len({(r.space, r.steps) for r in requests}) < len(requests):
        raise ValueError(f"--random: a SPACE:STEPS is named twice; syntax {RANDOM_SYNTAX}")
    return random_cells(requests, args.random_seed)


def params_only(cfg: RetrainConfig, refs: list[GenotypeRef],
                cells: list[Genotype] | None = None, timing: bool = True) -> int:
    shape = dataset_shape(cfg.data)
    if timing:
        from prnas.runtime.device import configure_threads

        configure_threads()
    todo = [(r.label, r.kind, r.path, r.load()) for r in refs]
    todo += [(g.name, "random", None, g) for g in cells or ()]
    for label, kind, path, genotype in todo:
        cost = network_cost(cfg, genotype, shape, timing=timing)
        params, macs = cost.pop("params"), cost.pop("macs")
        print(json.dumps({"genotype": label, "kind": kind, "params": params,
                          "params_m": round(params / 1e6, 2), "macs": macs,
                          "macs_m": round(macs / 1e6, 1), **cost, "dataset": cfg.data.dataset,
                          "num_classes": shape[0], "network": cfg.network.kind,
                          "channels": cfg.network.channels,
                          "layers": cfg.network.layers, "genotype_path": path}), flush=True)
    return 0


_fail = cli.error


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.num_samples < 1:
        return _fail(f"--num-samples must be >= 1, got {args.num_samples}")
    try:
        args.storage, args.name = cli.experiment_path(args)
        cfg = load_config(args.config or (IMAGENET_CONFIG if args.network == "imagenet" else None),
                          _overrides(args))
        if cfg.seed + args.num_samples - 1 > MAX_SEED:
            raise ConfigError(f"seed: seeds {cfg.seed}..{cfg.seed + args.num_samples - 1} "
                              f"exceed {MAX_SEED}; lower seed or --num-samples")
        cells = _random(args)
        named = bool(args.genotype or args.from_search)
        refs = _refs(args) if named or not (cells or args.resume) else []
    except (ConfigError, ValueError, FileNotFoundError) as err:
        return _fail(str(err))
    if args.workers_per_trial is not None:
        if args.workers_per_trial < 1:
            return _fail(f"--workers-per-trial must be >= 1, got {args.workers_per_trial}")
        from prnas.retrain.ddp import check_global_batch

        try:
            check_global_batch(cfg.batch.b_max, args.workers_per_trial)
        except ValueError as err:
            return _fail(f"--workers-per-trial {args.workers_per_trial}: {err}")
    if args.num_cpus is not None and args.num_cpus < 1:
        return _fail(f"--num-cpus must be >= 1, got {args.num_cpus}")
    if args.params_only:
        if not refs and not cells:
            return _fail("--params-only needs --genotype, --from-search or --random")
        return params_only(cfg, refs, cells, timing=not args.no_timing)

    from prnas.runtime.lock import FolderLocked
    from prnas.tune.cluster import (
        check_address,
        check_experiment_name,
        experiment_lock,
        experiment_storage,
    )

    try:
        storage = experiment_storage(args.storage)
    except ValueError as err:
        return _fail(str(err))
    if args.resume:
        if not args.name:
            return _fail("--resume needs the --name of the experiment to continue")
        name = args.name
    else:
        name = args.name or f"retrain-{cfg.data.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        check_experiment_name(name)
        if args.address:
            check_address(args.address)
        experiment = storage / name
        missing = args.resume and not experiment.is_dir()
        exists = not args.resume and experiment.exists()
    except (ValueError, ConnectionError, OSError) as err:
        return _fail(str(err))
    if missing:
        return _fail(f"--resume: no experiment at {experiment}")
    if args.resume:
        from prnas.tune.cluster import check_resume
        try:
            check_resume(experiment, "retrain", RETRAIN_CHECKPOINT_FILE)
        except ValueError as err:
            return _fail(str(err))
    if exists:
        return _fail(f"experiment {experiment} already exists; continue it with --resume, or "
                     "choose another --name (results are never overwritten)")
    if not args.resume:
        # Fail on missing data here, once, rather than in every trial; and download once.
        from prnas.data.datasets import retrain_datasets
        from prnas.data.source import DatasetNotFoundError

        data = cfg.data.with_absolute_paths()
        try:
            retrain_datasets(data, cutout=cfg.cutout)
        except (DatasetNotFoundError, ValueError) as err:
            return _fail(str(err))
        cfg = cfg.model_copy(update={"data": data.model_copy(update={"download": False})})
    try:
        lock = experiment_lock(storage, name).acquire()
    except FolderLocked as err:
        return _fail(str(err))
    with lock:
        if not args.resume and experiment.exists():  # another driver got here first
            return _fail(f"experiment {experiment} already exists; choose another --name")
        if cells and not args.resume:  # written only now that nothing else can refuse the run
            refs = _refs(args, write_random_cells(cells, experiment / RANDOM_DIR))
        return _run(args, cfg, refs, storage, name)


def _run(args: argparse.Namespace, cfg: RetrainConfig, refs: list[GenotypeRef],
         storage: Location, name: str) -> int:
    from analysis.tables import format_table_iii, table_iii
    from prnas.records import write_parquet
    from prnas.retrain.schedule import headline_rule
    from prnas.tune.cluster import (
        ClusterConnectError,
        ClusterResourceError,
        check_resources,
        cluster_gpus,
        start_driver,
    )
    from prnas.tune.retrain import build_tuner, can_restore, restore_tuner, result_rows

    try:
        url = start_driver(args.address, args.num_cpus, args.dashboard,
                           verbosity=args.verbosity, quiet_driver=args.verbosity < 2)
    except ClusterConnectError as err:
        return _fail(str(err))
    if url:
        cli.progress(f"Ray dashboard: {url}")
    gpus = args.gpus_per_trial if args.gpus_per_trial is not None else (
        1.0 if cluster_gpus() > 0 else 0.0)
    cpus = args.cpus_per_trial if args.cpus_per_trial is not None else (
        1.0 + cfg.data.explicit_workers)
    try:
        check_resources(gpus, cpus)
    except ClusterResourceError as err:
        return _fail(str(err))
    experiment = storage / name
    if args.workers_per_trial is not None:
        from prnas.tune.cluster import check_workers

        try:  # Ray Train would wait forever (and ignore Ctrl+C) for workers it cannot place
            check_workers(args.workers_per_trial, cpus, gpus > 0)
        except ClusterResourceError as err:
            return _fail(str(err))
    if args.resume:
        if not can_restore(experiment):
            return _fail(f"--resume: {experiment} holds no restorable Tune experiment")
        if refs or args.random:
            cli.progress("note: --resume continues the stored trials; --genotype/--from-search/"
                         "--random and config flags are ignored")
        tuner = restore_tuner(experiment)
    else:
        if gpus == 0 and cfg.device == "auto":
            # A zero-GPU trial on a GPU node must not quietly take a GPU it did not reserve.
            cfg = cfg.model_copy(update={"device": "cpu"})
        seeds = cli.seeds(cfg.seed, args.num_samples)
        ddp = (f", each on {args.workers_per_trial} {'GPU' if gpus > 0 else 'CPU'} worker(s)"
               if args.workers_per_trial is not None else "")
        cli.progress(f"retraining {len(refs)} genotype(s) x {len(seeds)} seed(s) "
                     f"({', '.join(r.label for r in refs)}; seeds {seeds[0]}..{seeds[-1]})"
                     f"{ddp} into {experiment}")
        _warn_short(cfg)
        tuner = build_tuner(cfg, refs, seeds, storage=storage, name=name,
                            gpus_per_trial=gpus, cpus_per_trial=cpus,
                            max_failures=args.max_failures,
                            max_concurrent=args.max_concurrent, verbose=args.verbosity,
                            workers_per_trial=args.workers_per_trial)
    # Tune prints its experiment box and TensorBoard hint on stdout, which carries only
    # results here: everything said while the trials run goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        results = tuner.fit()
    if any(r.error is None and not (r.metrics or {}).get("done") for r in results):
        # Tune returns normally after Ctrl+C: without this the partial epochs would be
        # written and summarised as if they were the final results.
        cli.progress("interrupted; the trials keep their last checkpoints. Continue with "
                     f"--name {name} --resume"
                     + (f" --storage {storage.uri}" if args.storage else ""))
        return cli.EXIT_INTERRUPTED
    df = result_rows(experiment)
    write_parquet(df, experiment / PARQUET)
    report_last, epochs = _stored_protocol(results, cfg)
    print(f"\n{len(df)} rows -> {experiment / PARQUET}")
    print(f"final test error = {headline_rule(epochs, report_last)}, mean +- std over seeds:")
    table = format_table_iii(table_iii(df.assign(experiment=name), report_last=report_last))
    print(table.drop(columns=["Search cost", "#ops"], errors="ignore").to_string(index=False))
    if results.errors:
        cli.progress(f"{len(results.errors)} trial(s) failed; fix the cause and rerun with "
                     f"--name {name} --resume")
        return cli.EXIT_FAILED
    return cli.EXIT_OK


def _warn_short(cfg: RetrainConfig) -> None:
    from prnas.retrain.schedule import short_run_warning

    warning = short_run_warning(cfg.epochs, cfg.report_last)
    if warning:
        cli.progress(warning)


def _stored_protocol(results: Any, cfg: RetrainConfig) -> tuple[int, int]:
    """report_last and epochs as the trials ran them (a resumed experiment's, not the flags')."""
    for result in results:
        stored = (result.config or {}).get("retrain", {})
        if stored.get("report_last") and stored.get("epochs"):
            return int(stored["report_last"]), int(stored["epochs"])
    return cfg.report_last, cfg.epochs


if __name__ == "__main__":
    sys.exit(main())
