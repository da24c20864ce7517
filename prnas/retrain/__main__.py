"""``python -m prnas.retrain``: retrain one genotype in-process, resumable, without Ray.

The output folder holds everything needed to continue or inspect the run:
``config.yaml`` and ``genotype.json`` (as started), ``checkpoint.pt`` (after
every epoch), ``metrics.jsonl`` (one JSON object per finished epoch, rewritten
atomically from the checkpointed history so it never disagrees with it) and,
at the end, ``model.pt`` (the trained network, see ``prnas.model_file``) and
``result.json`` (with the network's MACs and measured inference latency and
throughput). An existing folder is refused without ``--resume``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from prnas._io import atomic_write_text, check_output_dir
from prnas.config_io import parse_set_args
from prnas.presets import load_genotype
from prnas.retrain.config import ConfigError, RetrainConfig, dump_config, load_config
from prnas.retrain.trainer import Retrainer, log_line
from prnas.runtime import checkpoint
from prnas.runtime.checkpoint import CheckpointError
from prnas.runtime.device import configure_threads
from prnas.runtime.guards import TrainingDiverged
from prnas.runtime.lock import LOCK_NAME, FolderLock, FolderLocked, folder_entries
from prnas.space.genotype import Genotype

CONFIG, GENOTYPE, CHECKPOINT, METRICS, RESULT, MODEL = (
    "config.yaml", "genotype.json", "checkpoint.pt", "metrics.jsonl", "result.json", "model.pt")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m prnas.retrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="retrain YAML (default: the paper's protocol)")
    p.add_argument("--genotype", help="preset name (e.g. prdarts-dl2) or genotype JSON path")
    p.add_argument("--out", required=True, help="output folder (refused if it exists)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint")
    p.add_argument("--epochs", type=int, help="override epochs (the cosine schedule follows)")
    p.add_argument("--seed", type=int, help="override seed")
    p.add_argument("--device", help="override device: auto, cpu, cuda, cuda:N")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any field by dotted name, value parsed as YAML "
                        "(e.g. --set data.dataset=demo --set channels=16)")
    p.add_argument("--no-progress", action="store_true", help="no per-batch progress bar")
    return p


def parse_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out = parse_set_args(args.set)
    for key in ("epochs", "seed", "device"):
        if getattr(args, key) is not None:
            out[key] = getattr(args, key)
    return out


def _prepare(args: argparse.Namespace) -> tuple[RetrainConfig, Genotype, Path | None]:
    """(config, genotype, checkpoint to restore or None), refusing unsafe combinations."""
    out = Path(args.out)
    check_output_dir(out, "--out")
    overrides = parse_overrides(args)
    if args.resume:
        ckpt = out / CHECKPOINT
        if ckpt.is_file():
            checkpoint.load(ckpt, kind="retrain")  # a search folder is refused here, in a line
        if not (out / CONFIG).is_file() or not (out / GENOTYPE).is_file():
            raise ConfigError(f"--resume: {out} holds no retrain ({CONFIG}, {GENOTYPE} missing)")
        # The stored files define the run; a --config/--genotype given anyway must agree,
        # which Retrainer.load_state_dict checks field by field.
        cfg = load_config(args.config or out / CONFIG, overrides)
        genotype = load_genotype(args.genotype) if args.genotype else Genotype.load(
            out / GENOTYPE)
        return cfg, genotype, ckpt if ckpt.is_file() else None
    if folder_entries(out):
        raise ConfigError(f"{out} already exists; pass --resume to continue it, or choose "
                          "another --out (results are never overwritten)")
    if not args.genotype:
        raise ConfigError("--genotype is required (a preset name or a genotype JSON path)")
    return load_config(args.config, overrides), load_genotype(args.genotype), None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Path(args.out)
    lock = FolderLock(out / LOCK_NAME, what=f"--out {out}")
    try:
        if args.resume and out.is_dir():
            lock.acquire()  # before reading: the checkpoint must not move under us
        cfg, genotype, ckpt = _prepare(args)
    except (ConfigError, CheckpointError, FolderLocked, ValueError, FileNotFoundError) as err:
        lock.release()
        print(f"error: {err}", file=sys.stderr)
        return 2
    configure_threads()
    trainer = Retrainer(cfg, genotype, progress=not args.no_progress)
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
        print(f"error: {prefix}{err}", file=sys.stderr)
        return 2
    with lock:
        return _train(trainer, cfg, genotype, out, resumed=ckpt is not None)


def _train(trainer: Retrainer, cfg: RetrainConfig, genotype: Genotype, out: Path,
           resumed: bool) -> int:
    try:
        if not (out / CONFIG).is_file():
            atomic_write_text(out / CONFIG, dump_config(cfg))
            genotype.save(out / GENOTYPE)
        if resumed:
            print(f"resumed {out} after epoch {trainer.epoch}", file=sys.stderr)
        print(f"retraining {genotype.name}: {trainer.params:,} params, {trainer.info.name}, "
              f"{cfg.epochs} epochs, device {trainer.device}", file=sys.stderr)
        while not trainer.done:
            row = trainer.train_epoch()
            trainer.save(out / CHECKPOINT)
            atomic_write_text(out / METRICS,
                              "".join(json.dumps(r) + "\n" for r in trainer.history))
            print(json.dumps(row), flush=True)
            print(log_line(row), file=sys.stderr, flush=True)
        if not (out / MODEL).is_file():  # a finished run resumed again keeps its file
            trainer.save_model(out / MODEL)
        timing = trainer.measure_timing()
        result = {"genotype": genotype.name, "params": trainer.params, "epochs": trainer.epoch,
                  "dataset": trainer.info.name, "seed": cfg.seed,
                  "final_test_error": trainer.final_test_error(),
                  "report_last": cfg.report_last,
                  "test_acc": trainer.history[-1]["test_acc"],
                  "test_top5_error": trainer.history[-1]["test_top5_error"],
                  "network": cfg.eval_network, "macs": trainer.macs,
                  **timing.as_dict()}
        atomic_write_text(out / RESULT, json.dumps(result, indent=1) + "\n")
    except KeyboardInterrupt:
        print(f"interrupted after epoch {trainer.epoch}; continue with --resume",
              file=sys.stderr)
        return 130
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # disk full, folder removed: the previous checkpoint stays
        print(f"error: cannot write to {out}: {err.strerror or err}; the last complete "
              "checkpoint is kept, continue with --resume once fixed", file=sys.stderr)
        return 1
    print(f"final test error (mean of last {cfg.report_last} epochs): "
          f"{result['final_test_error']:.2f}%; last epoch's test accuracy "
          f"{result['test_acc']:.2f}%; model -> {out / MODEL}", file=sys.stderr)
    print(f"cost: {trainer.params:,} params, {trainer.macs:,} MACs, "
          f"{timing.latency_ms_b1:.2f} ms at batch 1, {timing.throughput_b64:.0f} images/s "
          f"at batch 64 ({timing.cost_device}, {timing.cost_threads} threads)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
