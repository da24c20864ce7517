"""``python -m prnas.search --config FILE --out DIR [--resume] [--stop-after-cycles N]``.

The in-process search, without Ray: the reference for what a Tune trial does,
and the way to debug or time a search. DIR gets ``checkpoint.pt`` (after every
epoch, atomically), ``metrics.jsonl`` (one line per finished cycle),
``config.yaml`` and, at the end, ``genotype.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml
from pydantic import ValidationError

from prnas._io import atomic_write_text, check_output_dir
from prnas.config_io import parse_set_args
from prnas.runtime import checkpoint
from prnas.runtime.checkpoint import CheckpointError
from prnas.runtime.guards import TrainingDiverged
from prnas.runtime.lock import LOCK_NAME, FolderLock, FolderLocked, folder_entries
from prnas.search.config import ConfigError, SearchConfig, load_config
from prnas.search.policy import cycle_to_json

CHECKPOINT = "checkpoint.pt"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m prnas.search", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML search config (default: the paper's DL search)")
    p.add_argument("--out", required=True, help="output folder (refused if it exists, "
                   "unless --resume)")
    p.add_argument("--resume", action="store_true", help="continue the search in --out")
    p.add_argument("--stop-after-cycles", type=int, metavar="N",
                   help="stop cleanly after N more cycles (checkpoint kept)")
    p.add_argument("--data-dir", help="dataset folder (overrides data.data_dir)")
    p.add_argument("--download", action="store_true",
                   help="download CIFAR into the data folder if missing (needs internet)")
    p.add_argument("--seed", type=int, help="overrides seed")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N (overrides device)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field by dotted name, value parsed as YAML "
                        "(e.g. --set network.channels=8 --set steps_per_epoch=10)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    return p


def _overrides(args: argparse.Namespace) -> dict:
    o: dict = parse_set_args(args.set)
    if args.data_dir or args.download:
        o["data"] = {k: v for k, v in (("data_dir", args.data_dir),
                                       ("download", args.download or None)) if v}
    if args.seed is not None:
        o["seed"] = args.seed
    if args.device:
        o["device"] = args.device
    return o


def write_outputs(out: Path, search) -> None:
    """Everything derived from the state is rewritten from it, so files never disagree."""
    lines = "".join(json.dumps(cycle_to_json(m)) + "\n" for m in search.cycle_log)
    atomic_write_text(out / "metrics.jsonl", lines)
    if search.genotype is not None:
        search.genotype.save(out / "genotype.json")


def _resume(out: Path) -> tuple[SearchConfig, dict | None]:
    """(config, checkpoint state) to continue; a folder killed in its first epoch has only
    its ``config.yaml`` and starts again from epoch 0 under it (state None)."""
    ckpt = out / CHECKPOINT
    if ckpt.is_file():
        state = checkpoint.load(ckpt, kind="search")
        try:
            return SearchConfig.model_validate(state["config"]), state
        except (KeyError, ValidationError) as err:
            raise CheckpointError(f"checkpoint {ckpt} holds no valid search config "
                                  f"({type(err).__name__})") from None
    if (out / "config.yaml").is_file():
        if (out / "genotype.json").is_file():
            raise ConfigError(f"--resume: {out} holds a retrain (config.yaml, genotype.json), "
                              "not a search; resume it with python -m prnas.retrain")
        print(f"note: {out} has no checkpoint yet (stopped during the first epoch); "
              "starting it again from epoch 0 with its config.yaml", file=sys.stderr)
        return load_config(out / "config.yaml"), None
    raise ConfigError(f"--resume: no checkpoint at {ckpt}; start without --resume")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Path(args.out)
    lock = FolderLock(out / LOCK_NAME, what=f"--out {out}")
    try:
        if args.stop_after_cycles is not None and args.stop_after_cycles < 1:
            raise ConfigError(f"--stop-after-cycles must be >= 1, got {args.stop_after_cycles}")
        check_output_dir(out, "--out")
        overrides = _overrides(args)
        if args.resume:
            if not out.is_dir():
                raise ConfigError(f"--resume: {out} does not exist; start without --resume")
            lock.acquire()  # before reading: the checkpoint must not move under us
            cfg, state = _resume(out)
            if args.config or overrides:
                print("note: --resume continues with the config stored in the checkpoint",
                      file=sys.stderr)
        else:
            _refuse_non_empty(out)
            cfg = load_config(args.config, overrides)
            state = None
    except (ConfigError, CheckpointError, FolderLocked, ValueError) as err:
        lock.release()
        print(f"error: {err}", file=sys.stderr)
        return 2

    from prnas.search.engine import Search  # torch import only once the config is valid

    try:
        search = Search(cfg, log=None if args.quiet else lambda m: print(m, flush=True))
        if state is not None:
            search.load_state_dict(state)
    except (FileNotFoundError, RuntimeError, ValueError, KeyError) as err:
        lock.release()
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        if not lock.held:
            lock.acquire()
            _refuse_non_empty(out)  # another run may have started here meanwhile
    except (ConfigError, FolderLocked) as err:
        lock.release()
        print(f"error: {err}", file=sys.stderr)
        return 2
    with lock:
        return _run(search, out, state, args.stop_after_cycles)


def _refuse_non_empty(out: Path) -> None:
    if folder_entries(out):
        raise ConfigError(f"{out} exists and is not empty; pass --resume to continue "
                          "it or choose another --out (nothing is overwritten)")


def _run(search, out: Path, state: dict | None, stop_after_cycles: int | None) -> int:
    ckpt = out / CHECKPOINT
    if state is not None:
        print(f"resumed {out}: cycle {search.cycle + 1}, {search.epoch} epochs done", flush=True)
    elif not (out / "config.yaml").is_file():
        atomic_write_text(out / "config.yaml", yaml.safe_dump(
            search.cfg.model_dump(mode="json"), sort_keys=False))

    def save(s, *_):
        checkpoint.save_atomic(s.state_dict(), ckpt)

    def on_cycle(s):
        save(s)
        write_outputs(out, s)
        last = s.cycle_log[-1]
        print(f"cycle {last['cycle']} done: valid acc {last['valid_acc']:.3f}, "
              f"{last['cycle_time_s']:.1f}s", flush=True)

    if search.finished:
        print("search already finished", flush=True)
    try:
        genotype = search.run(on_epoch=save, on_cycle=on_cycle,
                              stop_after_cycles=stop_after_cycles)
    except TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # disk full, folder removed: the previous checkpoint stays
        print(f"error: cannot write to {out}: {err.strerror or err}; the last complete "
              "checkpoint is kept, continue with --resume once fixed", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        return 130
    if genotype is None:
        print(f"stopped after {stop_after_cycles} cycle(s); continue with --resume",
              flush=True)
    else:
        write_outputs(out, search)
        print(f"genotype written to {out / 'genotype.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
