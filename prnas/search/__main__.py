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

from prnas._io import atomic_write_text
from prnas.config_io import parse_set_args
from prnas.runtime import checkpoint
from prnas.search.config import ConfigError, SearchConfig, load_config

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
    lines = "".join(json.dumps(m) + "\n" for m in search.cycle_log)
    atomic_write_text(out / "metrics.jsonl", lines)
    if search.genotype is not None:
        search.genotype.save(out / "genotype.json")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Path(args.out)
    ckpt = out / CHECKPOINT
    try:
        overrides = _overrides(args)
        if args.resume:
            if not ckpt.is_file():
                raise ConfigError(f"--resume: no checkpoint at {ckpt}; start without --resume")
            state = checkpoint.load(ckpt)
            cfg = SearchConfig.model_validate(state["config"])
            if args.config or overrides:
                print("note: --resume continues with the config stored in the checkpoint",
                      file=sys.stderr)
        else:
            if out.exists() and any(out.iterdir()):
                raise ConfigError(f"{out} exists and is not empty; pass --resume to continue "
                                  "it or choose another --out (nothing is overwritten)")
            cfg = load_config(args.config, overrides)
            state = None
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from prnas.search.engine import Search  # torch import only once the config is valid

    try:
        search = Search(cfg, log=None if args.quiet else lambda m: print(m, flush=True))
    except (FileNotFoundError, RuntimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    if state is not None:
        search.load_state_dict(state)
        print(f"resumed {out}: cycle {search.cycle + 1}, {search.epoch} epochs done", flush=True)
    else:
        atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"),
                                                              sort_keys=False))

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
    genotype = search.run(on_epoch=save, on_cycle=on_cycle,
                          stop_after_cycles=args.stop_after_cycles)
    if genotype is None:
        print(f"stopped after {args.stop_after_cycles} cycle(s); continue with --resume",
              flush=True)
    else:
        write_outputs(out, search)
        print(f"genotype written to {out / 'genotype.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
