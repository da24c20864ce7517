"""``python -m prnas.search --config FILE --out DIR [--resume] [--stop-after-cycles N]``.

Flags, streams and exit codes follow :mod:`prnas.cli`: per-epoch and per-cycle
lines on stderr (``--quiet`` drops them), the path of the genotype on stdout.

The in-process search, without Ray: the reference for what a Tune trial does,
and the way to debug or time a search. DIR gets ``checkpoint.pt`` (after every
epoch, atomically), ``config.yaml`` and a search trial's own files:
``cycles.jsonl`` (one line per finished cycle, the cycle record's JSON form)
and, at the end, ``genotype.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml
from pydantic import ValidationError

from prnas import cli
from prnas._io import atomic_write_text, check_output_dir
from prnas.filenames import CHECKPOINT_FILE, CONFIG_FILE, CYCLES_FILE, GENOTYPE_FILE
from prnas.runtime import checkpoint
from prnas.runtime.checkpoint import CheckpointError
from prnas.runtime.guards import TrainingDiverged
from prnas.runtime.lock import LOCK_NAME, FolderLock, FolderLocked, folder_entries
from prnas.search.alpha_signal import noise_warning, signal_text
from prnas.search.config import ConfigError, SearchConfig, load_config


def _parser() -> argparse.ArgumentParser:
    p = cli.parser("python -m prnas.search", __doc__)
    cli.add_config(p, "the paper's DL search")
    cli.add_out(p)
    cli.add_resume(p, "the search in --out")
    p.add_argument("--stop-after-cycles", type=int, metavar="N",
                   help="stop cleanly after N more cycles (checkpoint kept)")
    cli.add_data(p)
    cli.add_seed(p)
    cli.add_device(p)
    cli.add_verbosity(p)
    return p


def write_outputs(out: Path, search) -> None:
    """Everything derived from the state is rewritten from it, so files never disagree."""
    lines = "".join(json.dumps(m.to_json()) + "\n" for m in search.cycle_log)
    atomic_write_text(out / CYCLES_FILE, lines)
    if search.genotype is not None:
        search.genotype.save(out / GENOTYPE_FILE)


def _resume(out: Path) -> tuple[SearchConfig, dict | None]:
    """(config, checkpoint state) to continue; a folder killed in its first epoch has only
    its ``config.yaml`` and starts again from epoch 0 under it (state None)."""
    ckpt = out / CHECKPOINT_FILE
    if ckpt.is_file():
        state = checkpoint.load(ckpt, kind="search")
        try:
            return SearchConfig.model_validate(state["config"]), state
        except (KeyError, ValidationError) as err:
            raise CheckpointError(f"checkpoint {ckpt} holds no valid search config "
                                  f"({type(err).__name__})") from None
    if (out / CONFIG_FILE).is_file():
        if (out / GENOTYPE_FILE).is_file():
            raise ConfigError(f"--resume: {out} holds a retrain (config.yaml, genotype.json), "
                              "not a search; resume it with python -m prnas.retrain")
        cli.progress(f"note: {out} has no checkpoint yet (stopped during the first epoch); "
                     "starting it again from epoch 0 with its config.yaml")
        return load_config(out / CONFIG_FILE), None
    raise ConfigError(f"--resume: no checkpoint at {ckpt}; start without --resume")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Path(args.out)
    lock = FolderLock(out / LOCK_NAME, what=f"--out {out}")
    try:
        if args.stop_after_cycles is not None and args.stop_after_cycles < 1:
            raise ConfigError(f"--stop-after-cycles must be >= 1, got {args.stop_after_cycles}")
        check_output_dir(out, "--out")
        overrides = cli.overrides(args)
        if args.resume:
            if not out.is_dir():
                raise ConfigError(f"--resume: {out} does not exist; start without --resume")
            lock.acquire()  # before reading: the checkpoint must not move under us
            cfg, state = _resume(out)
            if args.config or overrides:
                cli.progress("note: --resume continues with the config stored in the "
                             "checkpoint")
        else:
            _refuse_non_empty(out)
            cfg = load_config(args.config, overrides)
            state = None
            if cfg.population.enabled:
                raise ConfigError("population: the seeds of a population decide together, "
                                  "so it runs in the Tune job (tune_jobs/run_search.py "
                                  "--num-samples N), not in one in-process search")
    except (ConfigError, CheckpointError, FolderLocked, ValueError) as err:
        lock.release()
        return cli.error(str(err))

    from prnas.runtime.progress_log import ProgressLog
    from prnas.search.engine import Search  # torch import only once the config is valid

    try:
        search = Search(cfg, log=ProgressLog(cli.progress, every_epoch=True)
                        if args.verbosity >= 1 else None)
        if state is not None:
            search.load_state_dict(state)
    except (FileNotFoundError, RuntimeError, ValueError, KeyError) as err:
        lock.release()
        return cli.error(str(err))
    try:
        if not lock.held:
            lock.acquire()
            _refuse_non_empty(out)  # another run may have started here meanwhile
    except (ConfigError, FolderLocked) as err:
        lock.release()
        return cli.error(str(err))
    with lock:
        return _run(search, out, state, args.stop_after_cycles, args.verbosity)


def _refuse_non_empty(out: Path) -> None:
    if folder_entries(out):
        raise ConfigError(f"{out} exists and is not empty; pass --resume to continue "
                          "it or choose another --out (nothing is overwritten)")


def _run(search, out: Path, state: dict | None, stop_after_cycles: int | None,
         verbosity: int = 1) -> int:
    ckpt = out / CHECKPOINT_FILE
    if state is not None:
        cli.progress(f"resumed {out}: cycle {search.cycle + 1}, {search.epoch} epochs done")
    elif not (out / CONFIG_FILE).is_file():
        atomic_write_text(out / CONFIG_FILE, yaml.safe_dump(
            search.cfg.model_dump(mode="json"), sort_keys=False))
    if not search.finished and verbosity >= 1:
        cfg = search.cfg
        cli.progress(f"searching {cfg.space if isinstance(cfg.space, str) else 'custom'} "
                     f"on {search.info.name} ({search.info.train_size} train images), "
                     f"{search.num_cycles} cycles, device {search.device}, into {out}")

    def save(s, *_):
        checkpoint.save_atomic(s.state_dict(), ckpt)

    def on_cycle(s):
        save(s)
        write_outputs(out, s)
        last = s.cycle_log[-1]  # one line per cycle at every verbosity, --quiet included
        cli.progress(f"cycle {last['cycle']} done: valid acc {last['valid_acc']:.3f}, "
                     f"{signal_text(last)}, {last['cycle_time_s']:.1f}s")
        warning = noise_warning(last)
        if warning:
            cli.progress(warning)

    if search.finished:
        cli.progress("search already finished")
    try:
        genotype = search.run(on_epoch=save, on_cycle=on_cycle,
                              stop_after_cycles=stop_after_cycles)
    except (TrainingDiverged, OSError) as err:  # divergence, disk full, folder removed
        return cli.training_failed(err, out)
    except KeyboardInterrupt:
        cli.progress("interrupted; continue with --resume")
        return cli.EXIT_INTERRUPTED
    if genotype is None:
        cli.progress(f"stopped after {stop_after_cycles} cycle(s); continue with --resume")
    else:
        write_outputs(out, search)
        cli.result(f"genotype written to {out / GENOTYPE_FILE}")
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
