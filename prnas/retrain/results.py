"""Retrain result rows as a pandas table: the parquet schema and the final summary.

One row per trial and epoch; the summary reduces each trial to its reported
error (mean test error of its last ``report_last`` epochs, paper IV-C; the last epoch
alone for a run no longer than that: ``prnas.retrain.schedule.final_error``) and then
each genotype to mean and standard deviation over seeds, as in Table III.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from prnas.records import RETRAIN_COLUMNS as COLUMNS
from prnas.records import RETRAIN_DTYPES as _DTYPES
from prnas.retrain.schedule import final_error
from prnas.storage import Location, as_location


def rows_to_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows -> a frame with the documented columns first; a replayed epoch keeps its last row.

    A trial restored from its checkpoint after a crash reports the epochs since
    that checkpoint again; only the final report of each (trial, epoch) is real.
    """
    df = pd.DataFrame(list(rows))
    for col in COLUMNS:
        if col not in df.columns:  # typed, so an all-missing float column stays castable
            df[col] = pd.Series(None, index=df.index, dtype=_DTYPES.get(col, "object"))
    extra = [c for c in df.columns if c not in COLUMNS]
    df = df[list(COLUMNS) + extra]
    if len(df):
        df = df.drop_duplicates(["trial_id", "epoch"], keep="last")
        df = df.sort_values(["genotype", "seed", "trial_id", "epoch"], kind="stable")
    df = df.astype({c: t for c, t in _DTYPES.items()})
    return df.reset_index(drop=True)


def write_parquet(df: pd.DataFrame, path: str | os.PathLike | Location) -> None:
    """Whole and atomically, to a local path or a storage URI (:mod:`prnas.storage`)."""
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    as_location(path).write_bytes(buf.getvalue())


_TRIAL_COLUMNS = ["trial_id", "genotype", "seed", "params", "macs", "epochs",
                  "final_test_error", "latency_ms_b1", "throughput_b64"]


def _last_known(g: pd.DataFrame, col: str) -> Any:
    values = g[col].dropna() if col in g.columns else ()
    return values.iloc[-1] if len(values) else None


def per_trial(df: pd.DataFrame, report_last: int = 5) -> pd.DataFrame:
    """One row per trial: genotype, seed, params, MACs, epochs reached, reported (final)
    error, and the latency/throughput measured after the last epoch (None before)."""
    records = []
    for trial_id, g in df.groupby("trial_id", sort=False):
        g = g.sort_values("epoch")
        records.append({
            "trial_id": trial_id,
            "genotype": g["genotype"].iloc[0],
            "seed": int(g["seed"].iloc[0]),
            "params": int(g["params"].iloc[0]),
            "macs": _last_known(g, "macs"),
            "epochs": int(g["epoch"].max()),
            "final_test_error": final_error(g[["test_error"]].to_dict("records"), report_last),
            "latency_ms_b1": _last_known(g, "latency_ms_b1"),
            "throughput_b64": _last_known(g, "throughput_b64"),
        })
    return pd.DataFrame(records, columns=_TRIAL_COLUMNS)


def summarize(df: pd.DataFrame, report_last: int = 5) -> pd.DataFrame:
    """Per genotype: params, MACs, seeds, epochs (fewest over seeds), final error mean and std
    (%), and the median over seeds of the measured latency (ms) and throughput (images/s).

    std is the sample standard deviation over seeds, NaN with a single seed.
    """
    trials = per_trial(df, report_last)
    if trials.empty:
        return pd.DataFrame(columns=["genotype", "params", "macs", "seeds", "epochs",
                                     "error_mean", "error_std", "latency_ms_b1",
                                     "throughput_b64"])
    for col in ("macs", "latency_ms_b1", "throughput_b64"):
        trials[col] = pd.to_numeric(trials[col], errors="coerce")
    grouped = trials.groupby("genotype", sort=True)
    return pd.DataFrame({
        "params": grouped["params"].first(),
        "macs": grouped["macs"].first(),
        "seeds": grouped["seed"].nunique(),
        "epochs": grouped["epochs"].min(),
        "error_mean": grouped["final_test_error"].mean(),
        "error_std": grouped["final_test_error"].std(ddof=1),
        "latency_ms_b1": grouped["latency_ms_b1"].median(),
        "throughput_b64": grouped["throughput_b64"].median(),
    }).reset_index()


def _params(p: int) -> str:
    """Table III style (3.35M) for real networks, exact for tiny test ones."""
    return f"{p / 1e6:.2f}M" if p >= 100_000 else f"{p:,}"


def macs_str(macs: Any) -> str:
    """574M as papers write multiply-adds; small networks in thousands."""
    if macs is None or pd.isna(macs):
        return "-"
    return f"{macs / 1e6:.0f}M" if macs >= 1e7 else f"{macs / 1e6:.2f}M"


def format_summary(summary: pd.DataFrame) -> str:
    """The table printed at the end of a fan-out: ``error mean +- std`` per genotype."""
    if summary.empty:
        return "(no results)"

    def err(row: pd.Series) -> str:
        std = "-" if pd.isna(row["error_std"]) else f"{row['error_std']:.2f}"
        return f"{row['error_mean']:.2f} +- {std}"

    def num(col: str, fmt: str) -> pd.Series:
        values = summary[col] if col in summary.columns else pd.Series([None] * len(summary))
        return values.map(lambda v: "-" if v is None or pd.isna(v) else fmt.format(v))

    table = pd.DataFrame({
        "genotype": summary["genotype"],
        "params": summary["params"].map(_params),
        "MACs": (summary["macs"] if "macs" in summary.columns
                 else pd.Series([None] * len(summary))).map(macs_str),
        "seeds": summary["seeds"],
        "epochs": summary["epochs"],
        "test error % (last-epochs mean)": summary.apply(err, axis=1),
        "latency b1 [ms]": num("latency_ms_b1", "{:.2f}"),
        "throughput b64 [img/s]": num("throughput_b64", "{:.0f}"),
    })
    return table.to_string(index=False)
