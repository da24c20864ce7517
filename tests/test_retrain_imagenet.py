"""The ImageNet (mobile setting) retrain: the network's published size, a tiny
ImageFolder retrain end to end with its artefacts, resume, and the layout error."""

from __future__ import annotations

import json
import math

import pytest
import torch
from data_folders import write_image_folder

from prnas.cost import count_macs
from prnas.model_file import load_model, read
from prnas.nn.eval_net import count_parameters
from prnas.nn.eval_net_imagenet import EvalNetworkImageNet
from prnas.presets import load_genotype
from prnas.retrain import Retrainer
from prnas.retrain.__main__ import main as cli_main
from prnas.retrain.results import COLUMNS, rows_to_frame

CONFIG = "tune_jobs/configs/retrain_imagenet.yaml"
# The ImageNet protocol shrunk to seconds: small images, a 3-cell net, 2 classes.
TINY = ["--set", "network.channels=8", "--set", "network.layers=3", "--set", "data.input_size=32",
        "--set", "batch.b_min=8", "--set", "batch.b_max=8",
        "--set", "eval_batch_size=16", "--set", "device=cpu", "--set", "data.num_workers=0"]


def _imagenet_like(root):
    write_image_folder(root / "train", num_classes=2, per_class=8, size=40, seed=0)
    write_image_folder(root / "val", num_classes=2, per_class=4, size=40, seed=1)
    return root


@pytest.mark.parametrize(("name", "published_m"), [("darts-v2", 4.7), ("pdarts", 4.9)])
def test_published_parameter_counts_at_the_mobile_setting(name, published_m):
    with torch.device("meta"):
        net = EvalNetworkImageNet(load_genotype(name), channels=48, layers=14,
                                  num_classes=1000, auxiliary=False)
    params = count_parameters(net)
    assert round(params / 1e6, 1) == published_m
    if name == "darts-v2":
        assert params == 4_718_752  # DARTS' own log: "param size = 4.718752MB"
    # conv + linear only (prnas.cost): below the published 574M / 557M, never above.
    assert 0 < count_macs(net, (3, 224, 224)) < {"darts-v2": 574e6, "pdarts": 557e6}[name]


def test_network_at_224_has_the_darts_shapes():
    net = EvalNetworkImageNet(load_genotype("darts-v2"), channels=8, layers=5, num_classes=7)
    net.train()
    seen = {}
    net.cells[-1].register_forward_hook(lambda m, i, o: seen.update(last=o.shape))
    logits, aux = net(torch.randn(2, 3, 224, 224))
    assert logits.shape == aux.shape == (2, 7)
    assert seen["last"][-2:] == (7, 7)  # the map DARTS' AvgPool2d(7) pools
    net.eval()
    assert net(torch.randn(1, 3, 224, 224))[1] is None


@pytest.mark.slow
def test_tiny_imagefolder_retrain_end_to_end_and_resume(tmp_path, capsys, monkeypatch):
    data = _imagenet_like(tmp_path / "tree")
    args = ["--config", CONFIG, "--genotype", "darts-v2",
            "--set", f"data.data_dir={data}", *TINY]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert cli_main(["--out", str(full), "--epochs", "2", *args]) == 0
    capsys.readouterr()
    rows = [json.loads(x) for x in (full / "epochs.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert math.isfinite(r["train_loss"]) and r["test_top5_error"] == 0.0  # 2 classes
    # The exponential schedule: lr 0.1 then 0.1 * 0.97.
    assert [r["lr"] for r in rows] == pytest.approx([0.1, 0.097])
    assert rows[-1]["dataset"] == "imagenet" and rows[-1]["params"] == rows[0]["params"]
    # The parquet schema of the Tune fan-out: every documented column, top-5 filled.
    frame = rows_to_frame([{**r, "trial_id": "t", "genotype": "darts-v2", "seed": 0,
                            "dataset": "imagenet"} for r in rows])
    assert list(frame.columns[:len(COLUMNS)]) == list(COLUMNS)
    assert frame["test_top5_error"].notna().all()
    # model.pt says which network it is, so load_model rebuilds the ImageNet one.
    mf = read(full)
    assert mf.network.kind == "imagenet" and mf.classes == ("class_0", "class_1")
    net = load_model(full)
    assert isinstance(net, EvalNetworkImageNet) and count_parameters(net) == rows[-1]["params"]

    # Interrupted in epoch 2, resumed: the same run as the uninterrupted one.
    real = Retrainer.train_epoch

    def interrupted(self):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(Retrainer, "train_epoch", interrupted)
    assert cli_main(["--out", str(cut), "--epochs", "2", *args]) == 130
    monkeypatch.setattr(Retrainer, "train_epoch", real)
    assert cli_main(["--out", str(cut), "--resume"]) == 0

    def strip(run):  # all but times and where the run is
        return [{k: v for k, v in json.loads(x).items() if k not in {
            "epoch_time_s", "latency_ms_b1", "throughput_b64", "trial_id", "genotype_path",
            "model_path"}} for x in (run / "epochs.jsonl").read_text().splitlines()]

    assert strip(full) == strip(cut)
    a, b = read(full), read(cut)
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


def test_missing_layout_is_one_line_naming_it(tmp_path, capsys):
    write_image_folder(tmp_path / "tree" / "train", num_classes=2, per_class=2, size=8)
    out = tmp_path / "run"
    code = cli_main(["--config", CONFIG, "--genotype", "darts-v2", "--out", str(out),
                     "--set", f"data.data_dir={tmp_path / 'tree'}", *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "no val/ folder" in err and "/train/<class>/<image>" in err
    assert not out.exists()


@pytest.mark.slow
def test_evaluate_cli_reproduces_the_imagenet_test_accuracy(tmp_path, capsys):
    from prnas.evaluate.__main__ import main as evaluate_main

    data = _imagenet_like(tmp_path / "tree")
    run = tmp_path / "run"
    assert cli_main(["--config", CONFIG, "--genotype", "pdarts", "--out",
                     str(run), "--epochs", "1", "--set", f"data.data_dir={data}", *TINY]) == 0
    capsys.readouterr()
    # The retrain's own val/ part, through the resize + centre-crop evaluation transform.
    assert evaluate_main([str(run), "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 8 and out["top1"] == out["logged_test_acc"]
