"""Experiment folders -> tidy pandas frames with documented columns and dtypes.

The search and retrain drivers write parquet files whose names and schemas
:mod:`prnas.records` owns; this module reads them through it. It checks what
it needs is there (naming the file and the column when not), decodes the JSON
columns once, and tags each row with the folder it came from, so several
experiments can be analysed together. Everything it reports is in the rows
themselves (resources, schedule, wall time, pool statistics): a file must hold
every documented column of its schema (:mod:`prnas.records`), and one that
lacks any is refused, naming them. Nothing here needs Ray or torch.

Trials are identified by ``(experiment, trial_id)`` (:data:`TRIAL_KEY`): Tune
trial ids are unique within one experiment only.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from prnas.filenames import CANDIDATES_FILE, GENOTYPE_FILE, RESULTS_FILE, RETRAIN_FILE
from prnas.records import (
    CANDIDATES_SCHEMA,
    JSON_COLUMNS,
    RESULTS_SCHEMA,
    RETRAIN_COLUMNS,
    RETRAIN_DTYPES,
)
from prnas.records import decode as _decode

TRIAL_KEY = ["experiment", "trial_id"]

# results.parquet ------------------------------------------------------------------------------
RESULTS_REQUIRED = tuple(name for name, _, _ in RESULTS_SCHEMA)
_RESULTS_FLOAT = (
    "train_loss", "train_acc", "valid_loss", "valid_acc", "test_loss", "test_acc",
    "cycle_time_s", "images_per_s", "batch_size_mean", "batch_size_max", "peak_memory_mb",
    "time_total_s", "gpus_per_trial",
    *(f"ratio_{t}_{k}" for t in ("normal", "reduce") for k in ("skip", "pool", "conv")),
    "similarity_normal", "similarity_reduce", "alpha_spread", "alpha_spread_noise",
)
_RESULTS_INT = ("num_cycles", "epochs", "grace_epochs", "candidates_normal", "candidates_reduce",
                "alpha_steps", "morphs")

# candidates.parquet ---------------------------------------------------------------------------
CANDIDATES_REQUIRED = tuple(name for name, _, _ in CANDIDATES_SCHEMA)
_CANDIDATES_DTYPES: dict[str, str] = {
    "trial_id": "string", "cycle": "int64", "cell_type": "string", "edge": "int64",
    "op": "string", "weight": "float64", "status": "string",
    "seed": "Int64", "space": "string", "alpha": "float64", "new": "boolean",
    "parent": "string", "morphism": "string", "rediscovered": "boolean",
    "p_paper": "float64", "p_shared": "float64",
}

# retrain.parquet ------------------------------------------------------------------------------
RETRAIN_REQUIRED = RETRAIN_COLUMNS

EPOCH_COLUMNS = (
    "experiment", "trial_id", "seed", "space", "cycle", "epoch", "global_epoch", "lr", "grace",
    "train_loss", "train_acc", "valid_loss", "valid_acc", "epoch_time_s", "elapsed_s",
    "images_per_s", "steps", "batch_size_mean", "batch_size_max", "peak_memory_mb",
)


class ExperimentError(ValueError):
    """A folder or parquet file that is not what the analysis expects; the message says why."""


# ----------------------------------------------------------------------------- folders


def _folder(path: str | os.PathLike, filename: str, kind: str) -> Path:
    """The parquet file of an experiment folder, or an error that tells the user what to pass."""
    root = Path(path).expanduser()
    if not root.exists():
        raise ExperimentError(f"{root}: no such folder")
    if root.is_file():
        if root.name == filename:
            return root
        raise ExperimentError(f"{root} is a file; pass the {kind} experiment folder that "
                              f"holds {filename}")
    target = root / filename
    if target.is_file():
        return target
    hint = ""
    kinds = {RESULTS_FILE: "search", CANDIDATES_FILE: "search", RETRAIN_FILE: "retrain"}
    for other, what in kinds.items():
        if other != filename and (root / other).is_file():
            if what == kind:
                raise ExperimentError(f"{root}: no {filename} next to {other} (written by an "
                                      "older or interrupted driver?)")
            hint = f"; it holds {other}, so it is a {what} experiment"
    if not hint and (root / "tuner.pkl").is_file():
        raise ExperimentError(f"{root}: no {filename} yet; the experiment is still running or "
                              "was interrupted (the driver writes it at the end; resume it "
                              "with --resume to get it)")
    nested = sorted(p.parent for p in root.glob(f"*/{filename}"))
    if nested and not hint:
        hint = "; did you mean " + ", ".join(str(p) for p in nested[:3]) + "?"
    raise ExperimentError(f"{root} is not a {kind} experiment folder: no {filename}{hint}")


def _read(path: Path, required: Sequence[str]) -> pd.DataFrame:
    try:
        df = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise ExperimentError(f"{path}: cannot read parquet ({err})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ExperimentError(
            f"{path}: missing column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(c) for c in missing)} (has: {', '.join(map(str, df.columns))})")
    return df


def _tag(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    root = path.parent.resolve()
    df = df.copy()
    df.insert(0, "experiment", pd.array([root.name] * len(df), dtype="string"))
    df["experiment_dir"] = pd.array([str(root)] * len(df), dtype="string")
    return df


def _concat(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    frames = list(frames)
    if len(frames) == 1:
        return frames[0]
    return pd.concat(frames, ignore_index=True)


def _need_dirs(dirs: Sequence[Any], what: str) -> None:
    if not dirs:
        raise ExperimentError(f"{what}: pass at least one experiment folder")


# ----------------------------------------------------------------------------- JSON cells


def decode(value: Any) -> Any:
    """A JSON column cell (JSON text, the documented form) -> plain Python
    (``prnas.records.decode``)."""
    return _decode(value)


# ----------------------------------------------------------------------------- results


def load_results(*dirs: str | os.PathLike) -> pd.DataFrame:
    """One row per (experiment, trial, cycle) from each folder's ``results.parquet``.

    Columns (see docs/analysis.md): ``experiment`` (folder name), ``trial_id``,
    ``seed`` (Int64), ``space``, ``cycle`` (int64, 1-based), the float metrics
    (NaN where the trial did not measure them, e.g. ``test_*`` without
    ``evaluate_test``), ``time_total_s`` (the trial's cumulative wall seconds,
    ``wall_time_total_s``), ``ratio_*``/``similarity_*``/``candidates_*``, the
    decoded JSON columns (Python objects), ``genotype_path`` (absolute, or None),
    ``experiment_dir``, ``gpus_per_trial`` (float64) and the cycle's scheduled
    ``morphs`` (Int64). A cycle reported twice (a restored trial) keeps its last row.
    """
    _need_dirs(dirs, "load_results")
    return _concat(_results_one(_folder(d, RESULTS_FILE, "search")) for d in dirs)


def _results_one(path: Path) -> pd.DataFrame:
    df = _tag(_read(path, RESULTS_REQUIRED), path)
    for col in JSON_COLUMNS:
        df[col] = [decode(v) for v in df[col]]
    if len(df):
        df = df.drop_duplicates(["trial_id", "cycle"], keep="last")
        df = df.sort_values(["trial_id", "cycle"], kind="stable").reset_index(drop=True)
    df["time_total_s"] = df["wall_time_total_s"]
    df = df.astype({"trial_id": "string", "space": "string", "seed": "Int64", "cycle": "int64"}
                   | {c: "float64" for c in _RESULTS_FLOAT} | {c: "Int64" for c in _RESULTS_INT})
    df["genotype_path"] = pd.array([_resolve(p, path.parent) for p in df["genotype_path"]],
                                   dtype="string")
    return df


def _resolve(value: Any, root: Path) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    p = Path(str(value)).expanduser()
    return str(p if p.is_absolute() else (root / p).resolve())


def epoch_frame(results: pd.DataFrame) -> pd.DataFrame:
    """Explode ``epoch_metrics``: one row per trial and epoch, numbered across cycles.

    ``epoch`` is 1-based within its cycle (as written), ``global_epoch`` 1-based
    across the trial, ``elapsed_s`` the running sum of ``epoch_time_s``; the
    paper's Fig. 2 plots against ``global_epoch``.
    """
    records = []
    for (exp, trial), g in results.groupby(TRIAL_KEY, sort=False):
        n = 0
        elapsed = 0.0
        for row in g.sort_values("cycle").itertuples(index=False):
            for m in row.epoch_metrics or []:
                n += 1
                elapsed += float(m["epoch_time_s"])
                records.append({
                    **{c: m.get(c) for c in EPOCH_COLUMNS},
                    "experiment": exp, "trial_id": trial, "seed": row.seed,
                    "space": row.space, "global_epoch": n, "elapsed_s": elapsed,
                })
    df = pd.DataFrame.from_records(records, columns=list(EPOCH_COLUMNS))
    return df.astype({
        "experiment": "string", "trial_id": "string", "seed": "Int64", "space": "string",
        "cycle": "int64", "epoch": "int64", "global_epoch": "int64", "grace": "boolean",
        "steps": "Int64",
        **{c: "float64" for c in ("lr", "train_loss", "train_acc", "valid_loss", "valid_acc",
                                  "epoch_time_s", "elapsed_s", "images_per_s", "batch_size_mean",
                                  "batch_size_max", "peak_memory_mb")},
    })


# ----------------------------------------------------------------------------- candidates


def load_candidates(*dirs: str | os.PathLike) -> pd.DataFrame:
    """One row per (experiment, trial, cycle, cell_type, edge, op) from ``candidates.parquet``.

    Columns: ``experiment``, ``trial_id``, ``seed`` (Int64), ``space``, ``cycle``,
    ``cell_type``, ``edge`` (int64), ``op``, ``alpha``, ``weight`` (float64,
    softmax within the edge), ``status`` ("survived"/"dropped"), ``new``
    (boolean: entered the pool at the start of this cycle), ``parent``,
    ``morphism`` (strings, NA unless new), ``experiment_dir``.
    """
    _need_dirs(dirs, "load_candidates")
    frames = []
    for d in dirs:
        path = _folder(d, CANDIDATES_FILE, "search")
        frames.append(_tag(_read(path, CANDIDATES_REQUIRED), path).astype(_CANDIDATES_DTYPES))
    return _concat(frames)


# ----------------------------------------------------------------------------- retrain


def load_retrain(*dirs: str | os.PathLike) -> pd.DataFrame:
    """One row per (experiment, trial, epoch) from each folder's ``retrain.parquet``.

    Columns: ``experiment``, ``trial_id``, ``genotype`` (label), ``genotype_path``
    (absolute or NA), ``kind`` (searched / random / preset),
    ``seed``, ``dataset``, ``params`` (int64), ``epoch`` (int64),
    ``test_error`` (float64, percent) and the other float metrics (``test_acc``
    in percent, as the retrainer writes it), ``experiment_dir``.
    """
    _need_dirs(dirs, "load_retrain")
    frames = []
    for d in dirs:
        path = _folder(d, RETRAIN_FILE, "retrain")
        df = _tag(_read(path, RETRAIN_REQUIRED), path).astype(RETRAIN_DTYPES)
        df["genotype_path"] = pd.array([_resolve(p, path.parent) for p in df["genotype_path"]],
                                       dtype="string")
        if len(df):
            df = df.drop_duplicates(["trial_id", "epoch"], keep="last")
            df = df.sort_values(["genotype", "seed", "trial_id", "epoch"], kind="stable")
        frames.append(df.reset_index(drop=True))
    return _concat(frames)


# ----------------------------------------------------------------------------- helpers


def trial_keys(results: pd.DataFrame) -> list[tuple[str, str]]:
    """(experiment, trial_id) of every trial, in file order."""
    return list(dict.fromkeys(zip(results["experiment"], results["trial_id"])))


def select_trial(results: pd.DataFrame, trial: str | tuple[str, str]) -> pd.DataFrame:
    """The rows of one trial, by ``trial_id``, ``"experiment/trial_id"`` or a key tuple.

    A bare trial id that exists in two loaded experiments is refused, not guessed.
    """
    if isinstance(trial, tuple):
        exp, tid = trial
        mask = (results["experiment"] == exp) & (results["trial_id"] == tid)
    else:
        mask = results["trial_id"] == trial
        if not mask.any() and "/" in trial:
            exp, tid = trial.rsplit("/", 1)
            mask = (results["experiment"] == exp) & (results["trial_id"] == tid)
    rows = results[mask.fillna(False).astype(bool)]
    if rows.empty:
        known = ", ".join(f"{e}/{t}" for e, t in trial_keys(results))
        raise ExperimentError(f"no trial {trial!r}; known trials: {known}")
    if rows["experiment"].nunique() > 1:
        raise ExperimentError(f"trial {trial!r} exists in several experiments "
                              f"({', '.join(rows['experiment'].unique())}); "
                              "name it as experiment/trial_id")
    return rows.sort_values("cycle")


def trial_genotype_path(rows: pd.DataFrame) -> str | None:
    """The trial's ``genotype.json``: the last path it reported, else one in a folder named for it.

    Ray names trial folders ``<trainable>_<trial_id>_...``, so a genotype that
    the results do not point to is still found by the trial id.
    """
    paths = [str(p) for p in rows["genotype_path"] if pd.notna(p) and p]
    if paths and Path(paths[-1]).is_file():
        return paths[-1]
    root = Path(rows["experiment_dir"].iloc[0])
    tid = str(rows["trial_id"].iloc[0])
    for candidate in sorted(root.rglob(GENOTYPE_FILE)):
        if any(tid in part for part in candidate.relative_to(root).parts[:-1]):
            return str(candidate)
    return paths[-1] if paths else None
