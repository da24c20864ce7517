"""The reviewer's sections of the analysis: searched vs random statistics, cross-seed agreement,
the best-practice checklist, on small synthetic tables whose answers are known by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from analysis import agreement, baseline, checklist, loaders, report, tables
from analysis.report import build_report
from prnas.records import RESULTS_SCHEMA, table
from prnas.retrain.results import rows_to_frame
from prnas.space.genotype import Genotype
from prnas.space.ops import Op
from prnas.space.similarity import similarity


def runs_frame(groups: dict[str, list[list[float]]], params: float = 1e5) -> pd.DataFrame:
    """A run table: per kind, one list of run errors per cell."""
    rows = []
    for kind, cells in groups.items():
        for c, errors in enumerate(cells):
            for seed, err in enumerate(errors):
                rows.append({"experiment": "x", "trial_id": f"{kind}{c}s{seed}",
                             "genotype": f"{kind}-{c}", "kind": kind, "cell": f"{kind}-{c}",
                             "seed": seed, "params": params, "macs": np.nan,
                             "final_test_error": err})
    return pd.DataFrame(rows, columns=baseline.RUN_COLUMNS)


# ----------------------------------------------------------------------------- statistics


def test_group_table_counts_runs_and_cells():
    runs = runs_frame({"searched": [[2.0, 4.0], [3.0]], "random": [[5.0], [7.0]],
                       "preset": [[1.0]]})
    g = baseline.group_table(runs).set_index("kind")
    assert list(g.index) == ["searched", "random", "preset"]
    assert (g.loc["searched", "runs"], g.loc["searched", "cells"]) == (3, 2)
    assert g.loc["searched", "error_mean"] == pytest.approx(3.0)
    assert g.loc["searched", "error_std"] == pytest.approx(1.0)
    assert g.loc["random", "error_std"] == pytest.approx(math.sqrt(2))
    assert math.isnan(g.loc["preset", "error_std"])
    assert "MACs (mean)" not in baseline.format_groups(g.reset_index()).columns


def test_separated_groups_give_the_exact_rank_test_and_a_verdict():
    runs = runs_frame({"searched": [[e] for e in (1, 2, 3, 4, 5)],
                       "random": [[e] for e in (6, 7, 8, 9, 10)]})
    c = baseline.compare(runs)
    assert c.difference == pytest.approx(-5.0)
    assert c.mann_whitney_u == 0
    assert c.p_value == pytest.approx(2 / math.comb(10, 5))  # exact: the most extreme ordering
    assert c.smallest_p == pytest.approx(2 / 252)
    assert c.ci_low < c.ci_high < 0 and c.conclusive
    assert c.statement.startswith("Searched cells reach a lower test error")


def test_cluster_bootstrap_resamples_cells_not_runs():
    # Searched: cell A (four runs of 1), cell B (one run of 3); random: one cell at 0.
    # Resampled pairs AA, AB, BB (p = 1/4, 1/2, 1/4) give means 1, 7/5, 3.
    runs = runs_frame({"searched": [[1.0] * 4, [3.0]], "random": [[0.0]]})
    c = baseline.compare(runs, n_boot=4000)
    assert c.difference == pytest.approx(7 / 5)
    assert (c.ci_low, c.ci_high) == (pytest.approx(1.0), pytest.approx(3.0))
    assert not c.conclusive and c.statement.startswith("Too few cells to conclude anything")
    same = runs_frame({"searched": [[3.0, 3.0]] * 5, "random": [[5.0, 5.0]] * 5})
    c = baseline.compare(same)
    assert (c.difference, c.ci_low, c.ci_high) == (-2.0, -2.0, -2.0)


def test_bootstrap_interval_matches_the_normal_theory_on_large_samples():
    rng = np.random.default_rng(1)
    a, b = rng.normal(2.0, 1.0, 400), rng.normal(2.5, 1.0, 400)
    c = baseline.compare(runs_frame({"searched": [[x] for x in a], "random": [[x] for x in b]}))
    half = 1.96 * math.sqrt(a.var(ddof=1) / 400 + b.var(ddof=1) / 400)
    assert c.difference == pytest.approx(a.mean() - b.mean())
    assert (c.ci_high - c.ci_low) / 2 == pytest.approx(half, rel=0.1)
    assert (c.ci_low + c.ci_high) / 2 == pytest.approx(c.difference, abs=0.03)


def test_small_or_overlapping_groups_are_not_called_a_win():
    small = baseline.compare(runs_frame({"searched": [[1.0], [2.0], [3.0]],
                                         "random": [[4.0], [5.0], [6.0]]}))
    assert small.p_value == pytest.approx(0.1) and small.smallest_p == pytest.approx(0.1)
    assert not small.conclusive and "at least 5 cells per group" in small.statement
    mixed = baseline.compare(runs_frame({"searched": [[e] for e in (1, 4, 5, 8, 9, 12)],
                                         "random": [[e] for e in (2, 3, 6, 7, 10, 11)]}))
    assert mixed.p_value > 0.5 and not mixed.conclusive
    assert mixed.statement.startswith("No significant difference")


def test_missing_groups_are_stated_not_failed():
    c = baseline.compare(runs_frame({"searched": [[1.0], [2.0]]}))
    assert c.runs_random == 0 and math.isnan(c.difference) and math.isnan(c.p_value)
    assert c.statement.startswith("No random runs") and "--random" in c.statement
    c = baseline.compare(runs_frame({"preset": [[1.0]]}))
    assert c.statement.startswith("No searched and random runs")
    baseline.comparison_figure(runs_frame({"preset": [[1.0]]}))  # draws, does not raise


def retrain_rows(kinds: dict[str, str | None], macs: bool, epochs: int = 3) -> pd.DataFrame:
    rows = []
    for n, (label, kind) in enumerate(kinds.items()):
        for e in range(1, epochs + 1):
            rows.append({"experiment": "r", "trial_id": f"t{n}", "genotype": label,
                         "genotype_path": None if kind == "preset" else f"/no/{label}.json",
                         "kind": kind, "seed": 0, "dataset": "demo", "params": 1000 + n,
                         "epoch": e, "test_error": 10.0 * n + e, "lr": 0.1 / e,
                         "drop_path_prob": 0.1 * e, "experiment_dir": "/nonexistent",
                         **({"macs": 5e6 + n} if macs else {})})
    return pd.DataFrame(rows)


def test_run_table_takes_kind_and_macs():
    df = retrain_rows({"s": "searched", "r": "random", "p": "preset"}, macs=True)
    runs = baseline.run_table(df, report_last=2)
    assert list(runs["kind"]) == ["searched", "random", "preset"]
    assert list(runs["final_test_error"]) == [2.5, 12.5, 22.5]
    assert list(runs["macs"]) == [5e6, 5e6 + 1, 5e6 + 2]
    assert "MACs (mean)" in baseline.format_groups(baseline.group_table(runs)).columns


def test_random_cells_are_compared_within_their_own_space(tmp_path):
    # Run errors by (space, kind): DL's search beats DL's random cells, DR has no random ones.
    spec = {("DL", "searched"): [1, 2, 3, 4, 5], ("DL", "random"): [6, 7, 8, 9, 10],
            ("DR", "searched"): [20, 21, 22, 23, 24]}
    rows, n = [], 0
    for (space, kind), errors in spec.items():
        for err in errors:
            path = tmp_path / f"{space}-{kind}-{n}.json"
            path.write_text(json.dumps({"space": space, "kind": kind}))
            rows += [{"experiment": "r", "trial_id": f"t{n}", "genotype": path.stem,
                      "genotype_path": str(path), "kind": kind, "seed": 0, "dataset": "demo",
                      "params": 1000, "epoch": 1, "test_error": float(err), "lr": 0.1,
                      "drop_path_prob": 0.0, "experiment_dir": "/nonexistent"}]
            n += 1
    runs = baseline.run_table(pd.DataFrame(rows), report_last=1)
    assert runs.groupby("space")["kind"].value_counts().to_dict() == {
        ("DL", "searched"): 5, ("DL", "random"): 5, ("DR", "searched"): 5}
    by_space = baseline.compare_by_space(runs)
    assert list(by_space["space"]) == ["DL"]  # DR has no baseline of its own
    dl = baseline.compare(runs[runs["space"] == "DL"])
    assert by_space.loc[0, "difference"] == pytest.approx(dl.difference) == pytest.approx(-5.0)
    assert by_space.loc[0, "p_value"] == pytest.approx(2 / 252)
    pooled = baseline.compare(runs)  # DR's poor searched cells drag the pooled mean up
    assert pooled.difference == pytest.approx(np.mean([1, 2, 3, 4, 5] + list(range(20, 25)))
                                              - 8.0)
    assert baseline.compare_by_space(runs[runs["space"] == "DR"]).empty


# ----------------------------------------------------------------------------- agreement

K3, K5, SKIP, MAX = Op.conv(3), Op.conv(5), Op.skip(), Op.max_pool()
CELL = ((K3, 0), (SKIP, 1), (MAX, 0), (K3, 2), (K5, 1), (K3, 3), (SKIP, 0), (K3, 4))


def test_cell_agreement_matches_edges_within_nodes():
    assert agreement.cell_agreement(CELL, CELL) == (1.0, 1.0)
    swapped = (CELL[1], CELL[0], *CELL[2:])  # the same node written the other way round
    assert agreement.cell_agreement(CELL, swapped) == (1.0, 1.0)
    changed = (*CELL[:4], (K3, 1), *CELL[5:])  # one op differs, its input is kept
    sim, same = agreement.cell_agreement(CELL, changed)
    assert same == pytest.approx(7 / 8)
    assert sim == pytest.approx((7 + similarity(K5, K3)) / 8)
    rewired = (*CELL[:4], (K5, 0), *CELL[5:])  # same op, other input: similar, not identical
    assert agreement.cell_agreement(CELL, rewired) == (1.0, pytest.approx(7 / 8))


def test_pool_agreement_measures():
    assert agreement.pool_match_similarity(["skip", "conv_k3_d1"], ["conv_k3_d1", "skip"]) == 1.0
    half = agreement.pool_match_similarity(["skip"], ["max_pool_3x3"])
    assert half == similarity(SKIP, MAX) == 0.0
    assert agreement._jaccard(["skip", "conv_k3_d1"], ["skip", "max_pool_3x3"]) == 1 / 3


# ----------------------------------------------------------------------------- a whole report


def _genotype(cell) -> Genotype:
    return Genotype(normal=cell, reduce=cell, name="searched")


def write_experiment(root: Path, cells: list) -> Path:
    """A hand-made 2-cycle search experiment (1-node pools, 4-node genotypes) in the documented
    schema: enough for every section of the report."""
    rows = []
    pools1 = {"normal": [["skip", "conv_k3_d1"], ["max_pool_3x3", "conv_k3_d1"]],
              "reduce": [["skip", "avg_pool_3x3"], ["skip", "conv_k3_d1"]]}
    for seed, cell in enumerate(cells):
        tid = f"t{seed}"
        pools2 = {t: [[e[seed % 2]] for e in edges] for t, edges in pools1.items()}
        _genotype(cell).save(root / f"DL-seed{seed}-{tid}" / "genotype.json")
        for cycle, (pools, after) in enumerate(((pools1, pools2), (pools2, pools2)), start=1):
            rows.append({
                "trial_id": tid, "seed": seed, "space": "DL", "cycle": cycle,
                "train_acc": 0.5, "valid_acc": 0.4 + 0.1 * cycle, "num_cycles": 2,
                "cycle_time_s": 60.0, "wall_time_s": 60.0, "wall_time_total_s": 60.0 * cycle,
                "epoch_metrics": json.dumps([{"epoch": 1, "cycle": cycle, "train_acc": 0.5,
                                              "valid_acc": 0.5, "epoch_time_s": 60.0}]),
                "pools": json.dumps(pools), "pools_next": json.dumps(after),
                "alphas": json.dumps({t: [[0.0] * len(e) for e in v] for t, v in pools.items()}),
                "decisions": json.dumps([]),
            })
    pq.write_table(table(rows, RESULTS_SCHEMA), root / "results.parquet")  # as the job
    return root


def write_retrain(root: Path, search: Path, random_cells: int) -> Path:
    rows, n = [], 0
    for g in sorted(search.rglob("genotype.json")):
        for seed in (0, 1):
            n += 1
            rows += [{"trial_id": f"r{n}", "genotype": g.parent.name, "genotype_path": str(g),
                      "kind": "searched", "seed": seed, "dataset": "demo", "params": 5000,
                      "epoch": e, "test_error": 3.0 + seed, "lr": 0.1 / e} for e in (1, 2, 3)]
    for c in range(random_cells):
        n += 1
        rows += [{"trial_id": f"r{n}", "genotype": f"random-DL-s0-{c}", "genotype_path": None,
                  "kind": "random", "seed": 0, "dataset": "demo", "params": 4000 + c,
                  "epoch": e, "test_error": 6.0 + c, "lr": 0.1 / e} for e in (1, 2, 3)]
    root.mkdir(parents=True, exist_ok=True)
    rows_to_frame(rows).to_parquet(root / "retrain.parquet", index=False)  # as the job
    return root


@pytest.mark.slow
def test_report_sections_on_a_search_with_retrained_and_random_cells(tmp_path):
    other = (CELL[1], CELL[0], *CELL[2:4], (K3, 1), *CELL[5:])
    search = write_experiment(tmp_path / "search", [CELL, CELL, other])
    out = tmp_path / "b"
    build_report(search, write_retrain(tmp_path / "both", search, 3), out,
                 cell_engine="matplotlib", report_last=2, trials=["t0"])
    page = (out / "index.html").read_text()
    assert "Too few cells to conclude anything" in page
    assert page.rfind("Best-practice checklist") > page.rfind("Trial ")  # the page ends with it
    comp = pd.read_csv(out / "tables" / "baseline_comparison.csv").iloc[0]
    assert (comp["cells_searched"], comp["cells_random"]) == (3, 3)
    assert comp["runs_searched"] == 6 and comp["difference"] == pytest.approx(3.5 - 7.0)
    items = pd.read_csv(out / "tables" / "checklist.csv")
    # Seeds: the random cells had one seed each; cost: CPU trials give device-hours.
    assert items["status"].tolist() == ["missing", "present", "present", "missing", "present"]
    for stem in ("baseline_comparison", "agreement_cells", "agreement_pools"):
        assert (out / "figures" / f"{stem}.png").stat().st_size > 2000

    pairs = pd.read_csv(out / "tables" / "agreement_cell_pairs.csv")
    assert len(pairs) == 3 * 2  # three seed pairs, two cell types
    same = pairs[(pairs["seed_a"] == 0) & (pairs["seed_b"] == 1)]
    assert (same["similarity"] == 1).all() and (same["identical"] == 1).all()
    diff = pairs[(pairs["seed_a"] == 0) & (pairs["seed_b"] == 2)]
    assert diff["identical"].tolist() == [7 / 8, 7 / 8]
    pools = pd.read_csv(out / "tables" / "agreement_pools.csv")
    first = pools[(pools["cycle"] == 1) & (pools["cell_type"] == "normal")].iloc[0]
    assert (first["similarity_mean"], first["shared_mean"], first["pairs"]) == (1.0, 1.0, 3)
    later = pools[(pools["cycle"] == 2) & (pools["cell_type"] == "normal")].iloc[0]
    assert later["shared_mean"] == pytest.approx(1 / 3)  # seeds 0, 2 agree; 1 keeps others


def test_sections_say_what_is_missing_instead_of_failing(tmp_path):
    search = write_experiment(tmp_path / "search", [CELL, CELL])
    results = loaders.load_results(search)
    retrain = loaders.load_retrain(write_retrain(tmp_path / "only", search, 0))
    runs = baseline.run_table(retrain, 2)
    page = report._Page()
    report._baseline_section(page, tmp_path, runs, 2)
    report._baseline_section(page, tmp_path, None, 2)
    report._agreement_section(page, tmp_path, results[results["seed"] == 0])
    text = "\n".join(page.parts)
    assert "No random runs in the retrain results" in text
    assert "No retrain experiment given" in text
    assert "Fewer than two finished trials" in text
    search_t = tables.search_table(results)
    items = checklist.checklist(results, search_t, retrain, runs, 2).set_index("item")["status"]
    assert items.tolist() == ["present", "missing", "present", "missing", "present"]
    none = checklist.checklist(results, search_t, None, None, 2)["status"].tolist()
    assert none == ["present", "missing", "missing", "missing", "missing"]


def test_runs_too_short_for_the_window_report_their_last_epoch_and_fail_the_protocol():
    """Runs of at most report_last epochs: the headline is the last epoch (a mean would
    take in the first), the report says how many runs, the checklist says why."""
    df = retrain_rows({"s": "searched", "r": "random"}, macs=False, epochs=3)
    runs = baseline.run_table(df, report_last=5)
    assert list(runs["final_test_error"]) == [3.0, 13.0]  # epoch 3's error, not mean(1..3)
    assert "2 of 2 run(s) had at most 5 epochs" in tables.headline_text(runs["epochs"], 5)
    assert "had at most" not in tables.headline_text(runs["epochs"], 2)
    item = checklist._protocol(df, runs, 5)
    assert item["status"] == "missing" and "retrain more epochs than report_last" in item[
        "evidence"]
    assert checklist._protocol(df, baseline.run_table(df, 2), 2)["status"] == "present"


@pytest.mark.slow
def test_report_pools_several_retrain_experiments_into_one_comparison(tmp_path, capsys):
    """Searched cells and the random baseline retrained as separate experiments join one
    comparison, with the numbers one experiment holding both gives (the CLI takes any
    number of retrain folders)."""
    from analysis.__main__ import main

    search = write_experiment(tmp_path / "search", [CELL, CELL])
    both = pd.read_parquet(write_retrain(tmp_path / "both", search, 3) / "retrain.parquet")
    for kind in ("searched", "random"):
        (tmp_path / kind).mkdir()
        both[both["kind"] == kind].to_parquet(tmp_path / kind / "retrain.parquet", index=False)
    one, two = tmp_path / "one", tmp_path / "two"
    fast = ["--cells", "matplotlib", "--report-last", "2", "--trial", "t0"]
    assert main(["report", str(search), str(tmp_path / "both"), "--out", str(one), *fast]) == 0
    assert main(["report", str(search), str(tmp_path / "searched"), str(tmp_path / "random"),
                 "--out", str(two), *fast]) == 0
    a = pd.read_csv(one / "tables" / "baseline_comparison.csv").iloc[0]
    b = pd.read_csv(two / "tables" / "baseline_comparison.csv").iloc[0]
    assert (b["runs_searched"], b["runs_random"]) == (4, 3)
    assert b["difference"] == pytest.approx(a["difference"])
    assert "retrain experiments: " in (two / "index.html").read_text()
    md = (two / "tables" / "baseline_comparison.md").read_text()
    assert "0.3333333" not in md and "| 4 | 3 |" in md  # people's tables: rounded
    capsys.readouterr()
    assert main(["report", str(search), str(tmp_path / "random"), str(tmp_path / "random"),
                 "--out", str(tmp_path / "three")]) == 2  # its runs would count twice
    assert "more than once" in capsys.readouterr().err
    assert not (tmp_path / "three").exists()


def test_the_pipeline_item_compares_the_configs_the_rows_carry():
    """Runs of one comparison must share their retrain config (``protocol``, written into
    every row by both Tune paths); the report reads it there, not from Tune's files."""
    import json as json_

    from prnas.retrain.config import build_config, protocol_json

    cfg = build_config()
    same = protocol_json(cfg)
    assert same == protocol_json(build_config(overrides={
        "seed": 3, "device": "cpu", "data.data_dir": "/elsewhere",
        "batch.memory_budget_bytes": 2**30, "performance.channels_last": True}))
    df = retrain_rows({"s": "searched", "r": "random"}, macs=False).assign(protocol=same)
    ok = checklist._pipeline(df)
    assert ok["status"] == "present" and "1 retrain config(s) in the runs' rows" in ok["evidence"]
    other = protocol_json(build_config(overrides={"optim.lr": 0.05}))
    assert json_.loads(other)["optim"]["lr"] == 0.05
    df.loc[df["trial_id"] == "t1", "protocol"] = other
    bad = checklist._pipeline(df)
    assert bad["status"] == "missing" and "2 different retrain configs" in bad["evidence"]
