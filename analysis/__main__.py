"""``python -m analysis report EXPERIMENT_DIR [RETRAIN_DIR ...] --out DIR [--force]``.

Reads the parquet files of a search experiment (and optionally any number of
retrain experiments, e.g. searched cells and presets retrained separately, which
then join one comparison) and writes figures, tables and an index.html into DIR. Exit code
2 with a one-line error for a folder that is not an experiment, a missing
column, or a non-empty DIR without ``--force``.
"""

from __future__ import annotations

import argparse
import sys

from analysis.cells import ENGINES
from prnas import cli


def _parser() -> argparse.ArgumentParser:
    p = cli.parser("python -m analysis", __doc__)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("report", allow_abbrev=False,
                       help="figures, tables and an HTML page for one experiment")
    r.add_argument("experiment", help="search experiment folder (holds results.parquet)")
    r.add_argument("retrain", nargs="*",
                   help="retrain experiment folders (each holds retrain.parquet)")
    r.add_argument("--out", required=True, help="report folder (refused if not empty)")
    r.add_argument("--force", action="store_true",
                   help="replace an earlier report in --out: deletes only the files it listed in "
                   "its manifest (.prnas-report.json), never others")
    r.add_argument("--trial", action="append", default=[], metavar="ID",
                   help="only these trials get figures (repeatable; default: all)")
    r.add_argument("--lineage", metavar="CELL:EDGE",
                   help="edge whose lineage is shown, e.g. normal:3 (default: per trial the "
                   "normal edge that saw the most ops)")
    r.add_argument("--cells", choices=ENGINES, default="auto",
                   help="cell diagram renderer: Graphviz dot, matplotlib, or dot when installed")
    cli.add_counting(r)
    r.add_argument("--report-last", type=int, default=5, metavar="N",
                   help="retrain error = mean test error of the last N epochs (paper: 5); a "
                   "run of at most N epochs reports its last epoch")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from analysis.loaders import ExperimentError
    from analysis.report import OutputExists, build_report

    try:
        index = build_report(args.experiment, args.retrain or None, args.out, force=args.force,
                             cell_engine=args.cells,
                             paper_counting=args.counting == "paper", trials=args.trial,
                             lineage_edge=args.lineage, report_last=args.report_last)
    except (ExperimentError, OutputExists, ValueError) as err:
        return cli.error(str(err))
    cli.result(f"report written to {index}")
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
