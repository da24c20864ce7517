"""tune_jobs/run_retrain.py end to end: parameter counts, and a real (CPU) Ray Tune fan-out
that is killed mid-run, refused without --resume, resumed, and matches an in-process run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from scripts import script_main

from prnas.presets import load_genotype
from prnas.retrain import Retrainer, load_config
from prnas.retrain.results import COLUMNS
from prnas.tune import cluster

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tune_jobs" / "run_retrain.py"
DEMO = ROOT / "tune_jobs" / "configs" / "retrain_demo.yaml"
TINY = ["--set", "network.channels=4", "--set", "network.layers=3", "--set", "data.subset=300",
        "--set", "data.test_subset=60"]


def _env() -> dict[str, str]:
    return {**os.environ, "PRNAS_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled",
            "PYTHONUNBUFFERED": "1"}


def _main(*args: str) -> int:
    """The script's ``main`` in this process: no interpreter start for the Ray-free paths."""
    return script_main("run_retrain")(list(args))


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _no_ray(monkeypatch) -> None:
    """A refusal run in this process must come before Ray starts (a Ray started here would
    outlive the test)."""
    def no_ray(*_a, **_k):
        raise AssertionError("Ray must not start for a refused run")

    monkeypatch.setattr(cluster, "init_ray", no_ray)


def _wait_for_a_checkpoint(proc: subprocess.Popen, exp: Path, timeout: float = 90) -> None:
    """Until a trial of the experiment run by ``proc`` has checkpointed its first epoch."""
    deadline = time.monotonic() + timeout
    while not list(exp.glob("*/checkpoint_000000")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no trial checkpointed in time"
        time.sleep(0.05)


# ---------------------------------------------------------------- no Ray


@pytest.mark.slow
def test_params_only_prints_one_json_line_per_genotype(capsys):
    out = _run("--genotype", "darts-v2,prdarts-dl1", "--params-only", "--no-timing")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["genotype"] for r in rows] == ["darts-v2", "prdarts-dl1"]
    assert rows[0]["params"] == 3_349_342
    assert rows[0]["macs"] == 528_359_040 and rows[0]["input_size"] == 32
    assert "latency_ms_b1" not in rows[0]
    assert _main("--genotype", "prdarts-dl1", "--params-only", "--dataset", "cifar100",
                 "--no-timing") == 0
    row100 = json.loads(capsys.readouterr().out)
    assert row100["num_classes"] == 100
    # Only the classifier grows: 90 more classes x (576 features + bias) at C=36.
    assert row100["params"] - rows[1]["params"] == 90 * (4 * 4 * 36 + 1)
    assert row100["macs"] - rows[1]["macs"] == 90 * 4 * 4 * 36  # bias adds are not MACs


def test_params_only_measures_latency_and_throughput(capsys):
    assert _main("--genotype", "prdarts-dl1", "--params-only", "--config", str(DEMO),
                 "--set", "network.channels=4", "--set", "network.layers=3", "--set",
                     "device=cpu") == 0
    row = json.loads(capsys.readouterr().out)
    assert row["input_size"] == 16 and row["macs"] > 0
    assert row["latency_ms_b1"] > 0 and row["throughput_b64"] > 0
    assert row["cost_device"].startswith("cpu: ") and row["cost_threads"] >= 1


@pytest.mark.slow
def test_params_only_from_search_folder(tmp_path, capsys):
    dl1, dl2 = load_genotype("prdarts-dl1"), load_genotype("prdarts-dl2")
    for sub, g in [("a/trial_0", dl1), ("a/trial_1", dl2), ("b/checkpoint", dl1)]:
        (tmp_path / sub).mkdir(parents=True)
        g.save(tmp_path / sub / "genotype.json")
    assert _main("--from-search", str(tmp_path), "--params-only", "--no-timing") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # Found recursively, labelled by folder, the duplicate cell retrained once.
    assert [r["genotype"] for r in rows] == ["a/trial_0", "a/trial_1"]
    assert rows[0]["genotype_path"] == str((tmp_path / "a/trial_0/genotype.json").resolve())
    assert _main("--from-search", str(tmp_path / "a" / "nothing"), "--params-only") == 2
    assert "not a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert _main("--from-search", str(tmp_path / "empty"), "--params-only") == 2
    assert "no genotype.json" in capsys.readouterr().err


@pytest.mark.slow
def test_random_cells_beside_presets_and_files_carry_their_kind(tmp_path, capsys):
    from prnas.nn.eval_net import count_parameters
    from prnas.nn.eval_networks import build_eval_network
    from prnas.retrain.genotypes import (
        GenotypeRef,
        parse_random,
        random_cells,
        ref_for,
        write_random_cells,
    )
    from prnas.retrain.params import dataset_shape
    from prnas.space import preset
    from prnas.space.sampling import SampleSpec, sample_genotypes

    assert _main("--genotype", "darts-v2", "--random", "dl:2:2", "--params-only",
                 "--no-timing") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    cells = sample_genotypes(SampleSpec("DL", preset("DL"), 2), 2, seed=0)
    assert [(r["genotype"], r["kind"]) for r in rows] == [
        ("darts-v2", "preset"), ("random-DL-s0-0", "random"), ("random-DL-s0-1", "random")]
    cfg = load_config(None)
    classes, channels = dataset_shape(cfg.data)  # a real network, counted by hand
    assert rows[2]["params"] == count_parameters(build_eval_network(
        cfg.network.kind, cells[1], channels=cfg.network.channels, layers=cfg.network.layers,
        num_classes=classes, auxiliary=False, in_channels=channels))

    assert [(r.space, r.count, r.steps) for r in parse_random("DL:5, ur:1:3")] == [
        ("DL", 5, 5), ("UR", 1, 3)]
    refs = write_random_cells(random_cells(parse_random("DL:2:2")), tmp_path / "cells")
    again = write_random_cells(random_cells(parse_random("DL:1:2")), tmp_path / "cells")
    assert [r.label for r in refs + again] == ["random-DL-s0-0", "random-DL-s0-1",
                                               "random-DL-s0-0_2"]  # never over a file
    assert [load_genotype(r.ref) for r in refs] == cells
    assert ref_for(refs[0].ref).kind == "random"  # a sampled file says what it is
    assert ref_for("darts-v2").kind == "preset"
    assert ref_for(str(tmp_path / "cells" / "random-DL-s0-0.json")).label == "random-DL-s0-0"
    load_genotype("prdarts-dl1").save(tmp_path / "found.json")
    assert ref_for(str(tmp_path / "found.json")).kind == "searched"
    assert GenotypeRef.from_dict(refs[0].to_dict()) == refs[0]
    assert GenotypeRef.from_dict({"label": "x", "ref": "darts-v2"}).kind == "preset"  # older

    for bad, hint in (("DL", "SPACE:N"), ("XX:2", "unknown space"), ("DL:0", ">= 1"),
                      ("DL:2:x", "SPACE:N")):
        assert _main("--random", bad, "--storage", str(tmp_path / "runs")) == 2
        assert hint in capsys.readouterr().err
    assert _main("--random", "DL:2", "--random", "DL:1", "--params-only") == 2
    assert "twice" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_invalid_config_fails_before_any_compute(tmp_path, capsys):
    assert _main("--genotype", "darts-v2", "--set", "network.layers=1", "--storage",
        str(tmp_path)) == 2
    assert "network.layers:" in capsys.readouterr().err
    assert _main("--genotype", "darts-v2", "--dataset", "cifar10", "--storage", str(tmp_path),
                 "--data-dir", str(tmp_path / "nowhere")) == 2
    assert "CIFAR-10 not found" in capsys.readouterr().err
    assert _main("--name", "x", "--resume", "--storage", str(tmp_path)) == 2
    assert "no experiment" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_check_resources_refuses_gpu_trials_on_cpu_cluster(monkeypatch):
    nodes = [{"CPU": 4.0}, {"CPU": 8.0}]
    monkeypatch.setattr(cluster, "_node_capacities", lambda: nodes)
    cluster.check_resources(0, 8)
    with pytest.raises(cluster.ClusterResourceError, match="no GPU"):
        cluster.check_resources(1, 1)
    with pytest.raises(cluster.ClusterResourceError, match="largest node has 8"):
        cluster.check_resources(0, 12)  # 12 CPUs in total, but a trial runs on one node
    nodes.append({"CPU": 8.0, "GPU": 2.0})
    cluster.check_resources(2, 8)
    with pytest.raises(cluster.ClusterResourceError, match="largest node has 2"):
        cluster.check_resources(4, 1)


@pytest.mark.slow
def test_trainable_steps_checkpoints_and_resets(tmp_path):
    """The Trainable without a cluster: one step per epoch, exact restore, actor reuse."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from prnas.retrain.genotypes import resolve
    from prnas.tune.retrain import RetrainTrainable, param_space

    cfg = load_config(DEMO, {"data.subset": 64, "data.test_subset": 20, "network.channels": 4,
                             "network.layers": 3, "epochs": 2, "device": "cpu"})
    space = param_space(cfg, resolve(["darts-v2", "prdarts-dl1"]), [0, 1], threads=1)
    assert space["genotype"] == {"grid_search": ["darts-v2", "prdarts-dl1"]}
    conf = {**space, "genotype": "darts-v2", "seed": 0}
    threads = torch.get_num_threads()
    try:
        trial = RetrainTrainable(config=conf)
        first = trial.step()
        assert (first["epoch"], first["done"], first["genotype"], first["seed"]) == (
            1, False, "darts-v2", 0)
        assert first["kind"] == "preset"
        trial.save_checkpoint(str(tmp_path))
        second = trial.step()
        assert second["done"] is True
        # The finished trial keeps its network and measures what it costs.
        assert "latency_ms_b1" not in first and first["macs"] == second["macs"] > 0
        assert second["latency_ms_b1"] > 0 and second["cost_device"].startswith("cpu")
        from prnas.model_file import read

        mf = read(second["model_path"])
        assert mf.metrics["test_acc"] == second["test_acc"] and mf.genotype.name == "darts-v2"
        # The trial's own per-epoch records (what retrain.parquet is built from).
        from prnas.filenames import EPOCHS_FILE
        from prnas.records import read_jsonl

        kept = read_jsonl(Path(trial.trial_folder()) / EPOCHS_FILE, "epoch")
        assert [r["epoch"] for r in kept] == [1, 2]
        assert [r["test_acc"] for r in kept] == [first["test_acc"], second["test_acc"]]
        assert kept[-1]["model_path"] == second["model_path"] and "model_path" not in kept[0]
        assert {r["genotype"] for r in kept} == {"darts-v2"}
        again = RetrainTrainable(config=conf)
        again.load_checkpoint(str(tmp_path))
        assert again.step()["train_loss"] == second["train_loss"]
        assert again.reset_config({**conf, "genotype": "prdarts-dl1", "seed": 1})
        row = again.step()
        assert (row["epoch"], row["genotype"], row["seed"]) == (1, "prdarts-dl1", 1)
        trial.stop()
        again.stop()
    finally:
        torch.set_num_threads(threads)


def test_retrain_console_prints_one_line_per_epoch_and_trial(capsys):
    from types import SimpleNamespace

    from prnas.tune.retrain import EpochPrinter

    trial = SimpleNamespace(trial_id="t1", config={"genotype": "darts-v2", "seed": 1},
                            status="RUNNING", last_result={"model_path": "/x/model.pt"})
    other = SimpleNamespace(status="PENDING")
    # Queued again after results of its own (Tune's PENDING): between steps, not waiting
    # to start.
    between = SimpleNamespace(status="PENDING",
                              last_result={"epoch": 1, "training_iteration": 1})
    printer = EpochPrinter()
    printer.on_trial_result(0, [trial, other, between], trial, {
        "epoch": 2, "epochs": 3, "test_error": 12.345, "train_acc": 80.0, "lr": 0.025,
        "epoch_time_s": 1.25})
    printer.on_trial_result(0, [trial, other], trial, {"trial_id": "t1"})  # no epoch: no line
    printer.on_trial_complete(0, [trial], trial)
    assert capsys.readouterr().err.splitlines() == [
        "[darts-v2 r1 (t1)] epoch 2/3: test err 12.35%, train acc 80.00%, lr 0.02500, "
        "1.2s  | trials: 1 running, 1 paused, 1 pending",
        "[darts-v2 r1 (t1)] finished: /x/model.pt"]


# ---------------------------------------------------------------- real Ray


@pytest.mark.slow
@pytest.mark.ray
def test_fan_out_killed_refused_resumed_and_exact(tmp_path, capsys, monkeypatch):
    args = ["--genotype", "darts-v2", "--num-samples", "2", "--config", str(DEMO), *TINY,
            "--epochs", "2", "--storage", str(tmp_path), "--name", "exp", "--num-cpus", "2",
            "--cpus-per-trial", "1", "--quiet"]
    exp = tmp_path / "exp"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        _wait_for_a_checkpoint(proc, exp)
    finally:
        # Kill driver, Ray and trials together, as a lost node or Ctrl-\ would.
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (exp / "retrain.parquet").exists()

    _no_ray(monkeypatch)
    assert _main(*args) == 2
    assert "--resume" in capsys.readouterr().err

    resumed = _run("--storage", str(tmp_path), "--name", "exp", "--resume", "--num-cpus", "2",
                   "--cpus-per-trial", "1", "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "darts-v2" in resumed.stdout and "+-" in resumed.stdout

    df = pd.read_parquet(exp / "retrain.parquet")
    assert list(df.columns[:len(COLUMNS)]) == list(COLUMNS)
    assert len(df) == 2 * 2 and df["trial_id"].nunique() == 2
    assert sorted(df.groupby("trial_id")["epoch"].apply(list).tolist()) == [[1, 2]] * 2
    assert set(df["seed"]) == {0, 1} and set(df["genotype"]) == {"darts-v2"}
    assert set(df["dataset"]) == {"demo"} and df["genotype_path"].isna().all()
    assert set(df["kind"]) == {"preset"}
    assert df["params"].nunique() == 1

    # Every trial left its trained network in its folder; it evaluates to the logged accuracy.
    from prnas.evaluate import dataset_for, evaluate, performance_for
    from prnas.model_file import read

    last = df.sort_values("epoch").groupby("trial_id").tail(1)
    assert last["model_path"].notna().all() and (last["latency_ms_b1"] > 0).all()
    assert df[df["epoch"] < 2]["model_path"].isna().all()
    for _, row in last.iterrows():
        assert Path(row["model_path"]).parent.parent == exp
        mf = read(row["model_path"])
        assert mf.metrics["epochs"] == 2 and mf.metrics["test_acc"] == row["test_acc"]
        dev = torch.device("cpu")
        got = evaluate(mf.network_for_inference(), dataset_for(mf, None)[0], dev,
                       performance_for(mf, dev), int(mf.evaluation["batch_size"]))
        assert got.top1 == row["test_acc"]

    # The killed-and-resumed trials computed exactly what one uninterrupted
    # in-process run of the same protocol computes.
    cfg = load_config(DEMO, {"data.subset": 300, "data.test_subset": 60, "network.channels": 4,
                             "network.layers": 3, "epochs": 2, "device": "cpu"})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the trials (--cpus-per-trial 1)
    for seed in (0, 1):
        trainer = Retrainer(cfg.model_copy(update={"seed": seed}), load_genotype("darts-v2"))
        trainer.setup()
        expected = [trainer.train_epoch() for _ in range(2)]
        got = df[df["seed"] == seed].sort_values("epoch")
        assert got["train_loss"].tolist() == [r["train_loss"] for r in expected]
        assert got["test_error"].tolist() == [r["test_error"] for r in expected]
        assert got["params"].iloc[0] == trainer.params
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_ctrl_c_exits_130_leaves_no_final_results_and_resumes(tmp_path, capsys, monkeypatch):
    """Ctrl+C (SIGINT to the driver's process group, as a terminal sends it) stops the
    fan-out as an interruption: exit 130, the --resume hint, no retrain.parquet and no
    summary that looks final; --resume then finishes it."""
    args = ["--genotype", "darts-v2", "--config", str(DEMO), *TINY, "--epochs", "3",
            "--storage", str(tmp_path), "--name", "exp", "--num-cpus", "1",
            "--cpus-per-trial", "1"]
    exp = tmp_path / "exp"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _wait_for_a_checkpoint(proc, exp)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    assert "--name exp --resume" in err
    assert "Tuner.restore" not in err and "Failed to fetch metrics" not in err  # Tune's hints
    assert not (exp / "retrain.parquet").exists()
    assert "final test error" not in out and "rows ->" not in out
    assert "Configuration for experiment" not in out  # Tune's box: stderr, like all progress

    resumed = _run("--storage", str(tmp_path), "--name", "exp", "--resume", "--num-cpus", "1",
                   "--cpus-per-trial", "1", "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    df = pd.read_parquet(exp / "retrain.parquet")
    assert df["epoch"].tolist() == [1, 2, 3]
    assert df["protocol"].notna().all() and df["protocol"].nunique() == 1  # the run's config
    # 3 epochs <= report_last 5: the start warned, the summary names the rule it used.
    assert "warning: 3 epoch(s) <= report_last 5" in err
    assert "final test error = the last epoch (runs of at most" in resumed.stdout

    # The search job asked to resume it says what it is, in one line, before Ray starts.
    _no_ray(monkeypatch)
    capsys.readouterr()
    assert script_main("run_search")(["--storage", str(tmp_path), "--name", "exp", "--resume"]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert "is a retrain experiment" in lines[0]
