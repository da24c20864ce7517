"""The NAS best-practice items a report can check from its own data (Lindauer and Hutter, 2020).

Each item is ``present`` or ``missing`` with the evidence that decided it, so a
reader sees at once what a paper built on these runs would still have to add.
Only what the parquet files show is judged; nothing is assumed, and nothing of
Tune's own files is read.
"""

from __future__ import annotations

import json

import pandas as pd

from analysis.loaders import TRIAL_KEY
from analysis.tables import headline_text

PRESENT, MISSING = "present", "missing"


def _item(item: str, ok: bool, evidence: str) -> dict:
    return {"item": item, "status": PRESENT if ok else MISSING, "evidence": evidence}


def _seeds(results: pd.DataFrame, runs: pd.DataFrame | None) -> dict:
    per_space = results.groupby("space")["seed"].agg(lambda s: sorted(s.dropna().unique()))
    text = "; ".join(f"search {space}: seeds {', '.join(map(str, s)) or 'none'}"
                     for space, s in per_space.items())
    ok = len(per_space) > 0 and all(len(s) >= 2 for s in per_space)
    if runs is not None and len(runs):
        seeds = runs.groupby("cell")["seed"].nunique()
        ok = ok and seeds.min() >= 2
        text += (f"; retrain: {seeds.min()}–{seeds.max()} seeds per cell"
                 if seeds.min() != seeds.max() else f"; retrain: {seeds.min()} seed(s) per cell")
    return _item("Seeds reported (several per search space and per retrained cell)", ok,
                 text or "no search trials")


def _baseline(runs: pd.DataFrame | None) -> dict:
    if runs is None:
        return _item("Random-search baseline present", False, "no retrain experiment given")
    n = runs[runs["kind"] == "random"]
    ok = len(n) > 0 and bool((runs["kind"] == "searched").any())
    return _item("Random-search baseline present", ok,
                 f"{n['cell'].nunique()} random cells ({len(n)} runs) beside "
                 f"{runs.loc[runs['kind'] == 'searched', 'cell'].nunique()} searched cells")


def _protocols(retrain: pd.DataFrame) -> list[dict]:
    """Distinct retrain configs the runs' rows carry (``protocol``: all but seed, device and
    data paths)."""
    if "protocol" not in retrain.columns:
        return []
    return [json.loads(p) for p in retrain["protocol"].dropna().unique()]


def _pipeline(retrain: pd.DataFrame | None) -> dict:
    item = "Same training pipeline for all compared cells"
    if retrain is None or retrain.empty:
        return _item(item, False, "no retrain experiment given")
    trials = retrain.groupby(TRIAL_KEY, sort=False)
    differ = []
    for col in ("dataset", "epochs", "lr", "drop_path_prob"):
        if col == "epochs":
            values = trials["epoch"].max()
        elif col in retrain.columns:
            # One string per run (its values over the epochs): comparable whatever the dtype.
            values = trials[col].agg(lambda s: repr([
                v if isinstance(v, str) else None if pd.isna(v) else round(float(v), 10)
                for v in s]))
        else:
            continue
        if values.nunique(dropna=False) > 1:
            differ.append(col + (" schedule" if col in ("lr", "drop_path_prob") else ""))
    configs = _protocols(retrain)
    if len(configs) > 1:
        differ.append(f"{len(configs)} different retrain configs")
    seen = (f"{len(configs)} retrain config(s) in the runs' rows; " if configs else
            "no retrain config in the runs' rows; ")
    if differ:
        return _item(item, False, seen + "runs differ in " + ", ".join(differ))
    return _item(item, True, seen + f"{retrain[TRIAL_KEY].drop_duplicates().shape[0]} runs share "
                 "dataset, epochs and the per-epoch learning-rate and drop-path schedules")


def _cost(search: pd.DataFrame, results: pd.DataFrame) -> dict:
    item = "Search cost reported in GPU-hours"
    if search.empty:
        return _item(item, False, "no search trials")
    units = search["cost_unit"].value_counts()
    total = search.groupby("cost_unit")["cost_hours"].sum()
    text = "; ".join(f"{total[u]:.3g} {u} over {n} trials" for u, n in units.items())
    if set(units.index) == {"GPU-hours"}:
        return _item(item, True, text)
    gpus = (pd.to_numeric(results["gpus_per_trial"], errors="coerce")
            if "gpus_per_trial" in results.columns else pd.Series(dtype=float))
    why = ("the trials held no GPU (gpus_per_trial 0): CPU runs" if len(gpus.dropna())
           and (gpus.dropna() == 0).all() else "the trials' GPU count is not recorded")
    return _item(item, False, text + f" (device-hours: {why}; run on GPUs through "
                 "run_search.py to get GPU-hours)")


def _protocol(retrain: pd.DataFrame | None, runs: pd.DataFrame | None, report_last: int) -> dict:
    item = "Final evaluation protocol stated"
    if retrain is None or runs is None or runs.empty:
        return _item(item, False, "no retrain experiment given: no final evaluation")
    epochs = retrain.groupby(TRIAL_KEY)["epoch"].max()
    datasets = ", ".join(sorted(map(str, retrain["dataset"].dropna().unique()))) or "?"
    text = (f"test error per run = {headline_text(epochs, report_last)} "
            f"({epochs.min()}" + (f"–{epochs.max()}" if epochs.max() != epochs.min() else "")
            + f" epochs, {datasets}), then mean ± std over runs")
    why = []
    if epochs.min() != epochs.max():
        why.append("runs stopped at different epochs")
    if report_last > 1 and epochs.min() <= report_last:
        why.append(f"runs of {epochs.min()} epochs are not longer than the averaged window "
                   f"({report_last}): retrain more epochs than report_last")
    if why:
        text += "; incomplete: " + "; ".join(why)
    return _item(item, not why, text)


def checklist(results: pd.DataFrame, search: pd.DataFrame, retrain: pd.DataFrame | None,
              runs: pd.DataFrame | None, report_last: int = 5) -> pd.DataFrame:
    """item, status (present / missing), evidence; in the order of the report's list."""
    return pd.DataFrame([
        _seeds(results, runs),
        _baseline(runs),
        _pipeline(retrain),
        _cost(search, results),
        _protocol(retrain, runs, report_last),
    ], columns=["item", "status", "evidence"])
