"""Retrain result rows as a pandas table in the parquet schema (``prnas.records``): one row
per trial and epoch. The summaries (per trial, per genotype as in Table III) are
in ``analysis.tables``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from prnas.records import RETRAIN_COLUMNS as COLUMNS
from prnas.records import RETRAIN_DTYPES as _DTYPES


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
