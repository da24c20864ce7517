"""#ops discovered / discoverable and the lineage on hand-built pool histories (no training)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pyarrow.parquet as pq
import pytest

from analysis import lineage, loaders, tables
from analysis.discovery import discoverable_ops, discovered_ops, morph_rounds, trial_pool_history
from prnas.records import RESULTS_SCHEMA, table

INIT = ["max_pool_3x3", "avg_pool_3x3", "skip", "conv_k3_d1"]


def _decision(cell, edge, kept, dropped, added):
    return {"cell_type": cell, "edge": edge, "survived": [[op, 0.3] for op in kept],
            "dropped": [[op, 0.1] for op in dropped],
            "new": [{"op": op, "parent": parent, "morphism": m, "rediscovered": r}
                      for op, parent, m, r in added]}


# One normal edge and one reduce edge (a 1-node cell has 2 edges; the second is unchanged).
# Normal edge 0 over three cycles:
#   cycle 1: INIT                              -> drop both pools, add k5 (k3 kernel_up) and
#                                                 k3_d2 (k3 dilation_up)
#   cycle 2: skip, k3, k5, k3_d2               -> drop k3_d2, then re-add it at once
#                                                 (rediscovered) and add k7 (k5 kernel_up)
#   cycle 3: skip, k3, k5, k3_d2, k7 (final)   -> keep k7
HISTORY = [
    {"normal": [INIT, INIT], "reduce": [INIT, INIT]},
    {"normal": [["skip", "conv_k3_d1", "conv_k5_d1", "conv_k3_d2"], INIT],
     "reduce": [INIT, INIT]},
    {"normal": [["skip", "conv_k3_d1", "conv_k5_d1", "conv_k3_d2", "conv_k7_d1"], INIT],
     "reduce": [INIT, INIT]},
    {"normal": [["conv_k7_d1"], ["conv_k3_d1"]], "reduce": [["skip"], ["conv_k3_d1"]]},
]
DECISIONS = [
    [_decision("normal", 0, ["skip", "conv_k3_d1"], ["max_pool_3x3", "avg_pool_3x3"],
               [("conv_k5_d1", "conv_k3_d1", "kernel_up", False),
                ("conv_k3_d2", "conv_k3_d1", "dilation_up", False)])],
    [_decision("normal", 0, ["skip", "conv_k3_d1", "conv_k5_d1"], ["conv_k3_d2"],
               [("conv_k3_d2", "conv_k3_d1", "dilation_up", True),
                ("conv_k7_d1", "conv_k5_d1", "kernel_up", False)])],
    [_decision("normal", 0, ["conv_k7_d1"],
               ["skip", "conv_k3_d1", "conv_k5_d1", "conv_k3_d2"], [])],
]


def _alphas(pools):
    # Later ops a little stronger, so weights differ and are easy to predict.
    return {t: [[0.1 * i for i in range(len(edge))] for edge in edges]
            for t, edges in pools.items()}


@pytest.fixture
def experiment(tmp_path):
    rows = []
    for c in range(3):
        epochs = [{"cycle": c + 1, "epoch": 1, "grace": True, "train_acc": 0.1 * (c + 1),
                   "valid_acc": 0.1 * c, "epoch_time_s": 10.0, "batch_size_mean": 32.0}]
        rows.append({
            "trial_id": "t0", "seed": 7, "space": "DL", "cycle": c + 1, "num_cycles": 3,
            "train_acc": 0.5, "valid_acc": 0.4 + 0.1 * c, "cycle_time_s": 1700.0,
            "wall_time_s": 1800.0, "wall_time_total_s": 1800.0 * (c + 1),
            "epoch_metrics": json.dumps(epochs), "pools": json.dumps(HISTORY[c]),
            "pools_next": json.dumps(HISTORY[c + 1]), "alphas": json.dumps(_alphas(HISTORY[c])),
            "decisions": json.dumps(DECISIONS[c]),
        })
    pq.write_table(table(rows, RESULTS_SCHEMA), tmp_path / "results.parquet")  # as the job
    return tmp_path


def test_discovered_and_discoverable_on_a_hand_built_history(experiment):
    results = loaders.load_results(experiment)
    history = trial_pool_history(results)
    assert discovered_ops(history, "normal") == {*INIT, "conv_k5_d1", "conv_k3_d2",
                                                 "conv_k7_d1"}
    assert discovered_ops(history, "reduce") == set(INIT)
    assert morph_rounds(results) == 2  # cycles 1 and 2 added ops, cycle 3 did not
    table = tables.search_table(results)
    row = table.iloc[0]
    assert (row["ops_discovered"], row["morph_rounds"]) == (7, 2)
    # DL within 2 morphisms of conv_k3_d1: k3_d1, k3_d2, k5_d1, k5_d2, k7_d1, k3_d1_e1,
    # k3_d2_e1, k5_d1_e1 (8 convs), plus skip and the two poolings.
    assert row["ops_discoverable"] == 8 + 3
    assert row["ops"] == f"7/{row['ops_discoverable']}"
    # The trial's wall time (not the cycles' training times), in device-hours.
    assert math.isclose(row["wall_time_s"], 3 * 1800.0)
    assert math.isclose(row["cost_hours"], 1.5) and row["cost_unit"] == "device-hours"
    assert row["genotype_normal"] is None and row["finished"]


def test_morph_rounds_prefers_the_schedule():
    rows = pd.DataFrame({"morphs": [3, 3, 3, 3, 3, 0, 0, 0, 0],
                         "decisions": [[]] * 9})
    assert morph_rounds(rows) == 5


@pytest.mark.parametrize(("space", "paper", "functional"), [
    ("DL", 15, 15), ("DR", 39, 35), ("UR", 83, 76)])
def test_discoverable_reproduces_table_iii_with_paper_counting(space, paper, functional):
    assert discoverable_ops(space, 5) == paper  # Table III: 15, 39, 83
    assert discoverable_ops(space, 5, paper_counting=False) == functional
    assert discoverable_ops(space, 0) == 4  # the initial pool
    assert discoverable_ops("custom", 5) is None


def test_lineage_on_a_hand_built_history(experiment):
    rows = loaders.load_results(experiment)
    lin = lineage.edge_lineage(rows, "normal", 0)
    by = {(r.op, r.entered_cycle): r for r in lin.itertuples()}
    assert set(by) == {("max_pool_3x3", 1), ("avg_pool_3x3", 1), ("skip", 1),
                       ("conv_k3_d1", 1), ("conv_k5_d1", 2), ("conv_k3_d2", 2),
                       ("conv_k3_d2", 3), ("conv_k7_d1", 3)}
    assert by[("max_pool_3x3", 1)].dropped_after == 1
    first, again = by[("conv_k3_d2", 2)], by[("conv_k3_d2", 3)]
    assert (first.dropped_after, first.rediscovered) == (2, False)
    assert (again.parent, again.morphism, again.rediscovered) == ("conv_k3_d1", "dilation_up",
                                                                   True)
    assert by[("conv_k7_d1", 3)].parent == "conv_k5_d1" and by[("conv_k7_d1", 3)].final
    assert lin["final"].sum() == 1
    assert by[("skip", 1)].last_cycle == 3 and by[("skip", 1)].dropped_after == 3
    # Weights are the softmax of the cycle's alphas: k7 is the strongest of 5 in cycle 3.
    assert by[("conv_k7_d1", 3)].last_weight == pytest.approx(
        math.exp(0.4) / sum(math.exp(0.1 * i) for i in range(5)))
    assert lineage.busiest_edge(rows, "normal") == 0
    with pytest.raises(ValueError, match="cell type 'both'"):
        lineage.edge_lineage(rows, "both", 0)


def test_markdown_and_plus_minus():
    df = pd.DataFrame({"a": ["x|y", None], "b": [1.5, float("nan")]})
    assert tables.to_markdown(df) == "| a | b |\n|---|---|\n| x\\|y | 1.5 |\n|  |  |\n"
    assert tables.pm(2.512, 0.0912) == "2.51 ± 0.09"
    assert tables.pm(2.5, float("nan")) == "2.50"
    assert tables.pm(0.9, 0.01, 1, 100) == "90.0 ± 1.0"


def test_errors_say_what_to_pass(experiment, tmp_path):
    nested = tmp_path / "runs" / "exp"
    nested.mkdir(parents=True)
    (experiment / "results.parquet").rename(nested / "results.parquet")
    with pytest.raises(loaders.ExperimentError, match=r"did you mean .*runs/exp\?"):
        loaders.load_results(tmp_path / "runs")
    with pytest.raises(loaders.ExperimentError, match="no candidates.parquet next to results"):
        loaders.load_candidates(nested)
    with pytest.raises(loaders.ExperimentError, match="pass at least one"):
        loaders.load_results()
    assert len(loaders.load_results(nested / "results.parquet")) == 3  # the file itself is fine


@pytest.mark.slow
def test_analysis_needs_neither_ray_nor_torch():
    import subprocess
    import sys

    code = ("import sys, analysis.report, analysis.__main__; "
            "print(sorted(m for m in ('ray', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"
