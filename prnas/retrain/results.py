"""Retrain result rows as a pandas table: the parquet schema and the final summary.

One row per trial and epoch; the summary reduces each trial to its reported
error (mean test error of its last ``report_last`` epochs, paper IV-C) and then
each genotype to mean and standard deviation over seeds, as in Table III.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from prnas._io import atomic_write_bytes

# The documented columns, in this order; anything else a row carries follows them.
COLUMNS = (
    "trial_id", "genotype", "genotype_path",
    "kind",  # searched / random / preset: a search's cells, its random baseline, published ones
    "seed", "dataset", "params", "epoch",
    "train_loss", "train_acc", "test_loss", "test_acc", "test_error", "lr", "drop_path_prob",
    "epoch_time_s", "batch_size",
)
_DTYPES = {
    "trial_id": "string", "genotype": "string", "genotype_path": "string", "dataset": "string",
    "kind": "string",
    "seed": "int64", "params": "int64", "epoch": "int64",
    **{c: "float64" for c in ("train_loss", "train_acc", "test_loss", "test_acc", "test_error",
                              "lr", "drop_path_prob", "epoch_time_s", "batch_size")},
}


def rows_to_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows -> a frame with the documented columns first; a replayed epoch keeps its last row.

    A trial restored from its checkpoint after a crash reports the epochs since
    that checkpoint again; only the final report of each (trial, epoch) is real.
    """
    df = pd.DataFrame(list(rows))
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = pd.NA
    extra = [c for c in df.columns if c not in COLUMNS]
    df = df[list(COLUMNS) + extra]
    if len(df):
        df = df.drop_duplicates(["trial_id", "epoch"], keep="last")
        df = df.sort_values(["genotype", "seed", "trial_id", "epoch"], kind="stable")
    df = df.astype({c: t for c, t in _DTYPES.items()})
    return df.reset_index(drop=True)


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())


_TRIAL_COLUMNS = ["trial_id", "genotype", "seed", "params", "epochs", "final_test_error"]


def per_trial(df: pd.DataFrame, report_last: int = 5) -> pd.DataFrame:
    """One row per trial: genotype, seed, params, epochs reached, reported (final) error."""
    records = []
    for trial_id, g in df.groupby("trial_id", sort=False):
        g = g.sort_values("epoch")
        records.append({
            "trial_id": trial_id,
            "genotype": g["genotype"].iloc[0],
            "seed": int(g["seed"].iloc[0]),
            "params": int(g["params"].iloc[0]),
            "epochs": int(g["epoch"].max()),
            "final_test_error": float(g["test_error"].tail(report_last).mean()),
        })
    return pd.DataFrame(records, columns=_TRIAL_COLUMNS)


def summarize(df: pd.DataFrame, report_last: int = 5) -> pd.DataFrame:
    """Per genotype: params, seeds, epochs (fewest over seeds), final error mean and std (%).

    std is the sample standard deviation over seeds, NaN with a single seed.
    """
    trials = per_trial(df, report_last)
    if trials.empty:
        return pd.DataFrame(columns=["genotype", "params", "seeds", "epochs", "error_mean",
                                     "error_std"])
    grouped = trials.groupby("genotype", sort=True)
    return pd.DataFrame({
        "params": grouped["params"].first(),
        "seeds": grouped["seed"].nunique(),
        "epochs": grouped["epochs"].min(),
        "error_mean": grouped["final_test_error"].mean(),
        "error_std": grouped["final_test_error"].std(ddof=1),
    }).reset_index()


def _params(p: int) -> str:
    """Table III style (3.35M) for real networks, exact for tiny test ones."""
    return f"{p / 1e6:.2f}M" if p >= 100_000 else f"{p:,}"


def format_summary(summary: pd.DataFrame) -> str:
    """The table printed at the end of a fan-out: ``error mean +- std`` per genotype."""
    if summary.empty:
        return "(no results)"

    def err(row: pd.Series) -> str:
        std = "-" if pd.isna(row["error_std"]) else f"{row['error_std']:.2f}"
        return f"{row['error_mean']:.2f} +- {std}"

    table = pd.DataFrame({
        "genotype": summary["genotype"],
        "params": summary["params"].map(_params),
        "seeds": summary["seeds"],
        "epochs": summary["epochs"],
        "test error % (last-epochs mean)": summary.apply(err, axis=1),
    })
    return table.to_string(index=False)
