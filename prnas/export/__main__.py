"""``python -m prnas.export MODEL --format onnx|torchscript --out FILE``.

MODEL is a ``model.pt``, a retrain's run folder or a Tune trial folder. The
auxiliary head and drop-path are removed, the batch dimension is dynamic, and
the written file is checked against PyTorch on random inputs (onnxruntime on
the CPU for ONNX) before it is put in place; nothing is written if the check
fails. ONNX needs ``pip install -e ".[export]"``. Prints one JSON object
(``out``, ``format``, ``max_abs_diff``, ...) on stdout and a summary line on stderr
(not with -q). Flags, streams and exit codes follow ``prnas/cli.py``: errors are one
line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from prnas import cli
from prnas.export import ExportError, export
from prnas.model_file import ModelFileError, read


def _parser() -> argparse.ArgumentParser:
    p = cli.parser("python -m prnas.export", __doc__)
    p.add_argument("model", metavar="MODEL", help="model.pt, a run folder or a trial folder")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    p.add_argument("--out", required=True, help="file to write (refused if it exists, "
                   "unless --force)")
    p.add_argument("--weights", choices=["final", "best-test-epoch"], default="final")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest absolute logit difference accepted (default 1e-4)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    cli.add_verbosity(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if not args.tolerance >= 0:  # also nan
            raise ExportError(f"--tolerance must be a number >= 0, got {args.tolerance}")
        mf = read(args.model)
        result = export(mf, args.format, args.out, weights=args.weights, opset=args.opset,
                        tolerance=args.tolerance, overwrite=args.force)
    except (ModelFileError, ExportError) as err:
        return cli.error(str(err))
    cli.result(json.dumps({**result.as_dict(), "genotype": mf.genotype.name,
                           "weights": args.weights}))
    if args.verbosity >= 1:
        cli.progress(f"wrote {result.out} ({result.format}, dynamic batch); matches PyTorch "
                     f"on random batches of {' and '.join(map(str, result.batches))}: max "
                     f"|difference| {result.max_abs_diff:.2g} <= {result.tolerance:g}")
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
