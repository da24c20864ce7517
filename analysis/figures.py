"""The search-process figure (paper Fig. 2) of one trial, and saving figures as PNG + SVG.

Figures are built with matplotlib's object API (``Figure``, no pyplot), so
nothing depends on a display or on global backend state, and callers get an
object they can still restyle before saving.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.loaders import epoch_frame

TYPE_COLORS = {"skip": "#7f7f7f", "pool": "#2ca02c", "conv": "#1f77b4"}
CELL_STYLES = {"normal": "-", "reduce": "--"}


def _cycle_spans(epochs: pd.DataFrame) -> pd.DataFrame:
    """Per cycle the first and last global epoch, so per-cycle values can span their epochs."""
    spans = epochs.groupby("cycle")["global_epoch"].agg(["min", "max"])
    return spans.rename(columns={"min": "start", "max": "end"})


def _per_cycle_steps(spans: pd.DataFrame, values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """x, y for a value held constant over each cycle's epochs (a step drawing)."""
    xs, ys = [], []
    for cycle, span in spans.iterrows():
        if cycle in values.index and pd.notna(values[cycle]):
            xs += [span["start"] - 0.5, span["end"] + 0.5, np.nan]
            ys += [values[cycle], values[cycle], np.nan]
    return np.array(xs, dtype=float), np.array(ys, dtype=float)


def _mark_cycles(ax, spans: pd.DataFrame, grace: pd.DataFrame, label: bool = False) -> None:
    for cycle, span in spans.iterrows():
        if span["end"] < spans["end"].max():
            ax.axvline(span["end"] + 0.5, color="black", lw=0.8, ls=":", alpha=0.7)
        if label:
            ax.text((span["start"] + span["end"]) / 2, 1.01, str(cycle), ha="center",
                    va="bottom", fontsize=7, transform=ax.get_xaxis_transform())
    for e in grace["global_epoch"]:
        ax.axvspan(e - 0.5, e + 0.5, color="#ffdd88", alpha=0.25, lw=0)


def search_process_figure(rows: pd.DataFrame, title: str | None = None) -> Figure:
    """Fig. 2 for one trial's rows of ``load_results``: four panels over the global epoch.

    1. train and valid accuracy; 2. batch size (mean per epoch, and the largest)
    with the epoch duration on a second axis; 3. share of skip / pooling / conv
    candidates of each cell type; 4. mean pool similarity of each cell type.
    Dotted lines separate cycles (numbered on top), shading marks grace epochs
    (architecture weights frozen). Panels 3-4 hold each cycle's value over its
    epochs: the pools are fixed within a cycle.
    """
    rows = rows.sort_values("cycle")
    epochs = epoch_frame(rows)
    if epochs.empty:
        raise ValueError("the trial has no epoch_metrics to plot")
    spans = _cycle_spans(epochs)
    grace = epochs[epochs["grace"].fillna(False).astype(bool)]
    per_cycle = rows.set_index("cycle")
    fig = Figure(figsize=(8, 10), layout="constrained")
    axes = fig.subplots(4, 1, sharex=True, height_ratios=[3, 2, 2, 1.6])
    x = epochs["global_epoch"]

    ax = axes[0]
    ax.plot(x, epochs["train_acc"] * 100, marker=".", label="train", color="#1f77b4")
    ax.plot(x, epochs["valid_acc"] * 100, marker=".", label="valid", color="#ff7f0e")
    ax.set_ylabel("accuracy [%]")
    ax.legend(loc="lower right", fontsize=8)
    _mark_cycles(ax, spans, grace, label=True)

    ax = axes[1]
    ax.plot(x, epochs["batch_size_mean"], color="#9467bd", marker=".", label="batch size (mean)")
    if epochs["batch_size_max"].notna().any():
        ax.plot(x, epochs["batch_size_max"], color="#9467bd", lw=0.8, ls="--",
                label="batch size (max)")
    ax.set_ylabel("batch size")
    twin = ax.twinx()
    twin.plot(x, epochs["epoch_time_s"], color="#8c564b", marker=".", label="epoch time")
    twin.set_ylabel("epoch time [s]")
    handles = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], loc="upper left", fontsize=8)
    _mark_cycles(ax, spans, grace)

    ax = axes[2]
    for cell, style in CELL_STYLES.items():
        for kind, color in TYPE_COLORS.items():
            col = f"ratio_{cell}_{kind}"
            if col in per_cycle.columns:
                xs, ys = _per_cycle_steps(spans, per_cycle[col] * 100)
                ax.plot(xs, ys, color=color, ls=style, lw=1.6, label=f"{kind} ({cell})")
    ax.set_ylabel("candidates [%]")
    ax.set_ylim(-3, 103)
    # Above the panel: inside it would hide lines that sit near 0 % or 100 %.
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=7, ncols=6,
              frameon=False, handlelength=2.5)
    _mark_cycles(ax, spans, grace)

    ax = axes[3]
    for cell, style in CELL_STYLES.items():
        col = f"similarity_{cell}"
        if col in per_cycle.columns:
            xs, ys = _per_cycle_steps(spans, per_cycle[col])
            ax.plot(xs, ys, color="black", ls=style, lw=1.6, label=cell)
    ax.set_ylabel("pool similarity")
    ax.set_ylim(-0.03, 1.03)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_xlabel("epoch")
    ax.set_xlim(0.5, x.max() + 0.5)
    _mark_cycles(ax, spans, grace)

    if title is None:
        first = rows.iloc[0]
        title = (f"{first['experiment']}/{first['trial_id']}: space {first['space']}, "
                 f"seed {first['seed']}")
    fig.suptitle(title, fontsize=11)
    return fig


def save_figure(fig: Figure, stem: str | os.PathLike, formats: tuple[str, ...] = ("png", "svg"),
                dpi: int = 120) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` (creating the folder); returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        fig.savefig(path, format=fmt, dpi=dpi)
        paths.append(path)
    return paths
