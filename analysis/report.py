"""One folder with every figure (PNG + SVG), every table (CSV + Markdown) and an index.html.

The page only links files inside the folder (relative paths, inline CSS, no
scripts), so the folder can be zipped, mailed or served as it is.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis import (
    agreement,
    baseline,
    cells,
    checklist,
    figures,
    lineage,
    loaders,
    population,
    signal,
    tables,
)
from prnas.space.genotype import Genotype

FIGURES, TABLES, INDEX = "figures", "tables", "index.html"
# Every file a report wrote, relative to --out: ``--force`` deletes these and nothing else.
MANIFEST = ".prnas-report.json"
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


def _files_under(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}


def _own_files(out: Path) -> list[Path]:
    """The files the manifest says an earlier report wrote, confined to ``out``."""
    try:
        listed = json.loads((out / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise OutputExists(f"--force: {out} holds no readable report manifest ({MANIFEST}); "
                           "prnas deletes only files it wrote itself, so empty the folder "
                           "yourself or choose another --out") from None
    root = out.resolve()
    own = []
    for rel in listed if isinstance(listed, list) else []:
        p = (out / str(rel)).resolve()
        if p.is_relative_to(root) and p != root and p.is_file():
            own.append(p)
    return own


def prepare_out(out: Path, force: bool) -> None:
    """Refuse a non-empty ``out`` unless ``force``; with it, remove what an earlier report wrote.

    Only the files listed in the earlier report's manifest go (then its folders, if
    empty), never a file the user put there: pointing ``--out`` at a busy folder by
    mistake cannot wipe it, and a folder without a manifest is refused.
    """
    if out.exists() and not out.is_dir():
        raise OutputExists(f"--out {out} is a file")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise OutputExists(f"--out {out} is not empty; pass --force to replace the report "
                               "in it, or choose another folder")
        for p in _own_files(out):
            p.unlink()
        dirs = [out / FIGURES, out / TABLES]
        dirs += [d for top in dirs if top.is_dir() for d in top.rglob("*") if d.is_dir()]
        for d in sorted(dirs, key=lambda d: len(d.parts), reverse=True):  # deepest first
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        (out / MANIFEST).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def _write_manifest(out: Path, before: set[str]) -> None:
    written = sorted(_files_under(out) - before - {MANIFEST})
    (out / MANIFEST).write_text(json.dumps({"files": written}, indent=1) + "\n")


def write_table(numeric: pd.DataFrame, shown: pd.DataFrame, stem: Path) -> list[Path]:
    """CSV of the numeric frame (for pandas), Markdown of the formatted one (for people)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv, md = stem.with_suffix(".csv"), stem.with_suffix(".md")
    numeric.to_csv(csv, index=False)
    md.write_text(tables.to_markdown(shown))
    return [csv, md]


def _trial_rows(candidates: pd.DataFrame | None, key: tuple[str, str]) -> pd.DataFrame | None:
    """One trial's rows of candidates.parquet (None: none loaded, lineage derives them)."""
    if candidates is None:
        return None
    exp, tid = key
    return candidates[(candidates["experiment"] == exp) & (candidates["trial_id"] == tid)]


def _parse_edge(text: str | None) -> tuple[str, int] | None:
    if text is None:
        return None
    m = re.fullmatch(r"(normal|reduce):(\d+)", text)
    if m is None:
        raise ValueError(f"--lineage must look like normal:3 or reduce:0, got {text!r}")
    return m.group(1), int(m.group(2))


def build_report(experiment: str | os.PathLike,
                 retrain: str | os.PathLike | Sequence[str | os.PathLike] | None,
                 out: str | os.PathLike, *, force: bool = False, cell_engine: str = "auto",
                 paper_counting: bool = True, trials: Sequence[str] = (),
                 lineage_edge: str | None = None, report_last: int = 5) -> Path:
    """Write the whole report; returns the path of ``index.html``.

    Inputs are read (and any error raised) before ``out`` is created or cleared.
    ``retrain``: one retrain experiment folder or several (their runs are pooled).
    """
    out = Path(out)
    if isinstance(retrain, str | os.PathLike):
        retrain = [retrain]
    retrain = list(retrain or [])
    names = [Path(r).resolve().name for r in retrain]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # runs are told apart by (folder name, trial id): they would merge
        raise loaders.ExperimentError(
            f"retrain folders named {', '.join(twice)} given more than once (the same folder "
            "twice, or folders of the same name, whose runs the report could not tell apart)")
    if out.is_dir() and any(out.iterdir()) and not force:
        prepare_out(out, force)  # raises
    edge_choice = _parse_edge(lineage_edge)
    results = loaders.load_results(experiment)
    try:
        candidates = loaders.load_candidates(experiment)
    except loaders.ExperimentError:  # a results file without its candidates: derived instead
        candidates = None
    retrain_df = loaders.load_retrain(*retrain) if retrain else None
    keys = loaders.trial_keys(results)
    if trials:
        keys = [k for k in keys if k[1] in trials or f"{k[0]}/{k[1]}" in trials]
        if not keys:
            raise loaders.ExperimentError(f"none of the trials {', '.join(trials)} is in "
                                          f"{experiment}")
    if edge_choice is not None:  # an edge no trial has fails here, before --out is touched
        for key in keys:
            lineage.edge_lineage(loaders.select_trial(results, key), *edge_choice,
                                 candidates=_trial_rows(candidates, key))
    if force and out.is_dir() and any(out.iterdir()):
        _own_files(out)  # refuses a folder without a manifest before deleting anything
    prepare_out(out, force)
    before = _files_under(out)
    try:
        return _write_report(out, experiment, retrain, results, retrain_df, keys, edge_choice,
                             cell_engine, paper_counting, report_last, candidates)
    finally:
        # Also after a failure: a later --force can then remove what this run wrote.
        _write_manifest(out, before)


def _write_report(out: Path, experiment, retrain, results: pd.DataFrame,
                  retrain_df: pd.DataFrame | None, keys, edge_choice, cell_engine: str,
                  paper_counting: bool, report_last: int,
                  candidates: pd.DataFrame | None = None) -> Path:
    fig_dir, tab_dir = out / FIGURES, out / TABLES
    page = _Page()
    exp_name = results["experiment"].iloc[0] if len(results) else str(experiment)
    page.heading(1, f"PR-DARTS search report: {exp_name}")
    page.para(f"Search experiment: {Path(experiment).resolve()}"
              + (f"; retrain experiment{'s' if len(retrain) > 1 else ''}: "
                 + ", ".join(str(Path(r).resolve()) for r in retrain) if retrain else ""))

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

    _signal_section(page, out, results)
    _population_section(page, out, results)

    if retrain_df is not None:
        t3 = tables.table_iii(retrain_df, search, report_last)
        rt = tables.retrain_trials(retrain_df, report_last)
        page.heading(2, "Retraining (Table III layout)")
        page.para(f"Test error per run: {tables.headline_text(rt['epochs'], report_last)}; "
                  "then mean ± std over seeds. Search cost and #ops of the search trial that "
                  "found the cell.")
        page.para(tables.cost_note(t3))
        page.table(tables.format_table_iii(t3),
                   write_table(t3, tables.format_table_iii(t3), tab_dir / "table_iii"), out)
        page.files(write_table(rt, rt, tab_dir / "retrain_trials"), out)
    runs = baseline.run_table(retrain_df, report_last) if retrain_df is not None else None
    _baseline_section(page, out, runs, report_last)
    _agreement_section(page, out, results)

    for exp, tid in keys:
        rows = loaders.select_trial(results, (exp, tid))
        name = f"{slug(exp)}_{slug(tid)}"
        page.heading(2, f"Trial {exp}/{tid}")
        paths = figures.save_figure(figures.search_process_figure(rows),
                                    fig_dir / f"search_process_{name}")
        page.add(page.figure(paths, out, "Search process (cf. paper Fig. 2)"))
        gpath = loaders.trial_genotype_path(rows)
        if gpath and Path(gpath).is_file():
            # Titled by its trial folder, the name the retrain tables give the same cell.
            g = dataclasses.replace(Genotype.load(gpath), name=Path(gpath).parent.name)
            figs = [page.figure(cells.render_cell(g, cell, fig_dir / f"cell_{name}_{cell}",
                                                  engine=cell_engine), out,
                                f"{'Normal' if cell == 'normal' else 'Reduction'} cell")
                    for cell in ("normal", "reduce")]
            page.heading(3, "Discovered cells (cf. paper Fig. 3)")
            page.add('<div class="cells">' + "".join(figs) + "</div>")
        else:
            page.para("No genotype.json for this trial (unfinished?): no cell diagrams.")
        cell, edge = edge_choice or ("normal", lineage.busiest_edge(rows, "normal"))
        lin = lineage.edge_lineage(rows, cell, edge,
                                   candidates=_trial_rows(candidates, (exp, tid)))
        page.heading(3, f"Operation lineage, {cell} cell, edge {edge}")
        lpaths = figures.save_figure(
            lineage.lineage_figure(lin, f"{exp}/{tid}: {cell} cell, edge {edge}"),
            fig_dir / f"lineage_{name}_{cell}_e{edge}")
        page.add(page.figure(lpaths, out, "Which op came from which parent, and when it left"))
        page.table(lin, write_table(lin, lin, tab_dir / f"lineage_{name}_{cell}_e{edge}"), out)

    _checklist_section(page, out, checklist.checklist(results, search, retrain_df, runs,
                                                      report_last))
    index = out / INDEX
    index.write_text(page.render(f"PR-DARTS report: {exp_name}"))
    return index


def _signal_section(page: _Page, out: Path, results: pd.DataFrame) -> None:
    """Did the alphas learn, cycle by cycle (analysis.signal)."""
    page.heading(2, "Do the alphas learn?")
    table = signal.signal_table(results)
    if table["alpha_spread"].isna().all():
        page.para("The results hold no alpha spreads: nothing to say about the alphas.")
        return
    page.para("Per cycle: alpha steps taken, the mean over edges of (max - min) softmax weight "
              "at its end, the same measure expected from that many Adam steps without "
              f"signal, and their ratio. Under {signal.NOISE_FACTOR:g} the decision is marked "
              "as taken on noise "
              "(docs/search.md, \"Do the alphas learn?\").")
    shown = table.round(4)
    page.add(f"<p><strong>{html.escape(signal.noise_statement(table))}</strong></p>")
    page.table(shown, write_table(table, shown, out / TABLES / "alpha_signal"), out)


def _population_section(page: _Page, out: Path, results: pd.DataFrame) -> None:
    """What the population did (analysis.population); nothing for independent seeds."""
    if results["population_event"].isna().all():
        return
    events = population.population_events(results)
    page.heading(2, "Population")
    page.para("The seeds of each space decided their cycles together (docs/search.md, "
              "Population). Every row of results.parquet says in population_event what "
              "happened to its trial after that cycle; the exploit and halve events:")
    paths = figures.save_figure(population.genealogy_figure(results),
                                out / FIGURES / "population")
    page.add(page.figure(paths, out, "Seed genealogy"))
    page.table(events, write_table(events, events, out / TABLES / "population_events"), out)


def _baseline_section(page: _Page, out: Path, runs: pd.DataFrame | None,
                      report_last: int) -> None:
    """Searched against random cells (analysis.baseline); says so when a group is missing."""
    page.heading(2, "Searched vs random cells")
    if runs is None or runs.empty:
        page.para("No retrain experiment given (or it has no runs): searched cells cannot be "
                  "compared with random ones. Retrain both with run_retrain.py --from-search DIR "
                  "--random SPACE:N and pass its folder.")
        return
    groups = baseline.group_table(runs)
    shown = baseline.format_groups(groups)
    page.para(f"Per run: {tables.headline_text(runs['epochs'], report_last)}. Groups pool "
              "every run (cells x seeds); the interval resamples cells, the rank test compares "
              "per-cell mean errors (see docs/analysis.md). Parameters (and MACs where "
              "recorded) beside the errors: a bigger cell often wins by size alone.")
    page.table(shown, write_table(groups, shown, out / TABLES / "baseline_groups"), out)
    result = baseline.compare(runs)
    page.add(f"<p><strong>{html.escape(result.statement)}</strong></p>")
    frame = result.to_frame()
    page.files(write_table(frame, frame, out / TABLES / "baseline_comparison"), out)
    by_space = baseline.compare_by_space(runs)
    spaces = {k: sorted(set(runs.loc[runs["kind"] == k, "space"].dropna()))
              for k in ("searched", "random")}
    if len(by_space) and (len(by_space) > 1 or spaces["searched"] != spaces["random"]):
        page.para("The pooled comparison above mixes spaces; within each space that has "
                  "both searched and random cells:")
        shown = by_space[["space", "cells_searched", "cells_random", "statement"]]
        page.table(shown, write_table(by_space, shown, out / TABLES / "baseline_by_space"), out)
    page.files(write_table(runs, runs, out / TABLES / "baseline_runs"), out)
    paths = figures.save_figure(baseline.comparison_figure(runs),
                                out / FIGURES / "baseline_comparison")
    page.add(page.figure(paths, out, "Every retrain run by kind; error against size"))


def _agreement_section(page: _Page, out: Path, results: pd.DataFrame) -> None:
    """Cross-seed agreement of found cells and of candidate pools (analysis.agreement)."""
    page.heading(2, "Cross-seed agreement")
    found = agreement.found_cells(results)
    pairs = agreement.cell_pairs(found)
    if pairs.empty:
        page.para("Fewer than two finished trials (with genotype.json) in any space: no "
                  "cross-seed agreement to measure.")
    else:
        summary = agreement.cell_summary(found, pairs)
        page.para("Found cells, per space and cell type, over all pairs of trials: mean op "
                  "similarity of matched edges (prnas.space.similarity) and the share of "
                  "identical (op, input) pairs; 1 and 100 % mean the seeds found the same cell.")
        page.table(summary.round(3), write_table(summary, summary.round(3),
                                                 out / TABLES / "agreement_cells"), out)
        page.files(write_table(pairs, pairs, out / TABLES / "agreement_cell_pairs"), out)
        paths = figures.save_figure(agreement.heatmap_figure(found, pairs),
                                    out / FIGURES / "agreement_cells")
        page.add(page.figure(paths, out, "Seed x seed agreement of the found cells"))
    pools = agreement.pool_agreement(results)
    if pools.empty:
        return
    page.para("Candidate pools, per cycle, edge by edge over all pairs of trials of a space: "
              "symmetric best-match op similarity and the share of ops both pools hold. "
              "Rising lines: the seeds converge to the same ops.")
    page.table(pools.round(3), write_table(pools, pools.round(3),
                                           out / TABLES / "agreement_pools"), out)
    paths = figures.save_figure(agreement.pool_figure(pools), out / FIGURES / "agreement_pools")
    page.add(page.figure(paths, out, "Cross-seed agreement of the candidate pools over cycles"))


def _checklist_section(page: _Page, out: Path, items: pd.DataFrame) -> None:
    page.heading(2, "Best-practice checklist")
    page.para("NAS best practices (Lindauer and Hutter, 2020) this report can check from its "
              "data; 'missing' says what a publication of these runs would still need.")
    page.table(items, write_table(items, items, out / TABLES / "checklist"), out)
