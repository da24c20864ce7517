"""``python -m prnas.space count|size|sample``: the space's numbers, as one JSON object.

``sample`` draws random cells from a space (the search's baseline, see
``prnas.space.sampling``): with ``--out DIR`` one ``prnas-genotype/1`` file per
cell and a JSON object listing them, without it one genotype per line.
"""

from __future__ import annotations

import argparse
import json
import sys

from pydantic import ValidationError

from prnas import cli
from prnas.config_io import format_validation_error
from prnas.space.constraints import PRESETS, Constraints, preset
from prnas.space.counting import reachable, search_space_size
from prnas.space.sampling import MAX_CELLS, PAPER_MORPH_ROUNDS, SampleSpec, sample_genotypes

_FIELDS = ("kernel_min", "kernel_max", "dilation_min", "dilation_max", "max_depth", "max_width")


def _parser() -> argparse.ArgumentParser:
    p = cli.parser("python -m prnas.space", __doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("count", allow_abbrev=False,
                       help="conv configurations reachable from conv_k3_d1")
    c.add_argument("--preset", choices=sorted(PRESETS), help="Table II constraints to start from")
    for f in _FIELDS:
        c.add_argument("--" + f.replace("_", "-"), type=int, dest=f)
    c.add_argument("--steps", type=int, default=5, help="morphing steps (default 5)")
    cli.add_counting(c)
    c.add_argument("--list", action="store_true", help="also print the reachable op strings")
    s = sub.add_parser("size", allow_abbrev=False, help="cell search-space size for K ops per edge")
    s.add_argument("--ops", type=int, required=True, help="candidate ops per edge (K)")
    s.add_argument("--nodes", type=int, default=4, help="intermediate nodes per cell (M)")
    r = sub.add_parser("sample", allow_abbrev=False,
                       help="random cells from the cells a search can produce")
    r.add_argument("--space", required=True, type=str.upper, choices=sorted(PRESETS),
                   help="constraint preset the search ran in")
    r.add_argument("--count", type=int, required=True, help="number of cells")
    r.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    r.add_argument("--steps", type=int, default=PAPER_MORPH_ROUNDS,
                   help="morph rounds of the search's schedule: cycles that add morphisms "
                   f"(default {PAPER_MORPH_ROUNDS}, the paper's Table I)")
    r.add_argument("--nodes", type=int, default=4, help="intermediate nodes per cell (M)")
    r.add_argument("--out", help="folder for one <name>.json per cell (default: JSON lines "
                   "on stdout); existing files are never overwritten")
    return p


def _constraints(args: argparse.Namespace) -> Constraints:
    overrides = {f: getattr(args, f) for f in _FIELDS if getattr(args, f) is not None}
    if args.preset:
        return preset(args.preset).with_overrides(**overrides)
    # Without a preset, omitted depth/width mean unlimited, omitted bounds take defaults.
    return Constraints.model_validate({"max_depth": None, "max_width": None, **overrides})


def _sample(args: argparse.Namespace) -> int:
    if not 1 <= args.count <= MAX_CELLS:
        raise ValueError(f"--count must be in 1..{MAX_CELLS:,} (the cells are held in "
                         f"memory), got {args.count:,}")
    spec = SampleSpec(args.space, preset(args.space), args.steps, args.nodes)
    genotypes = sample_genotypes(spec, args.count, args.seed)
    if args.out is None:
        for g in genotypes:
            print(json.dumps(g.to_dict()))
        return 0
    from pathlib import Path

    out = Path(args.out)
    paths = [out / f"{g.name}.json" for g in genotypes]
    taken = [str(p) for p in paths if p.exists()]
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file")
    if taken:
        raise ValueError(f"--out: {', '.join(taken)} exist(s); choose another --out or --seed "
                         "(cells are never overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    for g, p in zip(genotypes, paths):
        g.save(p)
    print(json.dumps({"written": [str(p) for p in paths], "space": args.space,
                      "steps": args.steps, "seed": args.seed, "count": args.count}))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "count":
            c = _constraints(args)
            paper = args.counting == "paper"
            ops = reachable(c, args.steps, paper_counting=paper)
            out = {
                "count": len(ops),
                "steps": args.steps,
                "paper_counting": paper,
                "preset": args.preset,
                "constraints": c.model_dump(),
            }
            if args.list:
                out["ops"] = ops
        elif args.cmd == "sample":
            return _sample(args)
        else:
            out = {"size": search_space_size(args.ops, args.nodes), "ops": args.ops,
                   "nodes": args.nodes}
    except ValidationError as err:
        return cli.error(format_validation_error(err, Constraints))
    except ValueError as err:
        return cli.error(" ".join(str(err).split()))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
