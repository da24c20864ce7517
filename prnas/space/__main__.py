"""``python -m prnas.space count|size``: the space's numbers, as one JSON object."""

from __future__ import annotations

import argparse
import json
import sys

from pydantic import ValidationError

from prnas.space.constraints import PRESETS, Constraints, preset
from prnas.space.counting import reachable, search_space_size

_FIELDS = ("kernel_min", "kernel_max", "dilation_min", "dilation_max", "max_depth", "max_width")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m prnas.space", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("count", help="conv configurations reachable from conv_k3_d1")
    c.add_argument("--preset", choices=sorted(PRESETS), help="Table II constraints to start from")
    for f in _FIELDS:
        c.add_argument("--" + f.replace("_", "-"), type=int, dest=f)
    c.add_argument("--steps", type=int, default=5, help="morphing steps (default 5)")
    c.add_argument("--paper-counting", action="store_true",
                   help="count 1x1 kernels with dilation 2 as distinct (reproduces Table II)")
    c.add_argument("--list", action="store_true", help="also print the reachable op strings")
    s = sub.add_parser("size", help="cell search-space size for K ops per edge")
    s.add_argument("--ops", type=int, required=True, help="candidate ops per edge (K)")
    s.add_argument("--nodes", type=int, default=4, help="intermediate nodes per cell (M)")
    return p


def _constraints(args: argparse.Namespace) -> Constraints:
    overrides = {f: getattr(args, f) for f in _FIELDS if getattr(args, f) is not None}
    if args.preset:
        return preset(args.preset).with_overrides(**overrides)
    # Without a preset, omitted depth/width mean unlimited, omitted bounds take defaults.
    return Constraints.model_validate({"max_depth": None, "max_width": None, **overrides})


def _one_line(err: ValueError) -> str:
    """One line naming the field and the problem, not pydantic's multi-line dump."""
    if not isinstance(err, ValidationError):
        return " ".join(str(err).split())
    parts = []
    for e in err.errors(include_url=False):
        msg = e["msg"].removeprefix("Value error, ")
        if e["loc"]:
            field = ".".join(map(str, e["loc"]))
            parts.append(f"{field}: {msg} (got {e.get('input')!r})")
        else:
            parts.append(msg)
    return "invalid constraints: " + "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "count":
            c = _constraints(args)
            ops = reachable(c, args.steps, paper_counting=args.paper_counting)
            out = {
                "count": len(ops),
                "steps": args.steps,
                "paper_counting": args.paper_counting,
                "preset": args.preset,
                "constraints": c.model_dump(),
            }
            if args.list:
                out["ops"] = ops
        else:
            out = {"size": search_space_size(args.ops, args.nodes), "ops": args.ops,
                   "nodes": args.nodes}
    except ValueError as err:  # pydantic's ValidationError is a ValueError too
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
