"""results.parquet / candidates.parquet: the documented schema, one row per trial and cycle,
candidate rows that agree with the pools. No Ray cluster: the Trainable is driven by hand the
way the Tune scheduler drives it (step, decide, new config, checkpoint, restore)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from prnas.search.config import build_config

pytest.importorskip("ray")

from tiny import tiny_search

from prnas.records import CANDIDATES_SCHEMA, RESULTS_SCHEMA  # noqa: E402
from prnas.storage import Location, location
from prnas.tune.results import write_results  # noqa: E402
from prnas.tune.scheduler import decision_for  # noqa: E402
from prnas.tune.search_trainable import DECISION_KEY, SearchTrainable  # noqa: E402

# A module fixture runs a real search first: the whole module is in the slow lane.
pytestmark = pytest.mark.slow

DOCS = Path(__file__).resolve().parents[1] / "docs" / "search.md"

TINY = tiny_search(data={"subset": 120, "test_subset": 40}, network={"nodes": 3},
                   evaluate_test=True)


class FolderTrainable(SearchTrainable):
    """The search Trainable outside Tune: trial folder and id come from the config."""

    def trial_folder(self) -> Location:
        return location(self.config["folder"])

    @property
    def trial_id(self) -> str:
        return self.config["trial"]


def _drive(folder: Path, trial: str, seed: int, cycles: int | None = None) -> None:
    """What Tune and the scheduler do, step by step: a new actor for every cycle."""
    config = {"search": build_config(TINY).model_dump(mode="json"), "seed": seed,
              "space": "DL", "resources": {"cpu": 1}, "folder": str(folder), "trial": trial}
    t = FolderTrainable(config=dict(config))
    done = 0
    while True:
        result = t.train()
        done += 1
        if result["done"] or done == cycles:
            return
        config = {**config, DECISION_KEY: decision_for(config, result)}
        saved = t.save()
        t.stop()
        t = FolderTrainable(config=dict(config))
        t.restore(saved)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    import ray.tune.trainable.trainable as trainable_mod

    root = tmp_path_factory.mktemp("exp")
    scratch = tmp_path_factory.mktemp("logdirs")
    before = trainable_mod.DEFAULT_STORAGE_PATH, torch.get_num_threads()
    trainable_mod.DEFAULT_STORAGE_PATH = str(scratch)  # Trainable logdirs outside Tune
    try:
        _drive(root / "DL-seed0-t0", "t0", seed=0)
        _drive(root / "DL-seed1-t1", "t1", seed=1)
        _drive(root / "DL-seed2-t2", "t2", seed=2, cycles=1)  # interrupted after cycle 1
    finally:
        trainable_mod.DEFAULT_STORAGE_PATH = before[0]
        torch.set_num_threads(before[1])
    res, cand, _frame = write_results(root)
    return root, pd.read_parquet(res), pd.read_parquet(cand), res, cand


def test_results_columns_and_types_are_the_documented_ones(experiment):
    _root, _res, _cand, res_path, cand_path = experiment
    for path, schema in ((res_path, RESULTS_SCHEMA), (cand_path, CANDIDATES_SCHEMA)):
        arrow = pq.read_schema(path)
        assert arrow.names == [name for name, _, _ in schema]
        assert [str(f.type) for f in arrow] == [str(typ) for _, typ, _ in schema]


def schema_markdown(schema: list[tuple[str, object, str]]) -> str:
    """The documented form of a schema (docs/search.md embeds it)."""
    lines = ["| column | type | meaning |", "|---|---|---|"]
    lines += [f"| `{name}` | {typ} | {doc} |" for name, typ, doc in schema]
    return "\n".join(lines)


def test_docs_show_the_schema(experiment):
    text = DOCS.read_text()
    assert schema_markdown(RESULTS_SCHEMA) in text
    assert schema_markdown(CANDIDATES_SCHEMA) in text


def test_one_row_per_trial_and_cycle(experiment):
    _root, res, _cand, _rp, _cp = experiment
    assert not res.duplicated(["trial_id", "cycle"]).any()
    assert res.groupby("trial_id")["cycle"].apply(list).to_dict() == {
        "t0": [1, 2, 3], "t1": [1, 2, 3], "t2": [1]}
    assert dict(zip(res["trial_id"], res["seed"])) == {"t0": 0, "t1": 1, "t2": 2}
    done = res[res["trial_id"] != "t2"]
    assert done["genotype_path"].map(lambda p: Path(p).is_file()).all()
    assert done["test_acc"].notna().all()
    assert (done["wall_time_total_s"] >= done["wall_time_s"]).all()
    assert done.groupby("trial_id")["wall_time_total_s"].is_monotonic_increasing.all()
    # The unfinished trial: no decision after its cycle, no genotype yet.
    (open_row,) = res[res["trial_id"] == "t2"].itertuples()
    assert pd.isna(open_row.pools_next) and pd.isna(open_row.genotype_path)
    for r in done.itertuples():
        assert len(json.loads(r.epoch_metrics)) == r.epochs
        assert isinstance(json.loads(r.decisions), list) and r.pools_next


def test_candidate_rows_agree_with_pools_and_decisions(experiment):
    _root, res, cand, _rp, _cp = experiment
    assert len(cand) == sum(len(e) for p in res["pools"] for edges in json.loads(p).values()
                            for e in edges)
    for r in res.itertuples():
        rows = cand[(cand["trial_id"] == r.trial_id) & (cand["cycle"] == r.cycle)]
        pools = json.loads(r.pools)
        nxt = json.loads(r.pools_next) if isinstance(r.pools_next, str) else None
        for (t, e), g in rows.groupby(["cell_type", "edge"]):
            g = g.sort_values("position")
            assert list(g["op"]) == pools[t][e]
            assert g["weight"].sum() == pytest.approx(1.0)
            assert list(g["alpha"]) == json.loads(r.alphas)[t][e]
            if nxt is None:
                assert g["status"].isna().all()
            else:
                dropped = {op for d in json.loads(r.decisions)
                           if (d["cell_type"], d["edge"]) == (t, e) for op, _ in d["dropped"]}
                assert set(g.loc[g["status"] == "dropped", "op"]) == dropped
                assert set(g.loc[g["status"] == "survived", "op"]) == set(pools[t][e]) - dropped
                assert set(pools[t][e]) - dropped <= set(nxt[t][e])
    # New candidates of cycle c+1 are exactly the ops added by cycle c's decision.
    for tid, trial in res.groupby("trial_id"):
        trial = trial.sort_values("cycle")
        for prev, cur in zip(trial.itertuples(), trial.iloc[1:].itertuples()):
            added = {(d["cell_type"], d["edge"], a["op"]): a
                     for d in json.loads(prev.decisions) for a in d["new"]}
            new = cand[(cand["trial_id"] == tid) & (cand["cycle"] == cur.cycle) & cand["new"]]
            assert {(x.cell_type, x.edge, x.op) for x in new.itertuples()} == set(added)
            for x in new.itertuples():
                a = added[(x.cell_type, x.edge, x.op)]
                assert (x.parent, x.morphism) == (a["parent"], a["morphism"])
        first = cand[(cand["trial_id"] == tid) & (cand["cycle"] == 1)]
        assert not first["new"].any() and first["parent"].isna().all()
    assert cand.loc[cand["cycle"] == 2, "new"].any()


def test_existing_parquet_is_not_overwritten_unless_asked(experiment):
    root, res, _cand, res_path, _cp = experiment
    before = res_path.read_bytes()
    with pytest.raises(FileExistsError, match="not overwriting"):
        write_results(root)
    assert res_path.read_bytes() == before
    _r, _c, frame = write_results(root, overwrite=True)
    assert len(frame) == len(res)


def same(r):
    """What a cycle record holds beyond its scalar columns."""
    return r.cycle, r.pools, r.alphas, r.histories, r.epoch_metrics, r.decisions, r.pools_next


def test_one_cycle_is_one_record_from_the_engine_to_the_parquet_files(tmp_path):
    """A cycle followed through every step of the data path: the engine's CycleRecord, the
    Tune result (as Tune hands it to the scheduler: flattened), the checkpoint, the trial's
    cycles.jsonl and results.parquet all hold that one record, in its one JSON form."""
    import ray.tune.trainable.trainable as trainable_mod
    from ray.tune.utils import flatten_dict

    from analysis import loaders
    from prnas.cycle_record import CycleRecord
    from prnas.filenames import CYCLES_FILE, RESULTS_FILE
    from prnas.records import read_jsonl
    from prnas.runtime import checkpoint
    from prnas.tune import ray_compat
    from prnas.tune.search_trainable import CHECKPOINT_FILE

    before = trainable_mod.DEFAULT_STORAGE_PATH, torch.get_num_threads()
    trainable_mod.DEFAULT_STORAGE_PATH = str(tmp_path / "logdirs")
    folder = tmp_path / "exp" / "DL-seed5-t5"
    config = {"search": build_config(TINY).model_dump(mode="json"), "seed": 5,
              "space": "DL", "resources": {"cpu": 1}, "folder": str(folder), "trial": "t5"}
    try:
        t = FolderTrainable(config=dict(config))
        result = t.train()
        engine = t._pending  # what Search.run_cycle handed over
        assert isinstance(engine, CycleRecord) and engine.decisions is None
        # The Tune result, flattened as the scheduler receives it, nested back.
        assert same(CycleRecord.from_json(ray_compat.nested(flatten_dict(result)))) == same(engine)
        # The checkpoint.
        t.save_checkpoint(str(tmp_path / "ckpt"))
        state = checkpoint.load(tmp_path / "ckpt" / CHECKPOINT_FILE, kind="search")
        assert same(CycleRecord.from_json(state["pending"])) == same(engine)
        # The decision closes the record; cycles.jsonl then holds the closed one.
        config = {**config, DECISION_KEY: decision_for(config, result)}
        t.stop()
        t = FolderTrainable(config=dict(config))
        t.load_checkpoint(str(tmp_path / "ckpt"))
        assert t.apply_decision()
        closed = t.search.cycle_log[0]
        assert same(closed)[:5] == same(engine)[:5] and closed.decisions is not None
        t.files.write_cycles(t.search.cycle_log)
        (row,) = read_jsonl(folder / CYCLES_FILE, "cycle")
        assert same(CycleRecord.from_json(row)) == same(closed)
        assert row["trial_id"] == "t5" and row["seed"] == 5
        # results.parquet: nested values as JSON text in the cells; the analysis reads the
        # same record back.
        res_path, _cand, _frame = write_results(tmp_path / "exp")
        (parquet_row,) = pd.read_parquet(res_path).to_dict("records")
        assert isinstance(parquet_row["pools"], str)
        (loaded,) = loaders.load_results(tmp_path / "exp").to_dict("records")
        assert same(CycleRecord.from_json(loaded)) == same(closed)
        assert res_path.name == RESULTS_FILE
    finally:
        trainable_mod.DEFAULT_STORAGE_PATH = before[0]
        torch.set_num_threads(before[1])
