"""Searches as real Ray Tune trials (CPU, one Ray for the module): the scheduler's decisions,
weight carrying through checkpoints, retry after a failure, interrupt and --resume."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from scripts import script_main
from tiny import tiny_search

from prnas.runtime import checkpoint
from prnas.search.config import build_config
from prnas.search.decision import decide_cycle
from prnas.search.engine import Search
from prnas.space.pools import histories_from_plain, pools_from_plain

ray = pytest.importorskip("ray")

from faults import InterruptAfterCycles, faulty  # noqa: E402

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]

TINY = tiny_search(data={"input_size": 16, "subset": 120, "test_subset": 40},
                   network={"nodes": 4})


def _experiment(storage: Path, name: str, seeds=(0, 1), **kw):
    from prnas.tune.experiment import SearchExperiment

    return SearchExperiment(cfg=build_config(TINY), storage=storage, name=name, seeds=seeds,
                            **kw)


@pytest.fixture(scope="module")
def baseline(ray_cpu, storage):
    """Two seeds, three cycles, nothing going wrong: the reference for the other tests."""
    from prnas.tune.experiment import run_search

    outcome = run_search(_experiment(storage, "baseline"))
    assert not outcome.errors and outcome.complete
    return outcome


def load_trial_config(trial_dir: Path) -> dict:
    """A trial's config as Tune last wrote it (``params.json``, rewritten at each resume,
    so it holds the latest decision too)."""
    return json.loads((trial_dir / "params.json").read_text())


def _trial_cfg(trial_dir: Path):
    from prnas.tune.search_trainable import trial_search_config

    return trial_search_config(load_trial_config(trial_dir))


def _by_seed(frame: pd.DataFrame) -> dict[int, pd.DataFrame]:
    return {int(s): g.sort_values("cycle").reset_index(drop=True)
            for s, g in frame.groupby("seed")}


def test_pools_change_exactly_as_decide_cycle_says(baseline):
    runs = _by_seed(baseline.results)
    assert sorted(runs) == [0, 1]
    for rows in runs.values():
        assert list(rows["cycle"]) == [1, 2, 3]
        cfg = _trial_cfg(Path(rows["trial_dir"][0]))
        for i, r in rows.iterrows():
            expected = decide_cycle(
                cfg, i, pools_from_plain(json.loads(r["pools"])), json.loads(r["alphas"]),
                histories_from_plain(json.loads(r["histories"]))).to_plain()
            assert json.loads(r["pools_next"]) == expected["pools"]
            assert json.loads(r["decisions"]) == expected["decisions"]
            if i + 1 < len(rows):
                nxt = rows.iloc[i + 1]
                assert nxt["pools"] == r["pools_next"]
                assert json.loads(nxt["histories"]) == expected["histories"]
                assert r["pools_next"] != r["pools"]  # morphs replaced the weakest
        sizes = [{len(e) for e in json.loads(p)["normal"]} for p in rows["pools"]]
        assert sizes == [{4}, {4}, {3}]
    # The two seeds took different decisions (their RNG and alphas differ).
    assert runs[0]["pools_next"][0] != runs[1]["pools_next"][0]


def test_scheduler_left_its_decision_in_the_trial_config(baseline):
    from prnas.tune.search_trainable import DECISION_KEY

    for result in baseline.grid:
        decision = result.config[DECISION_KEY]
        rows = baseline.results[baseline.results["trial_id"] == result.metrics["trial_id"]]
        second = rows[rows["cycle"] == 2].iloc[0]
        assert decision["cycle"] == 1 and "error" not in decision
        assert decision["pools"] == json.loads(second["pools_next"])
        assert result.metrics["done"] is True
        assert result.metrics["genotype_path"] == rows["genotype_path"].iloc[0]


def test_tune_trials_equal_the_in_process_search(baseline):
    """Pauses, checkpoints, actor reuse and restores change nothing, bit for bit."""
    for seed, rows in _by_seed(baseline.results).items():
        cfg = _trial_cfg(Path(rows["trial_dir"][0]))
        assert cfg.seed == seed and cfg.num_threads == 1
        before = torch.get_num_threads()
        try:
            search = Search(cfg, log=None)
            genotype = search.run()
        finally:
            torch.set_num_threads(before)
        assert [json.dumps(c.alphas) for c in search.cycle_log] == list(rows["alphas"])
        assert [c["valid_acc"] for c in search.cycle_log] == list(rows["valid_acc"])
        saved = json.loads(Path(rows["genotype_path"][0]).read_text())
        assert saved["normal"] == genotype.to_dict()["normal"]
        assert saved["reduce"] == genotype.to_dict()["reduce"]


def test_survivors_keep_their_weights_when_the_decision_is_applied(baseline, tmp_path,
                                                                   monkeypatch):
    import ray.tune.trainable.trainable as trainable_mod

    from prnas.tune.search_trainable import CHECKPOINT_FILE, DECISION_KEY, SearchTrainable

    monkeypatch.setattr(trainable_mod, "DEFAULT_STORAGE_PATH", str(tmp_path))
    result = baseline.grid[0]
    trial_dir = Path(result.path)
    ckpt = trial_dir / "checkpoint_000000"  # taken when the scheduler paused it after cycle 1
    before = checkpoint.load(ckpt / CHECKPOINT_FILE)["search"]
    assert before["cycle"] == 0 and before["epoch"] == 1  # trained, not yet decided
    rows = baseline.results[baseline.results["trial_id"] == result.metrics["trial_id"]]
    first = rows[rows["cycle"] == 1].iloc[0]
    config = load_trial_config(trial_dir)
    config[DECISION_KEY] = {"cycle": 0, **decide_cycle(
        _trial_cfg(trial_dir), 0, pools_from_plain(json.loads(first["pools"])),
        json.loads(first["alphas"]), histories_from_plain(json.loads(first["histories"])),
    ).to_plain()}
    threads = torch.get_num_threads()
    try:
        trainable = SearchTrainable(config=config)
        trainable.load_checkpoint(str(ckpt))
        assert trainable.apply_decision()
    finally:
        torch.set_num_threads(threads)
    after = trainable.search.net.state_dict()
    assert trainable.search.cycle == 1
    assert json.loads(first["pools_next"]) == {
        t: [[str(op) for op in edge] for edge in edges]
        for t, edges in trainable.search.pools.items()}
    kept = {(d["cell_type"], d["edge"], op) for d in json.loads(first["decisions"])
            for op, _w in d["survived"]}
    net = trainable.search.net
    checked = 0
    for i, cell in enumerate(net.cells):
        t = "reduce" if cell.reduction else "normal"
        for e in range(len(cell.edges)):
            for op in cell.edges[e].ops:
                prefix = f"cells.{i}.edges.{e}.ops.{op}."
                keys = [k for k in after if k.startswith(prefix)]
                if (t, e, op) in kept:
                    for k in keys:
                        assert torch.equal(after[k], before["net"][k]), k
                        checked += 1
    assert checked > 50
    # Trained weights, not a fresh init: they moved during cycle 1.
    fresh = Search(_trial_cfg(trial_dir), log=None).net.state_dict()
    torch.set_num_threads(threads)
    moved = [k for k in before["net"] if k.endswith("weight") and k in fresh
             and not torch.equal(before["net"][k], fresh[k])]
    assert moved


def test_failures_stay_in_their_trial_and_retries_resume_from_checkpoints(
        baseline, storage, monkeypatch):
    """Seed 0 dies once mid-cycle 2 and is retried from its checkpoint (max_failures=1);
    the scheduler cannot decide for seed 1, which fails alone."""
    from prnas.tune import scheduler
    from prnas.tune.experiment import run_search

    def broken_for_seed_1(cfg, *args):
        if cfg.seed == 1:
            raise ValueError("no decision for seed 1")
        return decide_cycle(cfg, *args)

    # The scheduler runs in this (driver) process; the trials do not see the patch.
    monkeypatch.setattr(scheduler, "decide_cycle", broken_for_seed_1)
    marker = storage / "fail-once.marker"
    outcome = run_search(_experiment(storage, "faults", max_failures=1,
                                     trainable=faulty({"cycle": 2, "marker": str(marker)})))
    assert json.loads(marker.read_text())["pid"]  # a trial did die mid-cycle 2
    status = dict(zip(outcome.summary["seed"], outcome.summary["status"]))
    assert status == {0: "done", 1: "error"}
    (error,) = outcome.errors.values()
    assert "prune-and-replace after cycle 1 failed" in error and "seed 1" in error
    ref = _by_seed(baseline.results)[0]
    got = _by_seed(outcome.results)[0]
    assert list(got["alphas"]) == list(ref["alphas"])
    assert Path(got["genotype_path"][0]).read_text() == Path(ref["genotype_path"][0]).read_text()
    assert _by_seed(outcome.results)[1]["cycle"].tolist() == [1]


def test_restored_trial_without_its_decision_reports_the_cycle_again(tmp_path, monkeypatch):
    """A driver snapshot older than the decision: the trial asks again instead of training."""
    import ray.tune.trainable.trainable as trainable_mod

    from prnas.tune.scheduler import decision_for
    from prnas.tune.search_trainable import DECISION_KEY, SearchTrainable

    monkeypatch.setattr(trainable_mod, "DEFAULT_STORAGE_PATH", str(tmp_path))
    threads = torch.get_num_threads()
    config = {"search": build_config(TINY).model_dump(mode="json"), "seed": 4, "space": "DR",
              "resources": {"cpu": 1}}
    try:
        first = SearchTrainable(config=dict(config))
        r1 = first.train()
        saved = first.save()
        again = SearchTrainable(config=dict(config))  # no decision in this config
        again.restore(saved)
        r2 = again.train()
        assert r2["redecide"] and r2["cycle"] == 1 and r2["alphas"] == r1["alphas"]
        assert again.search.cycle == 0 and again.search.cycle_done  # nothing trained
        decided = {**config, DECISION_KEY: decision_for(config, r2)}
        assert decided[DECISION_KEY] == decision_for(config, r1)  # the same decision
        resumed = SearchTrainable(config=decided)
        resumed.restore(saved)
        r3 = resumed.train()
        assert r3["cycle"] == 2 and not r3["redecide"] and r3["space"] == "DR"
        assert r3["pools"] == decided[DECISION_KEY]["pools"]
    finally:
        torch.set_num_threads(threads)


def test_reused_actor_continuing_its_trial_keeps_its_engine(tmp_path, monkeypatch):
    """Between cycles on one actor Tune saves, resets with the decision, restores: the engine
    (datasets included) is kept and the search still ends as in-process, bit for bit. Another
    trial on the same actor gets an engine of its own."""
    import ray.tune.trainable.trainable as trainable_mod

    from prnas.tune.scheduler import decision_for
    from prnas.tune.search_trainable import DECISION_KEY, SearchTrainable, trial_search_config

    monkeypatch.setattr(trainable_mod, "DEFAULT_STORAGE_PATH", str(tmp_path))
    threads = torch.get_num_threads()
    config = {"search": build_config(TINY).model_dump(mode="json"), "seed": 3, "space": "DL",
              "resources": {"cpu": 1}}
    try:
        trainable = SearchTrainable(config=dict(config))
        engine = trainable.search
        results = [trainable.train()]
        while not results[-1]["done"]:
            config = {**config, DECISION_KEY: decision_for(config, results[-1])}
            saved = trainable.save()
            assert trainable.reset(dict(config))
            assert trainable.search is engine
            trainable.restore(saved)
            results.append(trainable.train())
        reference = Search(trial_search_config(config), log=None)
        genotype = reference.run()
        assert [r["cycle"] for r in results] == [1, 2, 3]
        assert [r["alphas"] for r in results] == [c.alphas for c in reference.cycle_log]
        assert trainable.search.genotype.to_dict() == genotype.to_dict()
        other = {k: v for k, v in config.items() if k != DECISION_KEY} | {"seed": 4}
        assert trainable.reset(other)
        assert trainable.search is not engine
        assert (trainable.search.cfg.seed, trainable.search.cycle) == (4, 0)
    finally:
        torch.set_num_threads(threads)


def test_a_lone_trial_keeps_its_actor_from_cycle_to_cycle(baseline, storage, tmp_path,
                                                          monkeypatch):
    """Nothing else to run: each cycle still ends in a pause and a checkpoint, and the next
    one runs on the same actor (not a new process per cycle), with the same numbers."""
    from ray import tune

    from prnas.tune import experiment

    log = tmp_path / "results.jsonl"

    class RecordPids(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            with open(log, "a") as f:
                f.write(json.dumps({"cycle": result.get("cycle"), "pid": result["pid"]}) + "\n")

    outcome = experiment.run_search(_experiment(storage, "lone", seeds=(0,),
                                                callbacks=[RecordPids()]))
    assert outcome.complete
    seen = [json.loads(line) for line in log.read_text().splitlines()]
    assert [s["cycle"] for s in seen] == [1, 2, 3]
    assert len({s["pid"] for s in seen}) == 1
    trial_dir = Path(outcome.results["trial_dir"][0])
    assert len(list(trial_dir.glob("checkpoint_*"))) == 3  # after cycles 1 and 2, at the end
    rows, ref = _by_seed(outcome.results)[0], _by_seed(baseline.results)[0]
    assert list(rows["alphas"]) == list(ref["alphas"])
    assert list(rows["pools_next"]) == list(ref["pools_next"])


def test_cli_interrupted_experiment_resumes_and_completes(baseline, storage, tmp_path,
                                                          capsys):
    """A callback stops the driver after cycle 1 as Ctrl+C would; ``--resume`` finishes."""
    from prnas.filenames import CANDIDATES_FILE, RESULTS_FILE

    main = script_main("run_search")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    args = ["--storage", str(storage), "--name", "interrupted", "--cpus-per-trial", "1"]
    assert main(["--config", str(config), "--num-samples", "2", *args],
                callbacks=[InterruptAfterCycles(1, 2)]) == 130  # cli.EXIT_INTERRUPTED
    out = capsys.readouterr()
    assert "--name interrupted --resume" in out.err
    # stdout carries results only: Tune's experiment box and TensorBoard hint go to stderr
    assert "Configuration for experiment" not in out.out and "tensorboard" not in out.out
    assert "Configuration for experiment" in out.err
    first = pd.read_parquet(storage / "interrupted" / RESULTS_FILE)
    # Stopped once both trials had a checkpoint after cycle 1; the faster one may have
    # trained cycle 2 meanwhile (under load it did), but neither finished all three.
    last = first.groupby("seed").cycle.max()
    assert sorted(last.index) == [0, 1] and last.min() == 1 and last.max() < 3
    assert not first.duplicated(["trial_id", "cycle"]).any()
    # Without --resume an existing experiment is refused, before any trial runs.
    assert main(["--config", str(config), *args]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["--resume", *args]) == 0
    out = capsys.readouterr().out
    assert "experiment: " + str(storage / "interrupted") in out
    assert out.count("done") >= 2 and "genotype.json" in out
    frame = pd.read_parquet(storage / "interrupted" / RESULTS_FILE)
    assert len(frame) == 6 and sorted(frame.groupby("seed").size()) == [3, 3]
    assert len(pd.read_parquet(storage / "interrupted" / CANDIDATES_FILE)) > 0
    for seed, rows in _by_seed(frame).items():
        ref = _by_seed(baseline.results)[seed]
        assert list(rows["alphas"]) == list(ref["alphas"])
        assert list(rows["pools_next"]) == list(ref["pools_next"])


def test_cli_asking_for_a_gpu_on_a_cpu_cluster_fails_at_once(ray_cpu, tmp_path, capsys):
    main = script_main("run_search")
    code = main(["--config", str(ROOT / "tune_jobs/configs/demo.yaml"), "--storage",
                 str(tmp_path), "--name", "gpu", "--gpus-per-trial", "0.5"])
    assert code == 2
    assert "no GPU" in capsys.readouterr().err
    assert not (tmp_path / "gpu").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["--config", "{bad}"], "network.channels"),
    (["--config", "{demo}", "--spaces", "DL,XX"], "unknown preset(s) XX"),
    (["--config", "{demo}", "--num-samples", "0"], "--num-samples"),
    (["--config", "{demo}", "--set", "network.chanels=8"], "network.chanels"),
    (["--resume", "--name", "nothing-here"], "no Tune experiment"),
    (["--resume"], "needs the --name"),
])
def test_cli_rejects_bad_input_before_ray_starts(tmp_path, monkeypatch, capsys, argv, message):
    from prnas.tune import cluster

    def no_ray(*_a, **_k):
        raise AssertionError("Ray must not start on invalid input")

    monkeypatch.setattr(cluster, "init_ray", no_ray)
    bad = tmp_path / "bad.yaml"
    bad.write_text("network: {channels: 15}\n")
    argv = [a.format(bad=bad, demo=ROOT / "tune_jobs/configs/demo.yaml") for a in argv]
    assert script_main("run_search")([*argv, "--storage", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_resume_refuses_the_other_kind_and_a_tampered_checkpoint(baseline, storage, tmp_path,
                                                                 capsys):
    """Tune's restore would fail deep inside (the other job's trainable) or in every trial
    actor with tracebacks and a retry (a crafted checkpoint): one line and exit 2 instead,
    before Ray starts; the crafted file runs nothing."""
    import os
    import shutil

    from prnas.storage import as_location
    from prnas.tune.ray_compat import trainable_names
    from prnas.tune.search_trainable import CHECKPOINT_FILE

    assert trainable_names(as_location(storage / "baseline")) == {"SearchTrainable"}
    capsys.readouterr()
    assert script_main("run_retrain")(["--storage", str(storage), "--name", "baseline",
                                       "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a search experiment" in err[0], err

    copy = tmp_path / "runs"
    shutil.copytree(storage / "baseline", copy / "tampered")
    trial = sorted(p for p in (copy / "tampered").iterdir() if p.is_dir()
                   and list(p.glob("checkpoint_*")))[0]
    marker = tmp_path / "pwned.txt"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    checkpoint.save_atomic({"version": 2, "search": Evil()},
                           sorted(trial.glob("checkpoint_*"))[-1] / CHECKPOINT_FILE)
    assert script_main("run_search")(["--storage", str(copy), "--name", "tampered",
                                      "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --resume: checkpoint ") \
        and "refused" in err[0], err
    assert not marker.exists()

    # A newest checkpoint left incomplete (a crash while it was being copied) is not a
    # reason to refuse: the one before it is whole, and that is where Tune resumes from.
    from prnas.tune.cluster import check_resume

    shutil.copytree(storage / "baseline", copy / "partial")
    trial = copy / "partial" / trial.name
    (sorted(trial.glob("checkpoint_*"))[-1] / CHECKPOINT_FILE).unlink()
    check_resume(as_location(copy / "partial"), "search", CHECKPOINT_FILE)
