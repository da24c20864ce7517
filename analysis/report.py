"""One folder with every figure (PNG + SVG), every table (CSV + Markdown) and an index.html.

The page only links files inside the folder (relative paths, inline CSS, no
scripts), so the folder can be zipped, mailed or served as it is.
"""

from __future__ import annotations

import html
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis import cells, figures, lineage, loaders, tables
from prnas.space.genotype import Genotype

FIGURES, TABLES, INDEX = "figures", "tables", "index.html"
CSS = """
body { font-family: -apple-system, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; }
h1, h2, h3 { font-weight: 600; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; font-size: 13px; margin: .5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } img { max-width: 100%; border: 1px solid #eee; }
.cells { display: flex; gap: 1em; flex-wrap: wrap; } .cells figure { margin: 0; flex: 1; }
.files { font-size: 12px; color: #555; } code { font-size: 12px; }
"""


class OutputExists(ValueError):
    """--out holds files and --force was not given."""


@dataclass
class _Page:
    parts: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.parts.append(text)

    def heading(self, level: int, text: str) -> None:
        self.add(f"<h{level}>{html.escape(text)}</h{level}>")

    def para(self, text: str) -> None:
        self.add(f"<p>{html.escape(text)}</p>")

    def table(self, shown: pd.DataFrame, files: Sequence[Path], out: Path) -> None:
        self.add(shown.to_html(index=False, escape=True, na_rep="–", border=0))
        self.files(files, out)

    def files(self, files: Sequence[Path], out: Path) -> None:
        links = " · ".join(f'<a href="{_rel(p, out)}">{html.escape(p.suffix[1:].upper())}</a>'
                           for p in files)
        self.add(f'<p class="files">{links}</p>')

    def figure(self, paths: Sequence[Path], out: Path, caption: str = "") -> str:
        png = next(p for p in paths if p.suffix == ".png")
        others = [p for p in paths if p.suffix != ".png"]
        alt = html.escape(caption or png.stem)
        text = f'<figure><a href="{_rel(png, out)}"><img src="{_rel(png, out)}" alt="{alt}"></a>'
        text += f"<figcaption>{html.escape(caption)} "
        text += " ".join(f'<a href="{_rel(p, out)}">{p.suffix[1:].upper()}</a>' for p in others)
        return text + "</figcaption></figure>"

    def render(self, title: str) -> str:
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
                + "\n".join(self.parts) + "\n</body></html>\n")


def _rel(path: Path, out: Path) -> str:
    return html.escape(path.relative_to(out).as_posix(), quote=True)


def slug(text: str) -> str:
    """A file-name-safe version of an experiment or trial name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def prepare_out(out: Path, force: bool) -> None:
    """Refuse a non-empty ``out`` unless ``force``; with it, clear what an earlier report wrote.

    Only ``figures/``, ``tables/`` and ``index.html`` are removed, never other files,
    so pointing ``--out`` at a busy folder by mistake cannot wipe it.
    """
    if out.exists() and not out.is_dir():
        raise OutputExists(f"--out {out} is a file")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise OutputExists(f"--out {out} is not empty; pass --force to replace the report "
                               "in it, or choose another folder")
        for name in (FIGURES, TABLES):
            shutil.rmtree(out / name, ignore_errors=True)
        (out / INDEX).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def write_table(numeric: pd.DataFrame, shown: pd.DataFrame, stem: Path) -> list[Path]:
    """CSV of the numeric frame (for pandas), Markdown of the formatted one (for people)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv, md = stem.with_suffix(".csv"), stem.with_suffix(".md")
    numeric.to_csv(csv, index=False)
    md.write_text(tables.to_markdown(shown))
    return [csv, md]


def _parse_edge(text: str | None) -> tuple[str, int] | None:
    if text is None:
        return None
    m = re.fullmatch(r"(normal|reduce):(\d+)", text)
    if m is None:
        raise ValueError(f"--lineage must look like normal:3 or reduce:0, got {text!r}")
    return m.group(1), int(m.group(2))


def build_report(experiment: str | os.PathLike, retrain: str | os.PathLike | None,
                 out: str | os.PathLike, *, force: bool = False, cell_engine: str = "auto",
                 paper_counting: bool = True, trials: Sequence[str] = (),
                 lineage_edge: str | None = None, report_last: int = 5) -> Path:
    """Write the whole report; returns the path of ``index.html``.

    Inputs are read (and any error raised) before ``out`` is created or cleared.
    """
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not force:
        prepare_out(out, force)  # raises
    edge_choice = _parse_edge(lineage_edge)
    results = loaders.load_results(experiment)
    retrain_df = loaders.load_retrain(retrain) if retrain is not None else None
    keys = loaders.trial_keys(results)
    if trials:
        keys = [k for k in keys if k[1] in trials or f"{k[0]}/{k[1]}" in trials]
        if not keys:
            raise loaders.ExperimentError(f"none of the trials {', '.join(trials)} is in "
                                          f"{experiment}")
    prepare_out(out, force)
    fig_dir, tab_dir = out / FIGURES, out / TABLES
    page = _Page()
    exp_name = results["experiment"].iloc[0] if len(results) else str(experiment)
    page.heading(1, f"PR-DARTS search report: {exp_name}")
    page.para(f"Search experiment: {Path(experiment).resolve()}"
              + (f"; retrain experiment: {Path(retrain).resolve()}" if retrain else ""))

    search = tables.search_table(results, paper_counting=paper_counting)
    summary = tables.search_summary(search)
    page.heading(2, "Across seeds")
    page.para("Mean ± sample standard deviation over the trials of each space. "
              "#ops: distinct ops that entered any normal-cell pool / skip + 2 poolings + the "
              "convs reachable within the trial's morph rounds ("
              + ("paper" if paper_counting else "functional") + " counting).")
    page.table(tables.format_search_summary(summary),
               write_table(summary, tables.format_search_summary(summary),
                           tab_dir / "search_summary"), out)
    page.heading(2, "Trials")
    page.table(tables.format_search_table(search),
               write_table(search, tables.format_search_table(search), tab_dir / "search_trials"),
               out)

    if retrain_df is not None:
        t3 = tables.table_iii(retrain_df, search, report_last)
        page.heading(2, "Retraining (Table III layout)")
        page.para(f"Test error: mean of the last {report_last} epochs per run, then mean ± std "
                  "over seeds. Search cost and #ops of the search trial that found the cell.")
        page.para(tables.cost_note(t3))
        page.table(tables.format_table_iii(t3),
                   write_table(t3, tables.format_table_iii(t3), tab_dir / "table_iii"), out)
        rt = tables.retrain_trials(retrain_df, report_last)
        page.files(write_table(rt, rt, tab_dir / "retrain_trials"), out)

    for exp, tid in keys:
        rows = loaders.select_trial(results, (exp, tid))
        name = f"{slug(exp)}_{slug(tid)}"
        page.heading(2, f"Trial {exp}/{tid}")
        paths = figures.save_figure(figures.search_process_figure(rows),
                                    fig_dir / f"search_process_{name}")
        page.add(page.figure(paths, out, "Search process (cf. paper Fig. 2)"))
        gpath = loaders.trial_genotype_path(rows)
        if gpath and Path(gpath).is_file():
            g = Genotype.load(gpath)
            figs = [page.figure(cells.render_cell(g, cell, fig_dir / f"cell_{name}_{cell}",
                                                  engine=cell_engine), out,
                                f"{'Normal' if cell == 'normal' else 'Reduction'} cell")
                    for cell in ("normal", "reduce")]
            page.heading(3, "Discovered cells (cf. paper Fig. 3)")
            page.add('<div class="cells">' + "".join(figs) + "</div>")
        else:
            page.para("No genotype.json for this trial (unfinished?): no cell diagrams.")
        cell, edge = edge_choice or ("normal", lineage.busiest_edge(rows, "normal"))
        lin = lineage.edge_lineage(rows, cell, edge)
        page.heading(3, f"Operation lineage, {cell} cell, edge {edge}")
        lpaths = figures.save_figure(
            lineage.lineage_figure(lin, f"{exp}/{tid}: {cell} cell, edge {edge}"),
            fig_dir / f"lineage_{name}_{cell}_e{edge}")
        page.add(page.figure(lpaths, out, "Which op came from which parent, and when it left"))
        page.table(lin, write_table(lin, lin, tab_dir / f"lineage_{name}_{cell}_e{edge}"), out)

    index = out / INDEX
    index.write_text(page.render(f"PR-DARTS report: {exp_name}"))
    return index
