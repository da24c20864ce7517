"""The on-disk contract: the parquet schemas and the one place a candidate's fate
(survived / dropped / new, and its parent) is worked out from the cycle records
(``prnas.cycle_record``); the file names are ``prnas.filenames``.

The Tune layer writes through it (``prnas.tune.search_trainable`` each trial's
``cycles.jsonl``, ``prnas.tune.results`` the two parquet files, ``prnas.tune.retrain``
each trial's ``epochs.jsonl``) and ``analysis`` reads through it, so the writer and the
reader cannot drift apart. No Ray and no torch here: analysis code runs it on a copied
experiment folder.

Fates use one vocabulary everywhere (decisions, candidates, lineage): a candidate
``survived`` or was ``dropped`` by a cycle's decision, or is ``new`` (entered the pool
at the start of a cycle), with the ``parent`` it was morphed from and the ``morphism``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from prnas.cycle_record import NESTED, CycleRecord
from prnas.filenames import CYCLES_FILE, GENOTYPE_FILE
from prnas.space.fates import NewOp
from prnas.space.ops import Op
from prnas.space.weights import softmax
from prnas.storage import Location, as_location

# ----------------------------------------------------------------------------- fates
SURVIVED = "survived"
DROPPED = "dropped"

_S, _I, _F, _B = pa.string(), pa.int64(), pa.float64(), pa.bool_()

#: results.parquet: (column, type, meaning). Order is the file's column order.
RESULTS_SCHEMA: list[tuple[str, pa.DataType, str]] = [
    ("trial_id", _S, "Tune trial id"),
    ("name", _S, "search name (config name, space, seed)"),
    ("space", _S, "constraint preset: DL, DR, UR or custom"),
    ("seed", _I, "search seed"),
    ("cycle", _I, "1-based cycle"),
    ("num_cycles", _I, "cycles in the schedule"),
    ("epochs", _I, "epochs of this cycle"),
    ("grace_epochs", _I, "leading epochs with frozen alphas"),
    ("morphs", _I, "new candidates per edge this cycle's decision adds (the schedule's)"),
    ("train_loss", _F, "last epoch's training loss (weights half)"),
    ("train_acc", _F, "last epoch's training accuracy"),
    ("valid_loss", _F, "loss on the alphas half after the cycle"),
    ("valid_acc", _F, "accuracy on the alphas half after the cycle"),
    ("test_loss", _F, "test loss (null unless evaluate_test)"),
    ("test_acc", _F, "test accuracy (null unless evaluate_test)"),
    ("cycle_time_s", _F, "training time of the cycle's epochs"),
    ("images_per_s", _F, "mean training throughput"),
    ("batch_size_mean", _F, "mean adaptive batch size"),
    ("batch_size_max", _I, "largest adaptive batch size"),
    ("peak_memory_mb", _F, "peak memory of the trial process"),
    *[(f"ratio_{t}_{k}", _F, f"share of {k} candidates in {t} cells")
      for t in ("normal", "reduce") for k in ("skip", "pool", "conv")],
    ("similarity_normal", _F, "mean pool similarity, normal cell (paper IV-B)"),
    ("similarity_reduce", _F, "mean pool similarity, reduction cell"),
    ("candidates_normal", _I, "candidates over all normal-cell edges"),
    ("candidates_reduce", _I, "candidates over all reduction-cell edges"),
    ("alpha_steps", _I, "alpha (architecture) steps of this cycle: its non-grace training steps"),
    ("alpha_spread", _F, "mean over edges of (max - min) softmax weight at the end of the cycle"),
    ("alpha_spread_noise", _F, "alpha_spread expected from alpha_steps Adam steps without signal"),
    ("pools", _S, "JSON {cell_type: [[op, ...] per edge]}: the pools trained this cycle"),
    ("pools_next", _S, "JSON pools after this cycle's decision (null if not decided)"),
    ("decisions", _S, "JSON list per edge: survived, dropped, new (op, parent, morphism)"),
    ("alphas", _S, "JSON {cell_type: [[alpha, ...] per edge]} at the end of the cycle"),
    ("histories", _S, "JSON {cell_type: [[op, ...] per edge]}: every op ever in the pool"),
    ("epoch_metrics", _S, "JSON list of per-epoch metrics"),
    ("genotype_path", _S, "the trial's genotype.json (null until the trial finished)"),
    ("wall_time_s", _F, "wall time of the trial step: apply the last decision, train"),
    ("wall_time_total_s", _F, "sum of wall_time_s up to and including this cycle"),
    ("gpus_per_trial", _F, "GPUs the trial held (fractions when trials share one)"),
    ("node_id", _S, "Ray node that trained the cycle (after a node loss: the node of the retry)"),
    ("trial_dir", _S, "the trial's folder (a URI on remote storage)"),
    ("population_event", _S, "what the population did to the trial after this cycle: "
     "'exploit from <trial>', 'halved', 'share' (joined by '; '); null: nothing"),
]

#: candidates.parquet: one row per trial, cycle, cell type, edge and candidate.
CANDIDATES_SCHEMA: list[tuple[str, pa.DataType, str]] = [
    ("trial_id", _S, "Tune trial id"),
    ("space", _S, "constraint preset"),
    ("seed", _I, "search seed"),
    ("cycle", _I, "1-based cycle"),
    ("cell_type", _S, "normal or reduce"),
    ("edge", _I, "edge index (node by node; node j has j+2 inputs)"),
    ("position", _I, "index of the candidate in the edge's pool"),
    ("op", _S, "candidate op string"),
    ("alpha", _F, "architecture weight at the end of the cycle"),
    ("weight", _F, "softmax of the edge's alphas"),
    ("status", _S, "survived or dropped by this cycle's decision (null if not decided)"),
    ("new", _B, "entered the pool at the start of this cycle (false in cycle 1)"),
    ("parent", _S, "for new candidates: the op it was morphed from"),
    ("morphism", _S, "for new candidates: the morphism applied"),
    ("rediscovered", _B, "new, although it had been in this edge's pool before"),
    ("p_paper", _F, "for new candidates under population share: the chosen proposal's "
     "probability by the paper's rule (null without share)"),
    ("p_shared", _F, "for new candidates under population share: its probability as drawn"),
]

#: The inference cost of a trained network (``prnas.cost``), in a retrain's rows.
COST_COLUMNS = ("macs", "latency_ms_b1", "throughput_b64", "cost_device", "cost_threads")

#: retrain.parquet (and every retrain's ``epochs.jsonl``): one row per run and epoch, these
#: columns first, in this order; anything else a row carries follows them.
RETRAIN_COLUMNS = (
    "trial_id", "genotype", "genotype_path",
    "kind",  # searched / random / preset: a search's cells, its random baseline, published ones
    "seed", "dataset", "params", "epoch",
    "train_loss", "train_acc", "test_loss", "test_acc", "test_error", "lr", "drop_path_prob",
    "epoch_time_s", "batch_size",
) + COST_COLUMNS + ("model_path", "test_top5_error", "protocol")
RETRAIN_DTYPES = {
    "trial_id": "string", "genotype": "string", "genotype_path": "string", "dataset": "string",
    "kind": "string",
    "seed": "int64", "params": "int64", "epoch": "int64",
    **{c: "float64" for c in ("train_loss", "train_acc", "test_loss", "test_acc", "test_error",
                              "lr", "drop_path_prob", "epoch_time_s", "batch_size")},
    # Cost: MACs in every row; latency, throughput and where they were measured (and the
    # model file) in a run's last row only.
    "macs": "Int64", "latency_ms_b1": "float64", "throughput_b64": "float64",
    "cost_device": "string", "cost_threads": "Int64", "model_path": "string",
    "test_top5_error": "float64",  # top-k with k = min(5, classes)
    # The retrain config minus seed, device and data paths (prnas.retrain.config.protocol_json).
    "protocol": "string",
}

#: The results columns that hold nested values (JSON text in parquet, objects in jsonl).
JSON_COLUMNS = NESTED


# ----------------------------------------------------------------------------- the record
def decode(value: Any) -> Any:
    """A nested parquet cell as plain Python: its JSON text parsed, a missing cell (None, NA,
    NaN) as None."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, str):
        return json.loads(value) if value else None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def candidate_fates(records: Iterable[CycleRecord]) -> list[dict[str, Any]]:
    """Every candidate of every cycle (one dict per candidates.parquet row): its weight, its
    fate under the cycle's decision and, if it entered the pool this cycle, its parent.

    The one place fates are derived; ``prnas.tune.results`` writes them and
    ``analysis.lineage`` reads them back. ``status`` comes from the decision's own
    survivor list, not from membership in the next pools: an op dropped and re-added as
    a (rediscovered) child in the same step was dropped, then is new. Without a
    decision, ``status`` is None (undecided).
    """
    out: list[dict[str, Any]] = []
    by_trial: dict[str, list[CycleRecord]] = {}
    for r in records:
        by_trial.setdefault(str(r["trial_id"]), []).append(r)
    for trial_id in sorted(by_trial):
        added_before: dict[tuple[str, int], dict[Op, NewOp]] = {}
        prev_cycle = None
        for r in sorted(by_trial[trial_id], key=lambda r: r.cycle):
            fresh = added_before if prev_cycle == r.cycle - 1 else {}
            for t, edges in r.pools.items():
                for e, edge in enumerate(edges):
                    weights = softmax(r.alphas[t][e])
                    d = r.decision(t, e)
                    # Survived only if the decision kept it: after a population exploit the
                    # decision is on the copied pools, and an op they lack did not go on.
                    survived = {op for op, _ in d.survived} if d else None
                    for i, op in enumerate(edge):
                        a = fresh.get((t, e), {}).get(op)
                        out.append({
                            "trial_id": trial_id, "space": r.columns.get("space"),
                            "seed": r.columns.get("seed"), "cycle": r.cycle, "cell_type": t,
                            "edge": e, "position": i, "op": str(op),
                            "alpha": float(r.alphas[t][e][i]), "weight": weights[i],
                            "status": None if survived is None else (
                                SURVIVED if op in survived else DROPPED),
                            "new": a is not None,
                            "parent": str(a.parent) if a else None,
                            "morphism": str(a.morphism) if a else None,
                            "rediscovered": bool(a and a.rediscovered),
                            "p_paper": a.p_paper if a else None,
                            "p_shared": a.p_shared if a else None,
                        })
            added_before = {(d.cell_type, d.edge): {n.op: n for n in d.new}
                            for d in r.decisions or ()}
            prev_cycle = r.cycle
    return out


# ----------------------------------------------------------------------------- jsonl files
def jsonl_text(rows: Iterable[Mapping[str, Any]]) -> str:
    """Plain JSON objects, one a line (the form of ``cycles.jsonl`` and ``epochs.jsonl``)."""
    return "".join(json.dumps(dict(r)) + "\n" for r in rows)


def read_jsonl(path: str | os.PathLike | Location, key: str) -> list[dict[str, Any]]:
    """The objects of a jsonl file, the last one per ``key`` value, in ``key`` order."""
    by_key: dict[int, dict[str, Any]] = {}
    for line in as_location(path).read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            by_key[int(r[key])] = r
    return [by_key[k] for k in sorted(by_key)]


def trial_dirs(experiment_dir: str | os.PathLike | Location,
               filename: str = CYCLES_FILE) -> list[Location]:
    """Trial folders of an experiment (a folder or a storage URI): those holding
    ``filename``, in name order."""
    return [d for d in as_location(experiment_dir).children() if (d / filename).is_file()]


def read_trial_rows(trial_dir: str | os.PathLike | Location) -> list[dict[str, Any]]:
    """One dict per cycle from a trial's ``cycles.jsonl``, with its folder and genotype
    (as paths, or URIs on remote storage)."""
    trial_dir = as_location(trial_dir)
    genotype = trial_dir / GENOTYPE_FILE
    genotype_path = genotype.uri if genotype.is_file() else None
    return [{**r, "trial_dir": trial_dir.uri, "genotype_path": genotype_path}
            for r in read_jsonl(trial_dir / CYCLES_FILE, "cycle")]


# ----------------------------------------------------------------------------- parquet
def table(rows: Sequence[Mapping[str, Any]],
          schema: list[tuple[str, pa.DataType, str]]) -> pa.Table:
    """Documented columns with their documented types, then any others as inferred; nested
    values become JSON text (the documented parquet form)."""
    known = [name for name, _, _ in schema]
    extra = sorted({k for r in rows for k in r} - set(known))
    arrays, fields = [], []
    for name, typ, _ in schema:
        arrays.append(pa.array([_cell(r.get(name)) for r in rows], type=typ))
        fields.append(pa.field(name, typ))
    for name in extra:
        arr = pa.array([_cell(r.get(name)) for r in rows])
        if pa.types.is_null(arr.type):
            arr = arr.cast(pa.string())
        arrays.append(arr)
        fields.append(pa.field(name, arr.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _cell(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict | list):
        return json.dumps(v)
    return v


def write_parquet(data: pa.Table | pd.DataFrame, path: str | os.PathLike | Location) -> None:
    """Whole and atomically, to a local path or a storage URI (:mod:`prnas.storage`)."""
    if isinstance(data, pd.DataFrame):
        data = pa.Table.from_pandas(data, preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(data, sink)
    as_location(path).write_bytes(sink.getvalue().to_pybytes())
