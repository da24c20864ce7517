"""A search experiment's trial folders -> ``results.parquet`` and ``candidates.parquet``.

The source is each trial's ``cycles.jsonl``, which the trial rebuilds from its
checkpointed engine state after every cycle: the decisions in it are the ones
applied, and a cycle lost to a retry is not in it. Tune's own ``result.json`` is
not used: Tune may replace the driver's copy with an older one from storage
when it restarts a paused trial. File names, schemas and the candidates' fates
are :mod:`prnas.records`' (the contract documented in ``docs/search.md``);
this module only writes them. Needs no Ray.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import pandas as pd
import pyarrow as pa

from prnas.cycle_record import CycleRecord
from prnas.filenames import CANDIDATES_FILE, RESULTS_FILE
from prnas.records import (
    CANDIDATES_SCHEMA,
    RESULTS_SCHEMA,
    candidate_fates,
    read_trial_rows,
    table,
    trial_dirs,
    write_parquet,
)
from prnas.space.fates import HALVED
from prnas.storage import Location, as_location


def tables(dirs: Iterable[str | os.PathLike | Location]) -> tuple[pa.Table, pa.Table]:
    """results and candidates, both from the trials' plain rows (JSON text only in the cells)."""
    rows = [row for d in dirs for row in read_trial_rows(d)]
    fates = candidate_fates(CycleRecord.from_json(r) for r in rows)
    return table(rows, RESULTS_SCHEMA), table(fates, CANDIDATES_SCHEMA)


def write_results(experiment_dir: str | os.PathLike | Location,
                  out_dir: str | os.PathLike | Location | None = None,
                  *, overwrite: bool = False) -> tuple[Location, Location, pd.DataFrame]:
    """Write both parquet files (each whole, atomically) and return their locations and the
    results frame. The experiment may be a folder or a storage URI (:mod:`prnas.storage`).

    Refuses to replace existing files unless ``overwrite`` (the driver passes it
    on ``--resume``, where the files are rebuilt from a superset of the same trials).
    """
    experiment = as_location(experiment_dir)
    out = experiment if out_dir is None else as_location(out_dir)
    paths = out / RESULTS_FILE, out / CANDIDATES_FILE
    if not overwrite:
        for p in paths:
            if p.exists():
                raise FileExistsError(f"{p} exists; not overwriting it (pass overwrite=True "
                                      "to rebuild it from the trial folders)")
    results, cands = tables(trial_dirs(experiment))
    frame = results.to_pandas()
    write_parquet(results, paths[0])
    write_parquet(cands, paths[1])
    return paths[0], paths[1], frame


def summary(results: pd.DataFrame, errors: dict[str, str] | None = None) -> pd.DataFrame:
    """One line per trial: its last cycle's valid accuracy, genotype path and wall time;
    ``status``: done, halved (stopped by its population), error or incomplete."""
    errors = errors or {}
    if results.empty:
        return pd.DataFrame(columns=["trial_id", "space", "seed", "cycles", "valid_acc",
                                     "wall_time_s", "status", "genotype_path"])
    last = results.sort_values("cycle").groupby("trial_id", sort=True).tail(1)
    rows = []
    for r in last.sort_values(["space", "seed", "trial_id"]).itertuples(index=False):
        event = getattr(r, "population_event", None)
        status = "error" if r.trial_id in errors else (
            "done" if isinstance(r.genotype_path, str) else
            "halved" if event == HALVED else "incomplete")
        rows.append({"trial_id": r.trial_id, "space": r.space, "seed": r.seed,
                     "cycles": f"{r.cycle}/{r.num_cycles}", "valid_acc": r.valid_acc,
                     "wall_time_s": r.wall_time_total_s, "status": status,
                     "genotype_path": r.genotype_path})
    return pd.DataFrame(rows)
