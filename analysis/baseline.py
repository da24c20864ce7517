"""Searched against random cells: does the search beat its own space's random baseline?

The unit of evidence is the *cell*: seeds of one cell share its architecture,
so they are not independent draws of "a searched cell". Hence

- descriptive statistics (mean, sample std, n) are over every run of a group
  (cells x seeds), with the number of cells beside them;
- the difference of the group means (searched - random, in error points; negative:
  the search wins) gets a percentile bootstrap interval that resamples *cells*
  with replacement within each group, each drawn cell bringing all its runs;
- the two-sided Mann-Whitney U test (scipy) compares the per-cell mean errors;
- below :data:`MIN_CELLS` cells in either group the verdict is "too few cells to
  conclude anything", whatever the numbers say.

Parameter counts (and MACs, where ``retrain.parquet`` has a ``macs`` column)
sit beside the errors: a larger cell often wins by size alone.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, MaxNLocator
from scipy.stats import mannwhitneyu

from analysis.loaders import TRIAL_KEY
from analysis.tables import params_str, pm, retrain_trials

KINDS = ("searched", "random", "preset")
KIND_COLORS = {"searched": "#1f77b4", "random": "#ff7f0e", "preset": "#2ca02c"}
MIN_CELLS = 5
RUN_COLUMNS = ["experiment", "trial_id", "genotype", "kind", "space", "cell", "seed", "params",
               "macs", "epochs", "final_test_error"]


def _file_field(path, field: str) -> str | None:
    """A field a genotype file records: ``kind`` (``prnas.space sample`` writes "random",
    a search "searched") or ``space`` (both write it)."""
    if not isinstance(path, str) or not path:
        return None
    try:
        value = json.loads(Path(path).read_text()).get(field)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def run_table(retrain: pd.DataFrame, report_last: int = 5) -> pd.DataFrame:
    """One row per retrain run: its kind, cell, seed, params, MACs (NaN if absent), final error.

    ``cell`` identifies the architecture: its genotype file, else its label, so
    a cell retrained in two experiments counts once.
    """
    trials = retrain_trials(retrain, report_last)
    if trials.empty:
        return pd.DataFrame(columns=RUN_COLUMNS)
    last = retrain.sort_values("epoch").groupby(TRIAL_KEY, sort=False).tail(1)
    extra = last[TRIAL_KEY].copy()
    extra["kind"] = last["kind"]
    if "macs" not in trials.columns:  # retrain_trials carries it when the file has it
        extra["macs"] = (pd.to_numeric(last["macs"], errors="coerce") if "macs" in last.columns
                         else np.nan)
    runs = trials.merge(extra, on=TRIAL_KEY, how="left")
    runs["macs"] = pd.to_numeric(runs["macs"], errors="coerce")
    runs["space"] = [_file_field(p, "space") for p in runs["genotype_path"]]
    runs["cell"] = [p if isinstance(p, str) and p else str(g)
                    for p, g in zip(runs["genotype_path"], runs["genotype"])]
    runs["params"] = pd.to_numeric(runs["params"], errors="coerce").astype("float64")
    runs["macs"] = runs["macs"].astype("float64")
    return runs[RUN_COLUMNS].reset_index(drop=True)


def group_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per kind present: runs, cells, error mean / sample std / min / max, params and MACs mean."""
    rows = []
    for kind in KINDS:
        g = runs[runs["kind"] == kind]
        if g.empty:
            continue
        err = g["final_test_error"]
        rows.append({
            "kind": kind, "runs": len(g), "cells": g["cell"].nunique(),
            "seeds_per_cell": g.groupby("cell")["seed"].nunique().median(),
            "error_mean": err.mean(), "error_std": err.std(ddof=1),
            "error_min": err.min(), "error_max": err.max(),
            "params_mean": g["params"].mean(), "params_std": g["params"].std(ddof=1),
            "macs_mean": g["macs"].mean(), "macs_std": g["macs"].std(ddof=1),
        })
    return pd.DataFrame(rows, columns=[
        "kind", "runs", "cells", "seeds_per_cell", "error_mean", "error_std", "error_min",
        "error_max", "params_mean", "params_std", "macs_mean", "macs_std"])


@dataclass(frozen=True)
class Comparison:
    """Searched vs random; every number NaN and ``statement`` saying why when a group is empty."""

    runs_searched: int
    runs_random: int
    cells_searched: int
    cells_random: int
    mean_searched: float
    mean_random: float
    difference: float  # searched - random, error points
    ci_low: float
    ci_high: float
    confidence: float
    mann_whitney_u: float
    p_value: float
    smallest_p: float  # the smallest two-sided p the rank test can reach with these cell counts
    conclusive: bool
    statement: str

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(self)])


def cluster_bootstrap(a: list[np.ndarray], b: list[np.ndarray], n_boot: int = 10_000,
                      confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of mean(runs of a) - mean(runs of b), resampling cells.

    ``a`` and ``b`` hold one array of run errors per cell. With one run per cell
    this is the ordinary two-sample bootstrap of the difference of means.
    """
    rng = np.random.default_rng(seed)

    def means(cells: list[np.ndarray]) -> np.ndarray:
        sums = np.array([c.sum() for c in cells])
        counts = np.array([len(c) for c in cells], dtype=float)
        pick = rng.integers(0, len(cells), size=(n_boot, len(cells)))
        return sums[pick].sum(axis=1) / counts[pick].sum(axis=1)

    diffs = means(a) - means(b)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    return float(low), float(high)


def smallest_two_sided_p(n1: int, n2: int) -> float:
    """The exact Mann-Whitney test's floor: both extreme orderings, 2 / C(n1 + n2, n1)."""
    if n1 < 1 or n2 < 1:
        return math.nan
    return min(1.0, 2 / math.comb(n1 + n2, n1))


def compare(runs: pd.DataFrame, n_boot: int = 10_000, confidence: float = 0.95,
            seed: int = 0, alpha: float = 0.05) -> Comparison:
    """Searched against random runs (see the module docstring for the units and the rule)."""
    groups = {k: runs[runs["kind"] == k] for k in ("searched", "random")}
    n_runs = {k: len(g) for k, g in groups.items()}
    n_cells = {k: g["cell"].nunique() for k, g in groups.items()}
    nan = math.nan
    missing = [k for k, n in n_runs.items() if n == 0]
    if missing:
        what = " and ".join(missing)
        how = {"random": "retrain random cells beside them with run_retrain.py --random "
                         "SPACE:N", "searched": "retrain the searched cells with "
                         "run_retrain.py --from-search DIR"}
        statement = (f"No {what} runs in the retrain results, so searched and random cells "
                     f"cannot be compared; {'; '.join(how[k] for k in missing)}.")
        return Comparison(n_runs["searched"], n_runs["random"], n_cells["searched"],
                          n_cells["random"],
                          groups["searched"]["final_test_error"].mean() if n_runs["searched"]
                          else nan,
                          groups["random"]["final_test_error"].mean() if n_runs["random"]
                          else nan,
                          nan, nan, nan, confidence, nan, nan, nan, False, statement)
    per_cell = {k: [g["final_test_error"].to_numpy(float) for _, g in grp.groupby("cell")]
                for k, grp in groups.items()}
    mean = {k: float(g["final_test_error"].mean()) for k, g in groups.items()}
    diff = mean["searched"] - mean["random"]
    low, high = cluster_bootstrap(per_cell["searched"], per_cell["random"], n_boot, confidence,
                                  seed)
    cell_means = {k: [float(c.mean()) for c in v] for k, v in per_cell.items()}
    test = mannwhitneyu(cell_means["searched"], cell_means["random"], alternative="two-sided")
    floor = smallest_two_sided_p(n_cells["searched"], n_cells["random"])
    counts = (f"{n_cells['searched']} searched and {n_cells['random']} random cells "
              f"({n_runs['searched']} and {n_runs['random']} runs)")
    level = f"{confidence:.0%}"
    numbers = (f"difference searched - random {diff:+.2f} error points, {level} bootstrap "
               f"interval [{low:+.2f}, {high:+.2f}], Mann-Whitney p = {test.pvalue:.3g}")
    enough = min(n_cells.values()) >= MIN_CELLS
    if not enough:
        statement = (f"Too few cells to conclude anything: {counts}; at least {MIN_CELLS} "
                     f"cells per group are needed (with these counts the rank test cannot "
                     f"go below p = {floor:.3g}). For the record: {numbers}.")
    elif test.pvalue < alpha and (high < 0 or low > 0):
        better = "lower" if diff < 0 else "higher"
        statement = (f"Searched cells reach a {better} test error than random cells of the "
                     f"same space: {numbers}; {counts}.")
    else:
        statement = (f"No significant difference between searched and random cells at "
                     f"alpha = {alpha}: {numbers}; {counts}.")
    return Comparison(n_runs["searched"], n_runs["random"], n_cells["searched"],
                      n_cells["random"], mean["searched"], mean["random"], diff, low, high,
                      confidence, float(test.statistic), float(test.pvalue), floor,
                      enough and test.pvalue < alpha, statement)


def compare_by_space(runs: pd.DataFrame, **kwargs) -> pd.DataFrame:
    """:func:`compare` within each space that has both searched and random runs of a known
    space (the genotype files record it): a random cell is a baseline only for searches
    of its own space. Empty when no space has both."""
    frames = []
    for space, g in runs.dropna(subset=["space"]).groupby("space", sort=True):
        if {"searched", "random"} <= set(g["kind"]):
            frames.append(compare(g, **kwargs).to_frame().assign(space=space))
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    return out[["space", *[c for c in out.columns if c != "space"]]]


def comparison_figure(runs: pd.DataFrame) -> Figure:
    """Every run: a box and jittered points per kind; error against params (and MACs)."""
    kinds = [k for k in KINDS if (runs["kind"] == k).any()]
    has_macs = runs["macs"].notna().any()
    fig = Figure(figsize=(4 + 4 * (1 + has_macs), 3.8), layout="constrained")
    axes = fig.subplots(1, 2 + has_macs, squeeze=False)[0]
    ax = axes[0]
    data = [runs.loc[runs["kind"] == k, "final_test_error"].to_numpy(float) for k in kinds]
    if kinds:
        ax.boxplot(data, positions=range(len(kinds)), widths=0.5, showfliers=False,
                   medianprops={"color": "black"})
    rng = np.random.default_rng(0)  # fixed jitter: the same report every time
    for i, (k, values) in enumerate(zip(kinds, data)):
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(values)), values, s=22, alpha=0.8,
                   color=KIND_COLORS[k], edgecolor="black", linewidth=0.4, zorder=3)
    ax.set_xticks(range(len(kinds)),
                  [f"{k}\n{(runs['kind'] == k).sum()} runs, "
                   f"{runs.loc[runs['kind'] == k, 'cell'].nunique()} cells" for k in kinds])
    ax.set_ylabel("final test error [%]")
    ax.set_title("every retrain run", fontsize=10)
    for ax, col, label in ((axes[1], "params", "parameters"),
                           *(((axes[2], "macs", "MACs"),) if has_macs else ())):
        for k in kinds:
            g = runs[runs["kind"] == k]
            ax.scatter(g[col], g["final_test_error"], s=22, alpha=0.8, color=KIND_COLORS[k],
                       edgecolor="black", linewidth=0.4, label=k)
        ax.xaxis.set_major_formatter(EngFormatter())  # 40k, 3.2M: readable at any size
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.set_xlabel(label)
        ax.set_ylabel("final test error [%]")
        ax.set_title(f"error against {label}", fontsize=10)
        if kinds:
            ax.legend(fontsize=8)
    return fig


def format_groups(groups: pd.DataFrame) -> pd.DataFrame:
    """Readable: ``mean ± std`` errors, params (and MACs) in the paper's units."""
    out = pd.DataFrame({
        "kind": groups["kind"], "runs": groups["runs"], "cells": groups["cells"],
        "seeds per cell (median)": groups["seeds_per_cell"],
        "test error % (mean ± std over runs)": [pm(m, s) for m, s in
                                                zip(groups["error_mean"], groups["error_std"])],
        "min–max": [f"{a:.2f}–{b:.2f}" for a, b in zip(groups["error_min"], groups["error_max"])],
        "#params (mean)": [params_str(p) for p in groups["params_mean"]],
    })
    if groups["macs_mean"].notna().any():
        out["MACs (mean)"] = [params_str(m) for m in groups["macs_mean"]]
    return out
