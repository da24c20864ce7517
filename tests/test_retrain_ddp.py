"""Data-parallel retraining on CPU: two gloo workers compute the single process's run."""

from __future__ import annotations

import json

import pytest
import torch
from data_folders import write_image_folder
from ddp_local import train_local

from prnas.model_file import load_model, read
from prnas.presets import load_genotype
from prnas.retrain import build_config
from prnas.retrain.ddp import DataParallelRetrainer, GlobalBatchNorm2d

# The ImageNet protocol's network and transforms (RandomResizedCrop, flip, colour jitter)
# plus Cutout and drop-path (0.3, ramping to 0.15 in epoch 2), auxiliary head on: every
# per-sample random draw and every BatchNorm is exercised.
CFG = {"network.kind": "imagenet", "network.channels": 8, "network.layers": 3, "device": "cpu",
       "epochs": 2,
       "optim.lr": 0.01,
       "drop_path_prob": 0.3, "cutout": 4, "optim.lr_schedule": "exponential",
       "label_smoothing": 0.1, "data.dataset": "imagenet", "data.input_size": 32,
       "batch.b_min": 16, "batch.b_max": 16, "eval_batch_size": 8,
       "data.num_workers": 0}
# Tolerance: float32 sums in another order. (A CIFAR net of 4 channels on 16 px digits is
# chaotic enough that one process on 1 or 2 threads drifts 1e-3 apart within 4 steps; this
# network is not, so the comparison can be tight.)
REL = 2e-5


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    write_image_folder(root / "train", num_classes=2, per_class=32, size=40, seed=0)
    write_image_folder(root / "val", num_classes=2, per_class=8, size=40, seed=1)
    return root


def _rows(folder):
    return [json.loads(x) for x in (folder / "epochs.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_gloo_workers_match_one_process_and_resume(tmp_path, tree):
    cfg = build_config(overrides={**CFG, "data.data_dir": str(tree)})
    genotype = load_genotype("darts-v2")
    single = DataParallelRetrainer(cfg, genotype)  # one process, the same global batch 16
    single.setup()
    while not single.done:
        single.train_epoch()
    steps = single.step_losses
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in single.model.modules())

    # Two workers of 8 images each; killed after epoch 1, then resumed from the checkpoint.
    out = tmp_path / "ddp"
    train_local(cfg, genotype, 2, out, stop_after=1)
    assert len(_rows(out)) == 1
    train_local(cfg, genotype, 2, out)
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert [len(s) for s in steps] == [4, 4]  # 64 images / 16
    # An in-process run's layout; the checkpoint keeps each epoch's global step losses.
    from prnas.runtime import checkpoint

    saved = checkpoint.load(out / "checkpoint.pt", kind="retrain")
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.pt", "config.yaml", "epochs.jsonl", "genotype.json", "model.pt"]
    assert rows[-1]["genotype"] == "darts-v2" and rows[-1]["model_path"].endswith("model.pt")
    for row, ref, row_steps, ref_steps in zip(rows, single.history, saved["step_losses"],
                                              steps, strict=True):
        assert row_steps == pytest.approx(ref_steps, rel=REL)
        for key in ("train_loss", "test_loss"):
            assert row[key] == pytest.approx(ref[key], rel=REL)
        for key in ("train_acc", "test_acc", "test_top5_error", "lr", "drop_path_prob"):
            assert row[key] == pytest.approx(ref[key])
    # The weights too, BatchNorm running statistics included (global, not per worker).
    state = saved["model"]
    ref_state = single.model.state_dict()
    assert state.keys() == ref_state.keys()
    for k, v in ref_state.items():
        assert torch.allclose(state[k].float(), v.float(), rtol=1e-4, atol=1e-6), k
    # A data-parallel run's model.pt is the plain network.
    single.save_model(tmp_path / "model.pt")
    assert not any(isinstance(m, GlobalBatchNorm2d) for m in load_model(
        tmp_path / "model.pt").modules())
    assert read(tmp_path / "model.pt").classes == ("class_0", "class_1")


def test_global_batch_must_split_evenly(tree):
    with pytest.raises(ValueError, match="divisible by the 3 workers"):
        DataParallelRetrainer(build_config(overrides={**CFG, "data.data_dir": str(tree)}),
                              load_genotype("darts-v2"),
                              rank=0, world_size=3)
