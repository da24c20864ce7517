"""A search experiment's trial folders -> ``results.parquet`` and ``candidates.parquet``.

The source is each trial's ``cycles.jsonl``, which the trial rebuilds from its
checkpointed engine state after every cycle: the decisions in it are the ones
applied, and a cycle lost to a retry is not in it. Tune's own ``result.json`` is
not used: Tune may replace the driver's copy with an older one from storage
when it restarts a paused trial. The schema below is the contract documented
in ``docs/search.md``; columns a newer engine adds are appended with inferred
types. Needs no Ray: analysis code can call it on a copied experiment folder.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from prnas._io import atomic_write_bytes
from prnas.search.pools import softmax

RESULTS_FILE = "results.parquet"
CANDIDATES_FILE = "candidates.parquet"

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
    ("pools", _S, "JSON {cell_type: [[op, ...] per edge]}: the pools trained this cycle"),
    ("pools_next", _S, "JSON pools after this cycle's decision (null if not decided)"),
    ("decisions", _S, "JSON list per edge: kept, dropped, added (op, parent, morphism)"),
    ("alphas", _S, "JSON {cell_type: [[alpha, ...] per edge]} at the end of the cycle"),
    ("histories", _S, "JSON {cell_type: [[op, ...] per edge]}: every op ever in the pool"),
    ("epoch_metrics", _S, "JSON list of per-epoch metrics"),
    ("genotype_path", _S, "the trial's genotype.json (null until the trial finished)"),
    ("wall_time_s", _F, "wall time of the trial step: apply the last decision, train"),
    ("wall_time_total_s", _F, "sum of wall_time_s up to and including this cycle"),
    ("trial_dir", _S, "the trial's folder"),
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
]

CYCLES_FILE = "cycles.jsonl"
GENOTYPE_FILE = "genotype.json"


def trial_dirs(experiment_dir: str | os.PathLike) -> list[Path]:
    """Trial folders of an experiment: those with a ``cycles.jsonl``, in name order."""
    return sorted(p.parent for p in Path(experiment_dir).glob(f"*/{CYCLES_FILE}"))


def read_trial_rows(trial_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """One dict per cycle from a trial's ``cycles.jsonl``, with its folder and genotype."""
    trial_dir = Path(trial_dir)
    by_cycle: dict[int, dict[str, Any]] = {}
    for line in (trial_dir / CYCLES_FILE).read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            by_cycle[int(r["cycle"])] = r
    genotype = trial_dir / GENOTYPE_FILE
    return [{**by_cycle[c], "trial_dir": str(trial_dir),
             "genotype_path": str(genotype) if genotype.is_file() else None}
            for c in sorted(by_cycle)]


def _table(rows: list[dict[str, Any]], schema: list[tuple[str, pa.DataType, str]]) -> pa.Table:
    """Documented columns with their documented types, then any others as inferred."""
    known = [name for name, _, _ in schema]
    extra = sorted({k for r in rows for k in r} - set(known))
    arrays, fields = [], []
    for name, typ, _ in schema:
        arrays.append(pa.array([_clean(r.get(name)) for r in rows], type=typ))
        fields.append(pa.field(name, typ))
    for name in extra:
        arr = pa.array([_clean(r.get(name)) for r in rows])
        if pa.types.is_null(arr.type):
            arr = arr.cast(pa.string())
        arrays.append(arr)
        fields.append(pa.field(name, arr.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _clean(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict | list):
        return json.dumps(v)
    return v


def results_table(dirs: Iterable[str | os.PathLike]) -> pa.Table:
    rows = [row for d in dirs for row in read_trial_rows(d)]
    return _table(rows, RESULTS_SCHEMA)


def candidate_rows(results: pd.DataFrame) -> list[dict[str, Any]]:
    """Explode each (trial, cycle) row into its candidates, with their fate and origin."""
    out: list[dict[str, Any]] = []
    for _, trial in results.sort_values(["trial_id", "cycle"]).groupby("trial_id", sort=True):
        added_before: dict[tuple[str, int], dict[str, dict]] = {}
        prev_cycle = None
        for r in trial.itertuples(index=False):
            pools = json.loads(r.pools)
            alphas = json.loads(r.alphas)
            nxt = json.loads(r.pools_next) if isinstance(r.pools_next, str) else None
            fresh = added_before if prev_cycle == r.cycle - 1 else {}
            decided = json.loads(r.decisions) if isinstance(r.decisions, str) else []
            # The decision's own dropped list, not membership in the next pools: an op dropped
            # and re-added as a (rediscovered) child in the same step was dropped, then new.
            dropped = {(d["cell_type"], int(d["edge"])): {op for op, _ in d["dropped"]}
                       for d in decided}
            for t, edges in pools.items():
                for e, edge in enumerate(edges):
                    weights = softmax(alphas[t][e])
                    for i, op in enumerate(edge):
                        a = fresh.get((t, e), {}).get(op)
                        out.append({
                            "trial_id": r.trial_id, "space": r.space, "seed": r.seed,
                            "cycle": r.cycle, "cell_type": t, "edge": e, "position": i,
                            "op": op, "alpha": float(alphas[t][e][i]), "weight": weights[i],
                            "status": _status(op, nxt, dropped, t, e),
                            "new": a is not None,
                            "parent": a["parent"] if a else None,
                            "morphism": a["morphism"] if a else None,
                            "rediscovered": bool(a and a["rediscovered"]),
                        })
            added_before = {(d["cell_type"], int(d["edge"])): {n["op"]: n for n in d["added"]}
                            for d in decided}
            prev_cycle = r.cycle
    return out


def _status(op: str, nxt: dict | None, dropped: dict, t: str, e: int) -> str | None:
    if (t, e) in dropped:
        return "dropped" if op in dropped[(t, e)] else "survived"
    if nxt is None:
        return None
    return "survived" if op in nxt[t][e] else "dropped"


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def write_results(experiment_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                  *, overwrite: bool = False) -> tuple[Path, Path, pd.DataFrame]:
    """Write both parquet files (atomically) and return their paths and the results frame.

    Refuses to replace existing files unless ``overwrite`` (the driver passes it
    on ``--resume``, where the files are rebuilt from a superset of the same trials).
    """
    out = Path(out_dir or experiment_dir)
    paths = out / RESULTS_FILE, out / CANDIDATES_FILE
    if not overwrite:
        for p in paths:
            if p.exists():
                raise FileExistsError(f"{p} exists; not overwriting it (pass overwrite=True "
                                      "to rebuild it from the trial folders)")
    table = results_table(trial_dirs(experiment_dir))
    frame = table.to_pandas()
    cands = _table(candidate_rows(frame), CANDIDATES_SCHEMA) if len(frame) else \
        _table([], CANDIDATES_SCHEMA)
    atomic_write_bytes(paths[0], _parquet_bytes(table))
    atomic_write_bytes(paths[1], _parquet_bytes(cands))
    return paths[0], paths[1], frame


def summary(results: pd.DataFrame, errors: dict[str, str] | None = None) -> pd.DataFrame:
    """One line per trial: its last cycle's valid accuracy, genotype path and wall time."""
    errors = errors or {}
    if results.empty:
        return pd.DataFrame(columns=["trial_id", "space", "seed", "cycles", "valid_acc",
                                     "wall_time_s", "status", "genotype_path"])
    last = results.sort_values("cycle").groupby("trial_id", sort=True).tail(1)
    rows = []
    for r in last.sort_values(["space", "seed", "trial_id"]).itertuples(index=False):
        status = "error" if r.trial_id in errors else (
            "done" if isinstance(r.genotype_path, str) else "incomplete")
        rows.append({"trial_id": r.trial_id, "space": r.space, "seed": r.seed,
                     "cycles": f"{r.cycle}/{r.num_cycles}", "valid_acc": r.valid_acc,
                     "wall_time_s": r.wall_time_total_s, "status": status,
                     "genotype_path": r.genotype_path})
    return pd.DataFrame(rows)


def schema_markdown(schema: list[tuple[str, pa.DataType, str]]) -> str:
    """The documented form of a schema (docs/search.md embeds it; a test keeps them equal)."""
    lines = ["| column | type | meaning |", "|---|---|---|"]
    lines += [f"| `{name}` | {typ} | {doc} |" for name, typ, doc in schema]
    return "\n".join(lines)
