"""Retraining without Ray: config validation, a tiny run, bit-exact resume, the CLI."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from data_folders import write_cifar_folder

from prnas.presets import load_genotype
from prnas.retrain import ConfigError, Retrainer, build_config, drop_path_at, load_config
from prnas.retrain.__main__ import main as cli_main
from prnas.retrain.schedule import final_error, headline_rule, short_run_warning
from prnas.runtime.schedules import cosine_lr

TINY = {"network.channels": 4, "network.layers": 3, "device": "cpu", "batch.b_min": 16,
        "batch.b_max": 32, "eval_batch_size": 64}


def _demo_cfg(**extra):
    return build_config(overrides={**TINY, "data.dataset": "demo", "data.subset": 80,
                                   "data.test_subset": 40, **extra})


# ---------------------------------------------------------------- config


def test_defaults_are_the_paper_protocol():
    cfg = build_config()
    assert (cfg.network.channels, cfg.network.layers, cfg.epochs) == (36, 20, 600)
    o = cfg.optim
    assert (o.lr, o.lr_min, o.momentum, o.weight_decay) == (0.025, 0.0, 0.9, 3e-4)
    assert (cfg.network.auxiliary_weight, cfg.drop_path_prob, o.grad_clip, cfg.cutout) == (
        0.4, 0.3, 5.0, 16)
    assert (cfg.batch.b_min, cfg.batch.b_max) == (32, 128)
    assert cfg.data.dataset == "cifar10" and cfg.report_last == 5
    # Setting one batch-size field keeps the retrain minimum of 32.
    assert build_config({"batch": {"b_max": 64}}).batch.b_min == 32


@pytest.mark.parametrize(("raw", "field", "hint"), [
    ({"data": {"dataset": "mnist"}}, "data.dataset", "cifar10"),
    ({"epochs": 0}, "epochs", "greater than or equal to 1"),
    ({"chanels": 16}, "chanels", "allowed: data, network"),
    ({"network": {"chanels": 16}}, "network.chanels", "allowed: channels"),
    ({"network": {"channels": 15}}, "network.channels", "even"),
    ({"drop_path_prob": 1.5}, "drop_path_prob", "less than 1"),
    ({"batch": {"b_min": 64, "b_max": 32}}, "batch.b_max", "b_min"),
    ({"device": "tpu"}, "device", "cuda:N"),
])
def test_invalid_config_names_the_field(tmp_path, raw, field, hint):
    import yaml

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{field}:" in str(err.value) and hint in str(err.value)
    assert str(path) in str(err.value)


def test_overrides_are_validated_like_the_file(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("epochs: 7\ndata:\n  dataset: demo\n")
    cfg = load_config(path, {"network.channels": 8, "data.subset": 50})
    assert (cfg.epochs, cfg.network.channels, cfg.data.dataset, cfg.data.subset) == (7, 8,
        "demo", 50)
    with pytest.raises(ConfigError, match="data.subset"):
        load_config(path, {"data.subset": -1})


def test_shipped_configs_validate():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "tune_jobs" / "configs"
    paper = load_config(root / "retrain.yaml")
    assert paper.model_dump(exclude={"data"}) == build_config().model_dump(exclude={"data"})
    assert paper.data.dataset == "cifar10"
    demo = load_config(root / "retrain_demo.yaml")
    assert demo.data.dataset == "demo" and demo.network.channels < paper.network.channels


# ---------------------------------------------------------------- schedule


def test_schedule_follows_darts():
    assert drop_path_at(0, 600, 0.3) == 0.0
    assert drop_path_at(300, 600, 0.3) == pytest.approx(0.15)
    assert drop_path_at(599, 600, 0.3) == pytest.approx(0.3 * 599 / 600)
    with pytest.raises(ValueError):
        drop_path_at(600, 600, 0.3)
    assert cosine_lr(0, 600, 0.025) == 0.025
    assert cosine_lr(300, 600, 0.025) == pytest.approx(0.0125)
    # The closed form is torch's CosineAnnealingLR, floor included (the search's per-cycle form).
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.025)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10, eta_min=0.01)
    for epoch in range(10):
        assert cosine_lr(epoch, 10, 0.025, 0.01) == pytest.approx(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    rows = [{"test_error": e} for e in (50, 10, 9, 8, 7, 6)]
    assert final_error(rows, 5) == pytest.approx(8.0)
    # A run no longer than the window reports its last epoch: a mean would take in epoch 1.
    assert final_error(rows[:2], 5) == pytest.approx(10.0)
    assert final_error(rows[:5], 5) == pytest.approx(7.0)
    assert headline_rule(6, 5) == "mean of the last 5 epochs" and short_run_warning(6, 5) is None
    assert "last epoch" in headline_rule(5, 5) and "report_last 5" in short_run_warning(5, 5)
    assert final_error([], 5) is None


# ---------------------------------------------------------------- training


def test_tiny_retrain_on_generated_cifar(tmp_path):
    root = write_cifar_folder(tmp_path / "cifar", n_train=64, n_test=20)
    cfg = build_config(overrides={**TINY, "epochs": 2, "data.data_dir": str(root)})
    trainer = Retrainer(cfg, load_genotype("darts-v2"))
    trainer.setup()
    assert trainer.info.num_classes == 10 and trainer.info.train_size == 64
    rows = [trainer.train_epoch(), trainer.train_epoch()]
    assert trainer.done and [r["epoch"] for r in rows] == [1, 2]
    with pytest.raises(RuntimeError, match="already finished"):
        trainer.train_epoch()
    for r in rows:
        assert math.isfinite(r["train_loss"]) and math.isfinite(r["test_loss"])
        assert r["test_error"] == pytest.approx(100.0 - r["test_acc"])
        assert 0.0 <= r["test_acc"] <= 100.0
        assert r["params"] == trainer.params > 0
        assert r["batch_size_last"] == 16  # 64 = 4 x 16: no short last batch
    # lr follows the cosine over 2 epochs, drop-path the DARTS ramp.
    assert [r["lr"] for r in rows] == pytest.approx([0.025, 0.0125])
    assert [r["drop_path_prob"] for r in rows] == pytest.approx([0.0, 0.15])
    assert rows[-1]["final_test_error"] == rows[1]["test_error"]  # 2 epochs <= report_last
    # Weights moved.
    assert trainer.net.scheduler.last_epoch == 2


def _run(cfg, epochs_before_save=None, tmp_path=None):
    trainer = Retrainer(cfg, load_genotype("prdarts-dl2"))
    trainer.setup()
    if epochs_before_save is None:
        while not trainer.done:
            trainer.train_epoch()
        return trainer.history
    for _ in range(epochs_before_save):
        trainer.train_epoch()
    path = tmp_path / "ckpt.pt"
    trainer.save(path)
    del trainer
    # Whatever happened in between must not matter: the checkpoint holds every stream.
    torch.manual_seed(12345)
    random.seed(1)
    np.random.seed(2)
    torch.randn(100)
    resumed = Retrainer(cfg, load_genotype("prdarts-dl2"))
    resumed.setup()
    resumed.restore(path)
    assert resumed.epoch == epochs_before_save
    while not resumed.done:
        resumed.train_epoch()
    return resumed.history


@pytest.mark.slow
def test_resume_reproduces_uninterrupted_run(tmp_path):
    # Odd subset and b_min: a short last batch; cutout, crops and drop-path all draw RNG.
    cfg = _demo_cfg(epochs=3, **{"data.subset": 70, "batch.b_min": 24})
    straight = _run(cfg)
    interrupted = _run(cfg, epochs_before_save=1, tmp_path=tmp_path)
    strip = [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in straight]
    again = [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in interrupted]
    assert strip == again
    assert len({r["train_loss"] for r in strip}) == 3  # the epochs really differ


def test_restore_refuses_other_genotype_or_protocol(tmp_path):
    cfg = _demo_cfg(epochs=2)
    trainer = Retrainer(cfg, load_genotype("prdarts-dl1"))
    trainer.setup()
    trainer.train_epoch()
    trainer.save(tmp_path / "c.pt")
    other = Retrainer(cfg, load_genotype("darts-v2"))
    other.setup()
    with pytest.raises(ValueError, match="genotype"):
        other.restore(tmp_path / "c.pt")
    longer = Retrainer(_demo_cfg(epochs=5), load_genotype("prdarts-dl1"))
    longer.setup()
    with pytest.raises(ValueError, match="epochs: 2 -> 5"):
        longer.restore(tmp_path / "c.pt")


# ---------------------------------------------------------------- CLI


def _cli_args(out, *extra):
    sets = [f"{k}={v}" for k, v in {**TINY, "data.dataset": "demo", "data.subset": 48,
                                     "data.test_subset": 20}.items()]
    return ["--out", str(out), *[a for s in sets for a in ("--set", s)],
            *extra]


@pytest.mark.slow
def test_cli_writes_metrics_refuses_existing_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_main(_cli_args(out, "--genotype", "prdarts-dl1", "--epochs", "2")) == 0
    said = capsys.readouterr()
    lines = said.out.strip().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    stored = [json.loads(x) for x in (out / "epochs.jsonl").read_text().splitlines()]
    assert stored == [json.loads(line) for line in lines]
    # Labelled as every retrain's rows; the last with the inference cost and model file.
    assert {(r["trial_id"], r["genotype"], r["kind"], r["dataset"]) for r in stored} == {
        ("run", "prdarts-dl1", "preset", "demo")}
    assert stored[-1]["final_test_error"] == stored[-1]["test_error"]  # 2 <= report_last
    assert stored[-1]["latency_ms_b1"] > 0 and stored[-1]["model_path"] == str(out / "model.pt")
    assert "latency_ms_b1" not in stored[0]
    assert "warning: 2 epoch(s) <= report_last 5" in said.err
    # An existing output is never overwritten.
    before = (out / "checkpoint.pt").read_bytes()
    assert cli_main(_cli_args(out, "--genotype", "prdarts-dl1", "--epochs", "2")) == 2
    assert "--resume" in capsys.readouterr().err
    assert (out / "checkpoint.pt").read_bytes() == before
    # Resuming a finished run does nothing new; a changed protocol is refused.
    assert cli_main(["--out", str(out), "--resume"]) == 0
    assert capsys.readouterr().out == ""
    assert cli_main(["--out", str(out), "--resume", "--epochs", "4"]) == 2
    assert "epochs: 2 -> 4" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_resume_continues_an_interrupted_run(tmp_path, capsys, monkeypatch):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert cli_main(_cli_args(full, "--genotype", "darts-v2", "--epochs", "2")) == 0
    capsys.readouterr()
    # Ctrl-C during the second epoch: the checkpoint of the first remains.
    real = Retrainer.train_epoch

    def interrupted(self):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(Retrainer, "train_epoch", interrupted)
    assert cli_main(_cli_args(cut, "--genotype", "darts-v2", "--epochs", "2")) == 130
    assert not (cut / "model.pt").exists()
    monkeypatch.setattr(Retrainer, "train_epoch", real)
    capsys.readouterr()
    assert cli_main(["--out", str(cut), "--resume"]) == 0
    assert [json.loads(x)["epoch"] for x in capsys.readouterr().out.splitlines()] == [2]

    # Equal but for times and where the run is (its folder, its model file).
    ignored = {"epoch_time_s", "latency_ms_b1", "throughput_b64", "trial_id", "genotype_path",
               "model_path"}

    def rows(run):
        return [{k: v for k, v in json.loads(x).items() if k not in ignored}
                for x in (run / "epochs.jsonl").read_text().splitlines()]

    assert rows(full) == rows(cut)
    # The model file too: final and best-test-epoch weights survive the interruption.
    from prnas.model_file import read

    a, b = read(full), read(cut)
    assert a.state_dict.keys() == b.state_dict.keys()
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert a.best_epoch == b.best_epoch and all(
        torch.equal(a.best_state_dict[k], b.best_state_dict[k]) for k in a.best_state_dict)


def test_cli_unknown_genotype_lists_presets(tmp_path, capsys):
    assert cli_main(_cli_args(tmp_path / "x", "--genotype", "nope")) == 2
    assert "prdarts-dl2" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- performance switches


def _one_epoch(**perf):
    r = _trainer(**perf)
    return r, r.train_epoch()


def _trainer(**perf):
    r = Retrainer(_demo_cfg(epochs=2, **{f"performance.{k}": v for k, v in perf.items()}),
                  load_genotype("prdarts-dl2"))
    r.setup()
    r.model.drop_path_prob = 0.2
    return r


def test_channels_last_computes_the_same_steps_as_nchw():
    """Same loss and weights to 1e-5 over a few steps (over a whole epoch, float noise
    grows chaotically through the tiny net, so the check stays at step level)."""
    nchw, nhwc = _trainer(channels_last=False), _trainer(channels_last=True)
    assert nhwc.model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = torch.randn(16, *nchw.train_set[0][0].shape, generator=g)
        y = torch.randint(0, nchw.info.num_classes, (16,), generator=g)
        state = torch.get_rng_state()  # the same drop-path masks for both
        loss_a = nchw.net.step(x, y)[0]
        torch.set_rng_state(state)
        loss_b = nhwc.net.step(x, y)[0]
        assert loss_b == pytest.approx(loss_a, rel=1e-5)
    sd_a, sd_b = nchw.model.state_dict(), nhwc.model.state_dict()
    for k in sd_a:
        torch.testing.assert_close(sd_b[k], sd_a[k], atol=1e-5, rtol=1e-5, msg=k)


@pytest.mark.slow
def test_bf16_retrain_runs_near_fp32_and_resume_may_change_layout(tmp_path):
    fp32, row_a = _one_epoch(channels_last=False)
    bf16, row_b = _one_epoch(amp="bf16")
    assert math.isfinite(row_b["train_loss"])
    assert row_b["train_loss"] == pytest.approx(row_a["train_loss"], rel=0.05)
    # Layout changes nothing computed, so a checkpoint restores under the other one.
    fp32.save(tmp_path / "ck.pt")
    again = Retrainer(_demo_cfg(epochs=2, **{"performance.channels_last": True}),
                      load_genotype("prdarts-dl2"))
    again.setup()
    again.restore(tmp_path / "ck.pt")
    assert again.epoch == 1


def test_a_checkpoint_of_another_format_is_refused_in_one_line():
    """One policy for old files: the format version is checked first, nothing migrated."""
    from prnas.retrain.trainer import STATE_VERSION

    trainer = Retrainer(_demo_cfg(epochs=2), load_genotype("darts-v2"))
    trainer.setup()
    trainer.train_epoch()
    state = trainer.state_dict()
    state["version"] = STATE_VERSION - 1
    again = Retrainer(_demo_cfg(epochs=2), load_genotype("darts-v2"))
    again.setup()
    with pytest.raises(ValueError) as err:
        again.load_state_dict(state)
    assert "format" in str(err.value) and "\n" not in str(err.value)
