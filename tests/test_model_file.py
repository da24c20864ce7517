"""model.pt: written by a finished retrain, read with weights_only, loaded without the trainer,
evaluated back to the logged accuracy, and refused when tampered with or mismatched."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from data_folders import write_cifar_folder
from PIL import Image

import prnas
from prnas import model_file
from prnas.evaluate.__main__ import main as evaluate_main
from prnas.model_file import ModelFileError, NetworkSpec, load_model, read
from prnas.nn.eval_net import EvalNetwork
from prnas.presets import load_genotype
from prnas.retrain import Retrainer, build_config
from prnas.retrain.__main__ import main as retrain_main
from prnas.runtime import checkpoint
from prnas.space.genotype import Genotype

TINY = {"network.channels": 4, "network.layers": 3, "device": "cpu", "batch.b_min": 16,
        "batch.b_max": 16, "eval_batch_size": 32, "data.dataset": "demo",
        "data.subset": 64, "data.test_subset": 45}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished 3-epoch in-process retrain of PR-DARTS DL1 on the digits."""
    out = tmp_path_factory.mktemp("retrain") / "run"
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    assert retrain_main(["--out", str(out), "--genotype", "prdarts-dl1", "--epochs", "3",
                         *sets]) == 0
    return out


def _metrics(run):
    return [json.loads(line) for line in (run / "epochs.jsonl").read_text().splitlines()]


def test_retrain_writes_a_plain_data_model_file(run):
    raw = torch.load(run / "model.pt", weights_only=True)  # no pickled classes
    assert raw["format"] == "prnas-model/1"
    genotype = Genotype.from_dict(json.loads(raw["genotype"]))
    assert genotype == Genotype.load(run / "genotype.json")
    assert raw["network"] == {"kind": "cifar", "channels": 4, "layers": 3, "num_classes": 10,
                              "in_channels": 1, "input_size": 16, "auxiliary": True,
                              "stem_multiplier": 3}
    assert raw["classes"] == [str(i) for i in range(10)]
    assert len(raw["normalisation"]["mean"]) == len(raw["normalisation"]["std"]) == 1
    rows = _metrics(run)
    assert raw["metrics"]["test_acc"] == rows[-1]["test_acc"]
    assert raw["metrics"]["macs"] == rows[-1]["macs"] > 0
    accs = [r["test_acc"] for r in rows]
    assert raw["best_test_epoch"]["epoch"] == accs.index(max(accs)) + 1
    assert raw["best_test_epoch"]["test_acc"] == max(accs)
    assert rows[-1]["latency_ms_b1"] > 0
    assert rows[-1]["throughput_b64"] > 0 and rows[-1]["cost_device"].startswith("cpu: ")


def test_load_model_gives_the_trained_network(run):
    torch.manual_seed(7)
    expected_draw = torch.rand(3)
    torch.manual_seed(7)
    net = prnas.load_model(run, device="cpu")
    assert torch.equal(torch.rand(3), expected_draw)  # loading drew no random numbers
    assert isinstance(net, EvalNetwork) and not net.training
    final = checkpoint.load(run / "checkpoint.pt")["model"]
    state = net.state_dict()
    assert state.keys() == final.keys()
    assert all(torch.equal(state[k], final[k]) for k in final)
    best = load_model(run / "model.pt", weights="best-test-epoch")
    mf = read(run)
    assert all(torch.equal(best.state_dict()[k], mf.best_state_dict[k]) for k in final)
    logits, aux = net(torch.zeros(2, 1, 16, 16))
    assert logits.shape == (2, 10) and aux is None


def test_evaluate_reproduces_the_logged_accuracy(run, capsys):
    rows = _metrics(run)
    assert evaluate_main([str(run)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["top1"] == out["logged_test_acc"] == rows[-1]["test_acc"]  # to the last digit
    assert out["images"] == 45 and out["top5"] >= out["top1"]
    assert math.isclose(out["loss"], rows[-1]["test_loss"], rel_tol=1e-6)
    assert evaluate_main([str(run / "model.pt"), "--weights", "best-test-epoch"]) == 0
    best = json.loads(capsys.readouterr().out)
    assert best["top1"] == max(r["test_acc"] for r in rows)


def test_evaluate_image_folder_and_images(run, tmp_path, capsys):
    """Folder names map to the model's classes by name; preprocessing is the model's own."""
    from prnas.evaluate import transform

    mf = read(run)
    net = load_model(run)
    rng = np.random.default_rng(0)
    files, labels = [], []
    for name in ("3", "7"):
        (tmp_path / "tree" / name).mkdir(parents=True)
        for i in range(3):
            path = tmp_path / "tree" / name / f"{i}.png"
            Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(path)
            files.append(path)
            labels.append(int(name))
    tf = transform(mf)
    x = torch.stack([tf(Image.open(f).convert("L")) for f in files])
    with torch.no_grad():
        probs = torch.softmax(net(x)[0], dim=1)
    expected = probs.argmax(1)
    assert evaluate_main([str(run), "--data-dir", str(tmp_path / "tree"), "--batch-size", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 6 and "logged_test_acc" not in out
    assert out["correct"] == int((expected == torch.tensor(labels)).sum())
    assert evaluate_main([str(run), "--images", *map(str, files)]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [p for p, _, _ in lines] == [str(f) for f in files]
    assert [int(c) for _, c, _ in lines] == expected.tolist()
    assert [float(p) for _, _, p in lines] == pytest.approx(
        probs.max(1).values.tolist(), abs=1e-4)
    (tmp_path / "tree" / "cat").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "tree" / "cat" / "0.png")
    assert evaluate_main([str(run), "--data-dir", str(tmp_path / "tree")]) == 2
    err = capsys.readouterr().err
    assert "'cat'" in err and "not among the model's" in err and err.count("\n") == 1


def test_evaluate_a_cifar_folder(tmp_path, capsys):
    """CIFAR: top-1 and top-5 on a CIFAR root equal what the retrain logged on it."""
    root = write_cifar_folder(tmp_path / "cifar", n_train=32, n_test=24)
    cfg = build_config(overrides={**TINY, "data.dataset": "cifar10", "data.data_dir": str(root),
                                  "data.subset": None, "data.test_subset": None, "epochs": 1})
    trainer = Retrainer(cfg, load_genotype("darts-v2"))
    trainer.setup()
    row = trainer.train_epoch()
    trainer.save_model(tmp_path / "model.pt")
    assert read(tmp_path).classes == tuple(trainer.train_set.base.classes)
    for data in ([], ["--data-dir", str(root)], ["--data-dir", str(root / "cifar-10-batches-py")]):
        assert evaluate_main([str(tmp_path / "model.pt"), *data]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["images"] == 24 and out["top1"] == row["test_acc"]
        assert out["top5"] is not None and out["top5"] >= out["top1"]


# ----------------------------------------------------------------------------- refusals


class _Payload:
    """What an attacker would pickle: unpickling it would create ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _one_line_refusal(path, match):
    with pytest.raises(ModelFileError, match=match) as err:
        load_model(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    return err


def test_a_file_with_code_in_it_is_refused_and_nothing_runs(run, tmp_path, capsys):
    raw = torch.load(run / "model.pt", weights_only=True)
    marker = tmp_path / "executed"
    evil = tmp_path / "evil.pt"
    torch.save({**raw, "metrics": {"note": _Payload(marker)}}, evil)
    _one_line_refusal(evil, "more than plain data")
    assert not marker.exists()
    assert evaluate_main([str(evil)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and not marker.exists()


def test_tampered_or_mismatched_files_are_refused(run, tmp_path):
    raw = torch.load(run / "model.pt", weights_only=True)
    # An edit that keeps every shape: swap the cell's pools. Only the fingerprint sees it.
    text = raw["genotype"]
    swapped = text.replace("max_pool_3x3", "@").replace("avg_pool_3x3", "max_pool_3x3") \
        .replace("@", "avg_pool_3x3")
    assert swapped != text
    torch.save({**raw, "genotype": swapped}, tmp_path / "edited.pt")
    _one_line_refusal(tmp_path / "edited.pt", "fingerprint")
    weights = dict(raw["state_dict"])
    weights["classifier.bias"] = weights["classifier.bias"] + 1.0
    torch.save({**raw, "state_dict": weights}, tmp_path / "weights.pt")
    _one_line_refusal(tmp_path / "weights.pt", "fingerprint")
    # A consistent file whose weights belong to another genotype: refused by shape.
    mf = read(run)
    other = EvalNetwork(load_genotype("darts-v2"), channels=4, layers=3, num_classes=10,
                        in_channels=1)
    model_file.save(tmp_path / "other.pt", other, mf.genotype, mf.network, mean=mf.mean,
                    std=mf.std, classes=mf.classes)
    err = _one_line_refusal(tmp_path / "other.pt", "does not fit genotype 'prdarts-dl1'")
    assert "missing" in str(err.value) or "other shape" in str(err.value)
    wide = NetworkSpec(**{**mf.network.model_dump(), "channels": 6})
    model_file.save(tmp_path / "wide.pt", load_model(run), mf.genotype, wide, mean=mf.mean,
                    std=mf.std, classes=mf.classes)
    _one_line_refusal(tmp_path / "wide.pt", r"C=6.*of other shape")
    # Not a model file at all, a cut-off one, a malformed field.
    torch.save({"format": "something/2"}, tmp_path / "format.pt")
    _one_line_refusal(tmp_path / "format.pt", "not a prnas-model/1 file")
    data = (run / "model.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    _one_line_refusal(tmp_path / "cut.pt", "not a readable torch file")
    torch.save({**raw, "network": {**raw["network"], "layers": "many"}}, tmp_path / "field.pt")
    _one_line_refusal(tmp_path / "field.pt", "field network.layers")


def test_folders_resolve_to_their_one_model_file(run, tmp_path):
    assert model_file.find(run) == run / "model.pt"
    assert model_file.find(run.parent) == run / "model.pt"  # the only one below
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "model.pt").write_bytes((run / "model.pt").read_bytes())
    with pytest.raises(ModelFileError, match="holds 2 model.pt files"):
        model_file.find(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match="no model.pt"):
        model_file.find(tmp_path / "empty")
