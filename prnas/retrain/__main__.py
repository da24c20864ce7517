"""``python -m prnas.retrain``: retrain one genotype in-process, resumable, without Ray.

The output folder holds everything needed to continue or inspect the run:
``config.yaml`` and ``genotype.json`` (as started), ``checkpoint.pt`` (after
every epoch) and a retrain's files as every retrain writes them
(:mod:`prnas.retrain.run_files`): ``epochs.jsonl``, one row per finished epoch
(the last with the network's measured inference latency and throughput), and
at the end ``model.pt`` (the trained network, see ``prnas.model_file``). An
existing folder is refused without ``--resume``.

Flags, streams and exit codes follow :mod:`prnas.cli`: each epoch's JSON row on
stdout, its human line on stderr (``--quiet`` drops it, ``--verbose`` adds a
per-batch bar).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from prnas import cli
from prnas._io import check_output_dir
from prnas.filenames import CHECKPOINT_FILE, CONFIG_FILE, GENOTYPE_FILE, MODEL_FILE
from prnas.presets import load_genotype
from prnas.retrain.config import ConfigError, RetrainConfig, load_config
from prnas.retrain.genotypes import ref_for
from prnas.retrain.run_files import folder_run
from prnas.retrain.schedule import headline_rule, short_run_warning
from prnas.retrain.trainer import Retrainer, log_line
from prnas.runtime import checkpoint
from prnas.runtime.checkpoint import CheckpointError
from prnas.runtime.device import configure_threads
from prnas.runtime.guards import TrainingDiverged
from prnas.runtime.lock import LOCK_NAME, FolderLock, FolderLocked, folder_entries
from prnas.runtime.progress_log import ProgressLog
from prnas.space.genotype import Genotype


def _parser() -> argparse.ArgumentParser:
    p = cli.parser("python -m prnas.retrain", __doc__)
    cli.add_config(p, "the paper's protocol")
    p.add_argument("--genotype", help="preset name (e.g. prdarts-dl2) or genotype JSON path")
    cli.add_out(p)
    cli.add_resume(p)
    p.add_argument("--epochs", type=int, help="override epochs (the cosine schedule follows)")
    cli.add_data(p)
    cli.add_seed(p)
    cli.add_device(p)
    cli.add_verbosity(p)
    return p


def parse_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return cli.overrides(args, ("epochs",))


def _prepare(args: argparse.Namespace) -> tuple[RetrainConfig, Genotype, Path | None, str]:
    """(config, genotype, checkpoint to restore or None, the genotype's kind: searched,
    random or preset), refusing unsafe combinations."""
    out = Path(args.out)
    check_output_dir(out, "--out")
    overrides = parse_overrides(args)
    if args.resume:
        ckpt = out / CHECKPOINT_FILE
        if ckpt.is_file():
            checkpoint.load(ckpt, kind="retrain")  # a search folder is refused here, in a line
        if not (out / CONFIG_FILE).is_file() or not (out / GENOTYPE_FILE).is_file():
            raise ConfigError(f"--resume: {out} holds no retrain ({CONFIG_FILE}, "
                              f"{GENOTYPE_FILE} missing)")
        # The stored files define the run; a --config/--genotype given anyway must agree,
        # which Retrainer.load_state_dict checks field by field.
        cfg = load_config(args.config or out / CONFIG_FILE, overrides)
        genotype = load_genotype(args.genotype) if args.genotype else Genotype.load(
            out / GENOTYPE_FILE)
        return cfg, genotype, ckpt if ckpt.is_file() else None, "searched"
    if folder_entries(out):
        raise ConfigError(f"{out} already exists; pass --resume to continue it, or choose "
                          "another --out (results are never overwritten)")
    if not args.genotype:
        raise ConfigError("--genotype is required (a preset name or a genotype JSON path)")
    return (load_config(args.config, overrides), load_genotype(args.genotype), None,
            ref_for(args.genotype).kind)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Path(args.out)
    lock = FolderLock(out / LOCK_NAME, what=f"--out {out}")
    try:
        if args.resume and out.is_dir():
            lock.acquire()  # before reading: the checkpoint must not move under us
        cfg, genotype, ckpt, kind = _prepare(args)
    except (ConfigError, CheckpointError, FolderLocked, ValueError, FileNotFoundError) as err:
        lock.release()
        return cli.error(str(err))
    configure_threads()
    # -v: a tqdm bar per epoch; default: epoch lines, and one within an epoch that runs long.
    trainer = Retrainer(cfg, genotype, progress=args.verbosity >= 2,
                        log=ProgressLog(cli.progress, every_epoch=True)
                        if args.verbosity == 1 else None)
    try:
        trainer.setup()
        if ckpt is not None:
            trainer.restore(ckpt)
        if not lock.held:
            lock.acquire()
            if folder_entries(out):  # another run started here meanwhile
                raise ConfigError(f"{out} already exists; pass --resume to continue it")
    except (ConfigError, FolderLocked, FileNotFoundError, ValueError) as err:
        lock.release()
        prefix = f"cannot resume {out}: " if ckpt is not None else ""
        return cli.error(f"{prefix}{err}")
    with lock:
        return _train(trainer, cfg, genotype, out, resumed=ckpt is not None,
                      verbosity=args.verbosity, kind=kind)


def _train(trainer: Retrainer, cfg: RetrainConfig, genotype: Genotype, out: Path,
           resumed: bool, verbosity: int = 1, kind: str = "searched") -> int:
    try:
        files = folder_run(out, cfg, genotype, trainer.info.name, kind)
        if resumed:
            cli.progress(f"resumed {out} after epoch {trainer.epoch}")
        cli.progress(f"retraining {genotype.name}: {trainer.params:,} params, "
                     f"{trainer.info.name}, {cfg.epochs} epochs, device {trainer.device}")
        if warning := short_run_warning(cfg.epochs, cfg.report_last):
            cli.progress(warning)
        row = None
        while not trainer.done:
            row = files.epoch(trainer)
            trainer.save(out / CHECKPOINT_FILE)
            cli.result(json.dumps(row))
            if trainer.log is not None:
                trainer.log.epoch(log_line(row))
            elif verbosity >= 2:
                cli.progress(log_line(row))
    except KeyboardInterrupt:
        cli.progress(f"interrupted after epoch {trainer.epoch}; continue with --resume")
        return cli.EXIT_INTERRUPTED
    except (TrainingDiverged, OSError) as err:  # divergence, disk full, folder removed
        return cli.training_failed(err, out)
    last = trainer.history[-1]
    cli.progress(f"final test error ({headline_rule(cfg.epochs, cfg.report_last)}): "
                 f"{trainer.final_test_error():.2f}%; last epoch's test accuracy "
                 f"{last['test_acc']:.2f}%; model -> {out / MODEL_FILE}")
    if row is not None:  # measured at the end of this run's last epoch
        cli.progress(f"cost: {trainer.params:,} params, {trainer.macs:,} MACs, "
                     f"{row['latency_ms_b1']:.2f} ms at batch 1, {row['throughput_b64']:.0f} "
                     f"images/s at batch 64 ({row['cost_device']}, {row['cost_threads']} "
                     "threads)")
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
