"""The analysis package on experiment folders produced by real tiny searches and retrains.

The search folder comes from ``tune_jobs/run_search.py`` (Ray Tune, two seeds, its
``main`` run in this process, Ray shut down after) when that script exists; otherwise
(or with PRNAS_ANALYSIS_IN_PROCESS=1) from the in-process engine, written in the same
schema. The retrain folder holds real 2-epoch retrains of the searched cells
and DARTS-V2, written by the retrain package's own parquet writer.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.image import imread
from scripts import script_main
from tiny import tiny_search

from analysis import cells, figures, lineage, loaders, tables
from analysis.__main__ import main as cli_main
from analysis.pools import softmax
from prnas.space.genotype import Genotype

# A module fixture runs a real search first: the whole module is in the slow lane.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RUN_SEARCH = ROOT / "tune_jobs" / "run_search.py"
SEEDS = (3, 4)
TINY = tiny_search(
    seed=SEEDS[0],
    evaluate_test=True,
    schedule=[
        {"epochs": 2, "grace_epochs": 1, "morphs": 2, "candidates": 4},
        {"epochs": 2, "grace_epochs": 1, "morphs": 2, "candidates": 4},
        {"epochs": 1, "grace_epochs": 0, "morphs": 0, "candidates": 2},
        {"epochs": 1, "grace_epochs": 0, "morphs": 0, "candidates": 1},
    ],
)
CYCLES = len(TINY["schedule"])


# ----------------------------------------------------------------------------- fixtures


def run_search_driver(storage: Path, name: str = "exp") -> Path:
    """The real driver: Ray Tune, one trial per seed, one Tune step per cycle. Its Ray is
    shut down after, as it would end with the script's own process (no interpreter start
    and import of torch and Ray for it)."""
    import ray

    config = storage / "tiny.yaml"
    storage.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(TINY))
    try:
        assert script_main("run_search")(["--config", str(config), "--num-samples",
                                          str(len(SEEDS)), "--storage", str(storage),
                                          "--name", name, "--num-cpus", "2"]) == 0
    finally:
        ray.shutdown()
    return storage / name


def _candidate_rows(trial_id: str, seed: int, space: str, log: list[dict]) -> list[dict]:
    """candidates.parquet rows from a cycle log, written independently of the analysis code."""
    rows, added_before = [], {}
    for m in (r.to_json() for r in log):
        pools, alphas = m["pools"], m["alphas"]
        kept = {(d["cell_type"], d["edge"]): {op for op, _ in d["survived"]}
                for d in m["decisions"]}
        for t, edges in pools.items():
            for e, edge in enumerate(edges):
                for op, a, w in zip(edge, alphas[t][e], softmax(alphas[t][e])):
                    how = added_before.get((t, e, op))
                    rows.append({
                        "trial_id": trial_id, "seed": seed, "space": space, "cycle": m["cycle"],
                        "cell_type": t, "edge": e, "op": op, "alpha": a, "weight": w,
                        "status": "survived" if op in kept[(t, e)] else "dropped",
                        "new": how is not None, "parent": how and how["parent"],
                        "morphism": how and how["morphism"]})
        added_before = {(d["cell_type"], d["edge"], a["op"]): a
                        for d in m["decisions"] for a in d["new"]}
    return rows


def write_search_in_process(root: Path) -> Path:
    """Without the driver: the engine in-process, its cycle log written in the same schema."""
    from prnas.search.config import build_config
    from prnas.search.engine import Search

    results, candidates = [], []
    for seed in SEEDS:
        cfg = build_config(TINY, {"seed": seed})
        search = Search(cfg, log=None)
        genotype = search.run()
        trial_id = f"inproc_{seed:05d}"
        trial_dir = root / f"{cfg.space}-seed{seed}-{trial_id}"
        genotype.save(trial_dir / "genotype.json")
        total = 0.0
        for m in (r.to_json() for r in search.cycle_log):
            total += m["cycle_time_s"]
            row = {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in m.items()}
            results.append({
                **row, "trial_id": trial_id, "seed": seed, "space": cfg.space,
                # Relative, as a writer inside the experiment folder may store it.
                "genotype_path": str(trial_dir.relative_to(root) / "genotype.json"),
                "wall_time_total_s": total,
            })
        candidates += _candidate_rows(trial_id, seed, cfg.space, search.cycle_log)
    pd.DataFrame(results).to_parquet(root / "results.parquet", index=False)
    pd.DataFrame(candidates).to_parquet(root / "candidates.parquet", index=False)
    return root


def write_retrain_experiment(root: Path, search_dir: Path) -> Path:
    """Real 2-epoch retrains of both searched cells (2 seeds for one) and of DARTS-V2,
    labelled as run_retrain.py labels them and written by the retrain package's writer."""

    from prnas.records import write_parquet
    from prnas.retrain import Retrainer, build_config
    from prnas.retrain.genotypes import from_search, ref_for
    from prnas.retrain.results import rows_to_frame

    found = from_search(search_dir)
    jobs = [(found[0], 0), (found[0], 1), (found[-1], 0), (ref_for("darts-v2"), 0)]
    rows = []
    for n, (ref, seed) in enumerate(jobs):
        cfg = build_config(overrides={
            "network.channels": 4, "network.layers": 3, "device": "cpu", "epochs": 2, "seed": seed,
            "data.dataset": "demo", "data.subset": 48, "data.test_subset": 24,
            "batch.b_min": 16, "batch.b_max": 16, "eval_batch_size": 64})
        trainer = Retrainer(cfg, ref.load())
        trainer.setup()
        for _ in range(cfg.epochs):
            rows.append({**trainer.train_epoch(), "trial_id": f"retrain_{n:05d}",
                         "genotype": ref.label, "genotype_path": ref.path, "kind": ref.kind,
                         "seed": seed,
                         "dataset": trainer.info.name})
        # As the Tune trial does after its last epoch.
        rows[-1].update(trainer.measure_timing().as_dict())
    write_parquet(rows_to_frame(rows), root / "retrain.parquet")
    return root


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    storage = tmp_path_factory.mktemp("runs")
    if RUN_SEARCH.is_file() and not os.environ.get("PRNAS_ANALYSIS_IN_PROCESS"):
        return run_search_driver(storage)
    return write_search_in_process(storage / "exp")


@pytest.fixture(scope="module")
def retrain_dir(tmp_path_factory, experiment) -> Path:
    return write_retrain_experiment(tmp_path_factory.mktemp("retrain"), experiment)


@pytest.fixture(scope="module")
def results(experiment) -> pd.DataFrame:
    return loaders.load_results(experiment)


@pytest.fixture(scope="module")
def trials(results) -> dict[int, str]:
    """seed -> trial_id (Tune makes the ids up)."""
    last = results.groupby("trial_id")["seed"].first()
    return {int(seed): tid for tid, seed in last.items()}


def assert_drawn(path: Path, min_size=(300, 300), min_ink=0.01, min_colors=3) -> np.ndarray:
    """A PNG that shows something: big enough, not one colour, enough non-white pixels."""
    assert path.is_file() and path.stat().st_size > 2000, path
    img = imread(path)
    h, w = img.shape[:2]
    assert h >= min_size[1] and w >= min_size[0], (path, img.shape)
    rgb = img[..., :3].reshape(-1, 3)
    ink = (rgb < 0.9).any(axis=1).mean()
    assert ink > min_ink, (path, ink)
    colors = len(np.unique((rgb * 255).astype(np.uint8), axis=0))
    assert colors >= min_colors, (path, colors)
    return img


# ----------------------------------------------------------------------------- loaders


def test_load_results_columns_and_dtypes(results, experiment):
    assert len(results) == len(SEEDS) * len(TINY["schedule"])
    assert results.groupby("trial_id")["cycle"].apply(list).tolist() == [[1, 2, 3, 4]] * 2
    assert (results["experiment"] == "exp").all()
    assert results["experiment_dir"].iloc[0] == str(experiment.resolve())
    assert str(results["seed"].dtype) == "Int64" and str(results["cycle"].dtype) == "int64"
    for col in ("train_acc", "valid_acc", "test_acc", "time_total_s", "ratio_normal_conv",
                "similarity_reduce"):
        assert results[col].dtype == np.float64, col
        assert results[col].notna().all(), col
    assert results["valid_acc"].between(0, 1).all()
    # JSON columns decoded once: pools and alphas have the same shape.
    for pools, alphas in zip(results["pools"], results["alphas"]):
        for t in ("normal", "reduce"):
            assert [len(e) for e in pools[t]] == [len(a) for a in alphas[t]]
    assert isinstance(results["decisions"].iloc[0], list)
    # The last cycle points to its genotype, made absolute.
    last = results[results["cycle"] == CYCLES]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in last["genotype_path"])
    if "trial_dir" in results.columns:  # a Tune trial folder: resources and schedule from it
        assert (results["gpus_per_trial"] == 0).all()
        morphs = [c["morphs"] for c in TINY["schedule"]]
        assert results.groupby("trial_id")["morphs"].apply(list).tolist() == [morphs] * 2


def test_results_hold_every_column_and_a_thin_file_is_refused(experiment, tmp_path):
    df = pd.read_parquet(experiment / "results.parquet")
    full = loaders.load_results(experiment)
    # The reported wall time is the writer's.
    assert np.allclose(full["time_total_s"], df.sort_values(["trial_id", "cycle"])[
        "wall_time_total_s"])
    # A writer without statistics, wall times, resources or schedule is not the project's:
    # refused in one line naming what is missing, nothing guessed from the rest.
    drop = ["ratio_normal_conv", "pools_next", "wall_time_total_s", "gpus_per_trial", "morphs"]
    df.drop(columns=drop).to_parquet(tmp_path / "results.parquet")
    with pytest.raises(loaders.ExperimentError) as err:
        loaders.load_results(tmp_path)
    assert all(repr(c) in str(err.value) for c in drop)


def test_epoch_frame_numbers_epochs_across_cycles(results, trials):
    ep = loaders.epoch_frame(results)
    per_trial = sum(c["epochs"] for c in TINY["schedule"])
    assert len(ep) == len(SEEDS) * per_trial
    one = ep[ep["trial_id"] == trials[3]]
    assert one["global_epoch"].tolist() == list(range(1, per_trial + 1))
    assert one["cycle"].tolist() == [1, 1, 2, 2, 3, 4]
    assert one["epoch"].tolist() == [1, 2, 1, 2, 1, 1]
    assert one["grace"].tolist() == [True, False, True, False, False, False]
    assert np.allclose(one["elapsed_s"], one["epoch_time_s"].cumsum())
    assert list(ep.columns) == list(loaders.EPOCH_COLUMNS)
    # Per-cycle metrics are the last epoch's.
    lasts = one.groupby("cycle")["valid_acc"].last().tolist()
    assert lasts == results[results["trial_id"] == trials[3]]["valid_acc"].tolist()


def test_load_candidates_and_many_folders(experiment, trials, tmp_path):
    cand = loaders.load_candidates(experiment)
    assert set(cand["status"]) == {"survived", "dropped"}
    assert np.allclose(cand.groupby(["trial_id", "cycle", "cell_type", "edge"])["weight"].sum(),
                       1.0)
    new = cand[cand["new"]]
    assert (new["cycle"] > 1).all() and new["parent"].notna().all()
    # Two folders: rows of both, told apart by experiment.
    other = tmp_path / "exp2"
    other.mkdir()
    for name in ("results.parquet", "candidates.parquet"):
        shutil.copy(experiment / name, other / name)
    both = loaders.load_results(experiment, other)
    assert set(both["experiment"]) == {"exp", "exp2"}
    assert len(loaders.trial_keys(both)) == 4
    with pytest.raises(loaders.ExperimentError, match="several experiments"):
        loaders.select_trial(both, trials[3])
    assert len(loaders.select_trial(both, f"exp2/{trials[3]}")) == CYCLES


def test_clear_errors_for_wrong_folders_and_columns(experiment, retrain_dir, tmp_path):
    with pytest.raises(loaders.ExperimentError, match="no such folder"):
        loaders.load_results(tmp_path / "nope")
    with pytest.raises(loaders.ExperimentError,
                       match=r"is not a search experiment folder: no results.parquet"):
        loaders.load_results(tmp_path)
    with pytest.raises(loaders.ExperimentError, match="holds retrain.parquet"):
        loaders.load_results(retrain_dir)
    with pytest.raises(loaders.ExperimentError, match="not a retrain experiment"):
        loaders.load_retrain(experiment)
    bad = tmp_path / "bad"
    bad.mkdir()
    pd.read_parquet(experiment / "results.parquet").drop(columns=["valid_acc"]).to_parquet(
        bad / "results.parquet")
    with pytest.raises(loaders.ExperimentError) as err:
        loaders.load_results(bad)
    assert "results.parquet" in str(err.value) and "'valid_acc'" in str(err.value)


def test_load_retrain(retrain_dir):
    rt = loaders.load_retrain(retrain_dir)
    assert len(rt) == 8 and rt["epoch"].tolist().count(2) == 4
    assert rt["test_error"].dtype == np.float64
    assert set(rt["dataset"]) == {"demo"}


# ----------------------------------------------------------------------------- figures


def test_search_process_figure(results, trials, tmp_path):
    rows = loaders.select_trial(results, trials[3])
    png, svg = figures.save_figure(figures.search_process_figure(rows), tmp_path / "fig2")
    img = assert_drawn(png, min_size=(800, 1000), min_ink=0.05, min_colors=20)
    assert svg.read_text().lstrip().startswith("<?xml")
    # The four panels each carry coloured lines: blue-ish (train/conv) and orange (valid).
    rgb = img[..., :3]
    orange = (rgb[..., 0] > 0.9) & (rgb[..., 1] > 0.4) & (rgb[..., 1] < 0.6) & (rgb[..., 2] < 0.2)
    assert orange.sum() > 50


def test_cell_diagram_matplotlib_fallback(results, trials, tmp_path):
    g = Genotype.load(loaders.trial_genotype_path(loaders.select_trial(results, trials[4])))
    for cell in ("normal", "reduce"):
        png, svg = cells.render_cell(g, cell, tmp_path / cell, engine="matplotlib")
        img = assert_drawn(png, min_size=(400, 250), min_ink=0.05, min_colors=10)
        # The node colours are there: two inputs, the nodes and the output.
        rgb = (img[..., :3] * 255).round().astype(int).reshape(-1, 3)
        for hexcol in (cells.INPUT_COLOR, cells.NODE_COLOR, cells.OUTPUT_COLOR):
            want = np.array([int(hexcol[i:i + 2], 16) for i in (1, 3, 5)])
            assert (np.abs(rgb - want).max(axis=1) <= 3).sum() > 200, hexcol
        text = svg.read_text()
        for op, _ in getattr(g, cell):
            assert str(op) in text  # every op label is written out


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot not installed")
def test_cell_diagram_with_graphviz(results, trials, tmp_path):
    g = Genotype.load(loaders.trial_genotype_path(loaders.select_trial(results, trials[3])))
    png, svg = cells.render_cell(g, "normal", tmp_path / "normal", engine="dot")
    assert_drawn(png, min_size=(200, 100), min_ink=0.03, min_colors=10)
    text = svg.read_text()
    assert all(str(op) in text for op, _ in g.normal)
    assert (tmp_path / "normal.dot").read_text().count("->") == len(g.normal) + len(
        g.normal_concat)


def test_cell_dot_source_of_a_paper_cell():
    g = Genotype.load(Path(__file__).resolve().parents[1] / "prnas" / "presets" / "genotypes"
                      / "prdarts-dl2.json")
    src = cells.cell_dot(g, "reduce")
    assert src.count("->") == 8 + 4
    assert '"c_{k-2}" -> "B_0" [label="conv_k3_d1"' in src
    assert '"B_1" -> "B_3" [label="skip"' in src
    with pytest.raises(ValueError, match="cell_type"):
        cells.cell_dot(g, "both")


# ----------------------------------------------------------------------------- lineage


def test_edge_lineage_matches_candidates(results, trials, experiment, tmp_path):
    rows = loaders.select_trial(results, trials[3])
    cand = loaders.load_candidates(experiment)
    for cell in ("normal", "reduce"):
        for edge in range(5):
            lin = lineage.edge_lineage(rows, cell, edge)
            c = cand[(cand["trial_id"] == trials[3]) & (cand["cell_type"] == cell)
                     & (cand["edge"] == edge)]
            # Every new candidate's parent and morphism agree with candidates.parquet.
            for r in c[c["new"]].itertuples():
                hit = lin[(lin["op"] == r.op) & (lin["entered_cycle"] == r.cycle)]
                assert len(hit) == 1
                assert (hit["parent"].iloc[0], hit["morphism"].iloc[0]) == (r.parent, r.morphism)
            # Dropped in the candidates table <=> a stint ends with that cycle's decision
            # (an op dropped and re-added at once counts as dropped, then new).
            dropped = {(r.op, r.cycle) for r in c[c["status"] == "dropped"].itertuples()}
            ended = {(r.op, r.dropped_after) for r in lin.itertuples()
                     if pd.notna(r.dropped_after)}
            assert dropped == ended
            # One op survives the final (1-candidate) decision, and it is in the last pool.
            assert lin["final"].sum() == 1
            assert lin.loc[lin["final"], "last_cycle"].iloc[0] == CYCLES
    edge = lineage.busiest_edge(rows, "normal")
    lin = lineage.edge_lineage(rows, "normal", edge)
    assert lin["parent"].notna().any()
    png, _ = figures.save_figure(lineage.lineage_figure(lin, "lineage"), tmp_path / "lin")
    assert_drawn(png, min_size=(600, 200), min_ink=0.03, min_colors=10)
    with pytest.raises(ValueError, match="edge 9 out of range"):
        lineage.edge_lineage(rows, "normal", 9)


# ----------------------------------------------------------------------------- tables


def test_search_table_and_summary(results, trials):
    table = tables.search_table(results)
    assert table["trial_id"].tolist() == [trials[s] for s in SEEDS]
    assert table["finished"].all() and (table["cycles"] == CYCLES).all()
    # Two morph rounds in the schedule: DL reaches 1 + 3 + ... convs within 2 steps.
    from prnas.space import preset, reachable

    assert (table["morph_rounds"] == 2).all()
    assert (table["ops_discoverable"] == len(reachable(preset("DL"), 2, True)) + 3).all()
    for row, (_, rows) in zip(table.itertuples(), results.groupby("trial_id")):
        seen = {op for p in rows["pools"] for edge in p["normal"] for op in edge}
        assert row.ops_discovered == len(seen) >= 4
        assert row.ops_discovered <= row.ops_discoverable
        assert math.isclose(row.wall_time_s, rows["time_total_s"].max())
        assert row.wall_time_s >= rows["cycle_time_s"].sum() * 0.99
        assert row.cost_unit == "device-hours"
        assert row.genotype_normal.count("@") == 4
    summary = tables.search_summary(table)
    assert summary["trials"].tolist() == [2] and summary["seeds"].tolist() == ["3,4"]
    assert math.isclose(summary["valid_acc_mean"].iloc[0], table["valid_acc"].mean())
    assert math.isclose(summary["valid_acc_std"].iloc[0], table["valid_acc"].std())
    md = tables.to_markdown(tables.format_search_summary(summary))
    assert md.count("\n") == 3 and " ± " in md


def test_gpu_hours_when_the_trial_says_how_many_gpus(results):
    df = results.copy()
    df["gpus_per_trial"] = 2.0
    table = tables.search_table(df)
    assert (table["cost_unit"] == "GPU-hours").all()
    assert np.allclose(table["cost_hours"], table["wall_time_s"] / 3600 * 2)


def test_table_iii_links_retrains_to_their_searches(results, trials, retrain_dir):
    rt = loaders.load_retrain(retrain_dir)
    search = tables.search_table(results)
    t3 = tables.table_iii(rt, search)
    assert len(t3) == 3
    first = t3.iloc[0]
    trial_errors = tables.retrain_trials(rt)
    errs = trial_errors[trial_errors["genotype"] == first["genotype"]]["final_test_error"]
    assert first["seeds"] == 2 and math.isclose(first["error_mean"], errs.mean())
    assert math.isclose(first["error_std"], errs.std())
    match = search[search["trial_id"] == trials[3]].iloc[0]
    assert first["search_trial"] == f"exp/{trials[3]}"
    assert math.isclose(first["search_cost_days"], match["cost_hours"] / 24)
    darts = t3[t3["genotype"] == "darts-v2"].iloc[0]
    assert pd.isna(darts["search_trial"]) and np.isnan(darts["error_std"])
    # Cost beside the error: MACs of every row, timing from each trial's last row.
    for _, row in t3.iterrows():
        per = trial_errors[trial_errors["genotype"] == row["genotype"]]
        assert row["macs"] == per["macs"].iloc[0] == rt[rt["genotype"] == row["genotype"]][
            "macs"].iloc[0] > 0
        assert math.isclose(row["latency_ms_b1"], per["latency_ms_b1"].median())
        assert row["throughput_b64"] > 0 and row["cost_device"].startswith("cpu")
    assert trial_errors["cost_threads"].notna().all()
    shown = tables.format_table_iii(t3)
    assert list(shown.columns) == ["Method", "#params", "MACs", "demo test error [%]",
                                   "Latency b1 [ms]", "Throughput b64 [img/s]", "Search cost",
                                   "#ops"]
    assert shown["#ops"].iloc[0] == f"{match['ops_discovered']}/{match['ops_discoverable']}"
    assert shown[shown["Method"] == "darts-v2"]["#ops"].iloc[0] == "–"
    assert re.fullmatch(r"\d+\.\d\d ± \d+\.\d\d", shown.iloc[0, 3])
    assert shown["MACs"].iloc[0] == f"{first['macs'] / 1e6:.2f}M"
    assert "MACs = FLOPs / 2" in tables.cost_note(t3) and "cpu: " in tables.cost_note(t3)


# ----------------------------------------------------------------------------- report


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("href", "src") and value:
                self.links.append(value)


def test_report_end_to_end(experiment, trials, retrain_dir, tmp_path):
    out = tmp_path / "report"
    assert cli_main(["report", str(experiment), str(retrain_dir), "--out", str(out),
                     "--cells", "matplotlib"]) == 0
    html = (out / "index.html").read_text()
    parser = _Links()
    parser.feed(html)
    assert len(parser.links) > 10
    for link in parser.links:
        assert "://" not in link and not link.startswith("/"), link
        assert (out / link).is_file(), link
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    for trial in trials.values():
        for stem in (f"figures/search_process_exp_{trial}", f"figures/cell_exp_{trial}_normal",
                     f"figures/cell_exp_{trial}_reduce"):
            assert {stem + ".png", stem + ".svg"} <= names
            assert stem + ".png" in parser.links
        assert_drawn(out / f"figures/search_process_exp_{trial}.png", min_size=(800, 1000))
    for stem in ("tables/search_trials", "tables/search_summary", "tables/table_iii"):
        assert {stem + ".csv", stem + ".md"} <= names
    t3 = pd.read_csv(out / "tables/table_iii.csv")
    assert len(t3) == 3
    # No random cells were retrained: the comparison says so, the checklist marks it missing.
    assert "No random runs in the retrain results" in html
    kinds = pd.read_csv(out / "tables/baseline_runs.csv").groupby("kind")["trial_id"].count()
    assert kinds.to_dict() == {"preset": 1, "searched": 3}
    items = pd.read_csv(out / "tables/checklist.csv").set_index("item")["status"]
    assert items["Random-search baseline present"] == "missing"
    assert html.rfind("Best-practice checklist") > html.rfind("Operation lineage")
    assert t3["macs"].gt(0).all() and "MACs = FLOPs / 2" in html  # cost beside the error
    # A non-empty --out is refused without --force, and nothing is touched.
    before = (out / "index.html").stat().st_mtime_ns
    assert cli_main(["report", str(experiment), "--out", str(out)]) == 2
    assert (out / "index.html").stat().st_mtime_ns == before
    assert cli_main(["report", str(experiment), "--out", str(out), "--force",
                     "--cells", "matplotlib"]) == 0
    assert not (out / "tables/table_iii.csv").exists()  # the retrain table went with --force


def test_report_cli_as_a_module(experiment, tmp_path):
    out = tmp_path / "r"
    proc = subprocess.run([sys.executable, "-m", "analysis", "report", str(tmp_path / "none"),
                           "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no such folder" in proc.stderr
    assert not out.exists()
