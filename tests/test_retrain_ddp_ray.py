"""Data-parallel retraining through Ray Train's TorchTrainer: two CPU workers (gloo),
a failure after epoch 1 recovered from the checkpoint, the single process's numbers."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from data_folders import write_image_folder

from analysis import loaders
from prnas.filenames import EPOCHS_FILE, MODEL_FILE, RETRAIN_FILE
from prnas.presets import load_genotype
from prnas.records import write_parquet
from prnas.retrain import build_config
from prnas.retrain.ddp import DataParallelRetrainer
from prnas.retrain.genotypes import resolve
from prnas.retrain.results import COLUMNS

CFG = {"network.kind": "imagenet", "network.channels": 8, "network.layers": 3, "device": "cpu",
       "epochs": 2,
       "optim.lr": 0.01, "drop_path_prob": 0.3, "label_smoothing": 0.1, "data.dataset": "imagenet",
       "data.input_size": 32, "batch.b_min": 16, "batch.b_max": 16,
       "eval_batch_size": 8, "data.num_workers": 0}


def _files(trial: Path) -> set[str]:
    """A trial folder's own files (not Tune's, not Ray Train's checkpoints)."""
    return {p.name for p in trial.iterdir() if p.name in (EPOCHS_FILE, MODEL_FILE)}


@pytest.mark.slow
@pytest.mark.ray
def test_torch_trainer_two_workers_recover_and_match_one_process(tmp_path):
    """One trial of the retrain experiment on two gloo workers, failing once after epoch 1
    and resumed from Ray Train's checkpoint, computes the single process's numbers and
    leaves a plain trial's layout; retrain.parquet is built as for any retrain."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from faults import crash_after_epoch

    from prnas.tune.cluster import init_ray
    from prnas.tune.retrain import build_tuner, result_rows
    from prnas.tune.retrain_ddp import ddp_trainable

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
        ddp = build_tuner(cfg, [ref], [0], storage=tmp_path, name="ddp", gpus_per_trial=0,
                          cpus_per_trial=1, max_failures=1, verbose=0, workers_per_trial=2,
                          trainable=ddp_trainable(crash_after_epoch(1, tmp_path / "crashed")))
        assert not ddp.fit().errors
        plain = build_tuner(cfg.model_copy(update={"epochs": 1}), [ref], [0],
                            storage=tmp_path, name="plain", gpus_per_trial=0,
                            cpus_per_trial=1, verbose=0)
        assert not plain.fit().errors
    finally:
        ray.shutdown()
    assert (tmp_path / "crashed").exists()  # the worker group did fail once and resumed
    rows = result_rows(tmp_path / "ddp")
    assert list(rows.columns[:len(COLUMNS)]) == list(COLUMNS)
    assert rows["epoch"].tolist() == [1, 2] and (rows["workers"] == 2).all()
    for got, want in zip(rows.to_dict("records"), single.history, strict=True):
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=2e-5)
        assert got["test_acc"] == pytest.approx(want["test_acc"])
    assert pd.notna(rows["latency_ms_b1"].iloc[-1])
    (trial,) = [d for d in (tmp_path / "ddp").iterdir() if d.is_dir()]
    (plain_trial,) = [d for d in (tmp_path / "plain").iterdir() if d.is_dir()]
    assert _files(trial) == _files(plain_trial) == {EPOCHS_FILE, MODEL_FILE}
    assert rows["model_path"].iloc[-1] == str(trial / MODEL_FILE)
    # Both experiments' retrain.parquet, as the job writes it, read by the analysis together.
    for name in ("ddp", "plain"):
        write_parquet(result_rows(tmp_path / name), tmp_path / name / RETRAIN_FILE)
    both = loaders.load_retrain(tmp_path / "ddp", tmp_path / "plain")
    assert sorted(both.groupby("experiment")["epoch"].max().items()) == [("ddp", 2), ("plain", 1)]


@pytest.mark.slow
@pytest.mark.ray
def test_data_parallel_and_plain_trials_write_the_same_files_to_an_object_store(tmp_path):
    """The same layout on the moto S3 store the storage tests use: the chief worker writes
    through prnas.storage, Ray Train keeps its checkpoints there too."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from s3store import s3_store

    from prnas.storage import location
    from prnas.tune.cluster import init_ray
    from prnas.tune.retrain import build_tuner, result_rows

    tree = tmp_path / "tree"
    write_image_folder(tree / "train", num_classes=2, per_class=16, size=40, seed=0)
    write_image_folder(tree / "val", num_classes=2, per_class=4, size=40, seed=1)
    cfg = build_config(overrides={**CFG, "data.data_dir": str(tree), "epochs": 1})
    ref = resolve(["darts-v2"], [], ())[0]
    with s3_store("ddp") as uri:
        init_ray(num_cpus=3)  # after the store: the workers inherit its credentials
        try:
            for name, workers in (("ddp", 2), ("plain", None)):
                tuner = build_tuner(cfg, [ref], [0], storage=uri, name=name, gpus_per_trial=0,
                                    cpus_per_trial=1, verbose=0, workers_per_trial=workers)
                assert not tuner.fit().errors
        finally:
            ray.shutdown()
        layouts = []
        for name in ("ddp", "plain"):
            (trial,) = [d for d in (location(uri) / name).children() if d.is_dir()]
            layouts.append({n for n in (EPOCHS_FILE, MODEL_FILE) if (trial / n).is_file()})
            rows = result_rows(location(uri) / name)
            assert rows["epoch"].tolist() == [1] and rows["model_path"].iloc[-1].startswith("s3://")
        assert layouts == [{EPOCHS_FILE, MODEL_FILE}] * 2
