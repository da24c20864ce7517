"""One data path, end to end and without Ray: a search config -> the engine -> the trial's
``cycles.jsonl`` -> ``candidates.parquet`` -> the analysis lineage table. One op is followed
through it, and its fate and parent are checked at every cycle against the engine's own
decisions (native ``EdgeDecision`` values, not the records code under test)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from tiny import tiny_search

from analysis import lineage, loaders
from prnas import records
from prnas.cycle_record import CycleRecord
from prnas.search.config import build_config
from prnas.search.engine import Search
from prnas.tune.results import write_results

TINY = tiny_search()


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    cfg = build_config(TINY, {"seed": 3, "num_threads": 1})
    before = torch.get_num_threads()
    try:
        search = Search(cfg, log=None)
        search.run()
    finally:
        torch.set_num_threads(before)
    root = tmp_path_factory.mktemp("exp")
    trial = root / "DL-seed3-t0"
    trial.mkdir()
    rows = [m.with_columns(trial_id="t0", name=cfg.name, space=cfg.space, seed=cfg.seed,
                           morphs=cfg.schedule[m.cycle - 1].morphs, gpus_per_trial=0.0).to_json()
            for m in search.cycle_log]
    (trial / records.CYCLES_FILE).write_text(records.jsonl_text(rows))
    write_results(root)
    return root, search


def test_cycles_jsonl_holds_plain_json_objects(experiment):
    root, search = experiment
    lines = (root / "DL-seed3-t0" / records.CYCLES_FILE).read_text().splitlines()
    assert len(lines) == len(search.cycle_log) == 3
    for line, native in zip(lines, search.cycle_log):
        row = json.loads(line)
        for key in ("pools", "pools_next", "alphas", "histories"):
            assert isinstance(row[key], dict), key  # an object, not JSON text inside JSON
        assert isinstance(row["decisions"], list) and isinstance(row["epoch_metrics"], list)
        # The one codec round-trips the engine's native record.
        back = CycleRecord.from_json(row)
        assert back.pools == native.pools and back.decisions == native.decisions
        assert back.pools_next == native.pools_next and back.alphas == native.alphas
        assert row["morphs"] == TINY["schedule"][row["cycle"] - 1]["morphs"]


def test_one_op_from_config_to_candidates_to_lineage(experiment):
    root, search = experiment
    log = search.cycle_log
    # The op to follow: the first candidate the first decision added to a normal edge.
    first = next(d for d in log[0].decisions if d.cell_type == "normal" and d.new)
    edge, born = first.edge, first.new[0]
    op, parent = str(born.op), str(born.parent)

    cand = loaders.load_candidates(root)
    cand = cand[(cand["cell_type"] == "normal") & (cand["edge"] == edge)]
    rows = loaders.select_trial(loaders.load_results(root), "t0")
    lin = lineage.edge_lineage(rows, "normal", edge, candidates=cand)

    fates = []  # per cycle, from the engine: (in the pool, entered this cycle, dropped after)
    for c, m in enumerate(log, start=1):
        d = next(x for x in m.decisions if x.cell_type == "normal" and x.edge == edge)
        in_pool = any(str(o) == op for o in m.pools["normal"][edge])
        entered = c > 1 and any(str(n.op) == op for n in
                                next(x for x in log[c - 2].decisions
                                     if x.cell_type == "normal" and x.edge == edge).new)
        dropped = any(str(o) == op for o, _ in d.dropped)
        fates.append((in_pool, entered, dropped))
    assert fates[0] == (False, False, False) and fates[1][:2] == (True, True)

    for c, (in_pool, entered, dropped) in enumerate(fates, start=1):
        at = cand[(cand["cycle"] == c) & (cand["op"] == op)]
        assert len(at) == int(in_pool), c
        if not in_pool:
            continue
        r = at.iloc[0]
        assert bool(r["new"]) == entered, c
        assert r["status"] == ("dropped" if dropped else "survived"), c
        if entered:
            assert (r["parent"], r["morphism"]) == (parent, str(born.morphism)), c
        else:
            assert pd.isna(r["parent"]), c

    # The lineage table: one stay from cycle 2, with that parent, ending where the engine
    # dropped it (or in the final pool).
    stays = lin[lin["op"] == op]
    assert len(stays) == 1
    stay = stays.iloc[0]
    assert (stay["entered_cycle"], stay["parent"]) == (2, parent)
    assert stay["morphism"] == str(born.morphism)
    trained = [c for c, (p, _, _) in enumerate(fates, start=1) if p]
    assert stay["last_cycle"] == trained[-1]
    dropped_at = [c for c, (p, _, d) in enumerate(fates, start=1) if p and d]
    if dropped_at:
        assert stay["dropped_after"] == dropped_at[0] and not stay["final"]
    else:
        assert stay["final"] and any(str(o) == op for o in log[-1].pools_next["normal"][edge])
    # Its parent was in the pool from cycle 1 and survived the decision that created the op.
    p_stay = lin[(lin["op"] == parent) & (lin["entered_cycle"] == 1)].iloc[0]
    assert pd.isna(p_stay["parent"]) and p_stay["last_cycle"] >= 2
    assert pd.isna(p_stay["dropped_after"]) or p_stay["dropped_after"] >= 2
