"""Data-parallel retraining through Ray Train's TorchTrainer: two CPU workers (gloo),
a failure after epoch 1 recovered from the checkpoint, the single process's numbers."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from prnas.data.testing import write_image_folder
from prnas.presets import load_genotype
from prnas.retrain import build_config
from prnas.retrain.ddp import DataParallelRetrainer
from prnas.retrain.genotypes import resolve
from prnas.retrain.results import COLUMNS

CFG = {"network.kind": "imagenet", "network.channels": 8, "network.layers": 3, "device": "cpu",
       "epochs": 2,
       "optim.lr": 0.01, "drop_path_prob": 0.3, "label_smoothing": 0.1, "data.dataset": "imagenet",
       "data.input_size": 32, "batch.b_min": 16, "batch.b_max": 16,
       "eval_batch_size": 8, "data.num_workers": 0}


@pytest.mark.slow
@pytest.mark.ray
def test_torch_trainer_two_workers_recover_and_match_one_process(tmp_path):
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from faults import crash_after_epoch

    from prnas.tune.cluster import init_ray
    from prnas.tune.retrain_ddp import fit_one, run_name

    tree = tmp_path / "tree"
    write_image_folder(tree / "train", num_classes=2, per_class=16, size=40, seed=0)
    write_image_folder(tree / "val", num_classes=2, per_class=4, size=40, seed=1)
    cfg = build_config(overrides={**CFG, "data.data_dir": str(tree)})
    single = DataParallelRetrainer(cfg, load_genotype("darts-v2"))
    single.setup()
    while not single.done:
        single.train_epoch()

    ref = resolve(["darts-v2"], [], ())[0]
    init_ray(num_cpus=3)
    try:
        rows = fit_one(cfg, ref, 0, workers=2, use_gpu=False, experiment=tmp_path / "exp",
                       loop=crash_after_epoch(1, tmp_path / "crashed"))
    finally:
        ray.shutdown()
    assert (tmp_path / "crashed").exists()  # the worker group did fail once and resumed
    assert list(rows.columns[:len(COLUMNS)]) == list(COLUMNS)
    assert rows["epoch"].tolist() == [1, 2] and (rows["workers"] == 2).all()
    for got, want in zip(rows.to_dict("records"), single.history, strict=True):
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=2e-5)
        assert got["test_acc"] == pytest.approx(want["test_acc"])
    run = tmp_path / "exp" / run_name(ref, 0)
    assert (run / "model.pt").is_file() and (run / "result.json").is_file()
    assert pd.notna(rows["latency_ms_b1"].iloc[-1])
