"""prnas.storage: one way to name, read and write an experiment's files on a local or shared
folder and on an object store (the S3 half runs against a local moto server)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest
from s3store import s3_store

from prnas.storage import Location, StorageError, as_location, location, on_filesystem
from prnas.tune.cluster import data_on_this_node, experiment_lock, experiment_storage


def test_a_local_folder_is_an_absolute_path_and_path_like(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    loc = location("runs")
    assert loc.is_local and loc.path == loc.uri == str(tmp_path / "runs")
    exp = loc / "exp"
    assert os.fspath(exp) == str(tmp_path / "runs" / "exp")
    assert exp.name == "exp" and exp.parent == loc
    assert location(f"file://{tmp_path}/runs").path == str(tmp_path / "runs")
    assert as_location(exp) is exp and as_location(Path(exp)).path == exp.path


def test_local_writes_replace_whole_files_and_leave_no_temporaries(tmp_path):
    target = location(tmp_path) / "exp" / "trial" / "cycles.jsonl"
    target.write_text("one\n")
    target.write_text("two\n")
    assert target.read_text() == "two\n" and target.is_file()
    assert [p.name for p in (tmp_path / "exp" / "trial").iterdir()] == ["cycles.jsonl"]
    assert [c.name for c in (location(tmp_path) / "exp").children()] == ["trial"]
    assert (location(tmp_path) / "nothing").children() == []
    # pandas takes a local Location as a path
    pd.DataFrame({"a": [1]}).to_parquet(location(tmp_path) / "x.parquet")
    assert pd.read_parquet(location(tmp_path) / "x.parquet").a.tolist() == [1]


def test_uri_keeps_its_query_through_joins():
    loc = Location(pafs.LocalFileSystem(), "/b", "/b")  # local: no query
    assert (loc / "x").uri == "/b/x"
    fs = pafs.SubTreeFileSystem("/", pafs.LocalFileSystem())  # any non-local filesystem
    remote = Location(fs, "bucket/prefix", "s3://bucket/prefix?endpoint_override=h:1&scheme=http")
    exp = remote / "exp"
    assert exp.path == "bucket/prefix/exp"
    assert exp.uri == "s3://bucket/prefix/exp?endpoint_override=h:1&scheme=http"
    assert exp.parent.uri == remote.uri and exp.name == "exp"
    with pytest.raises(TypeError, match="not a local path"):
        os.fspath(exp)
    assert exp.ray_filesystem is fs and (loc / "x").ray_filesystem is None


def test_a_uri_pyarrow_cannot_use_fails_with_its_reason():
    with pytest.raises(StorageError, match=r"--storage nosuch://x/y"):
        location("nosuch://x/y")


def test_experiment_storage_checks_a_local_folder_before_any_compute(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="--storage .*is a file"):
        experiment_storage(str(tmp_path / "file"))
    assert experiment_storage(str(tmp_path / "runs")).path == str(tmp_path / "runs")


def test_a_trial_without_data_on_its_node_says_where_and_what_to_do():
    from prnas.data.source import DatasetNotFoundError

    expected = r"no CIFAR-10 at /data \[on node .*same path"
    with pytest.raises(DatasetNotFoundError, match=expected), data_on_this_node():
        raise DatasetNotFoundError("no CIFAR-10 at /data")


def test_credentials_in_the_uri_are_refused():
    for uri in ("s3://AKIA:SECRET@bucket/runs", "s3://bucket/runs?secret_key=x&access_key=y"):
        with pytest.raises(StorageError, match="credentials in the URI"):
            location(uri)


# ----------------------------------------------------------------------------- object store
@pytest.fixture(scope="module")
def s3():
    """An S3-compatible store (moto) on a loopback port with an empty bucket; the URI of a
    prefix in it."""
    with s3_store("unit") as uri:
        yield uri


def test_object_store_writes_reads_and_lists_through_the_same_location(s3):
    runs = location(s3)
    assert runs.is_object_store and not runs.is_local and runs.path == "unit/runs"
    trial = runs / "exp" / "DL-seed0-abc"
    (trial / "cycles.jsonl").write_text("one\n")
    (trial / "cycles.jsonl").write_text("two\n")  # replaced whole, one object
    (trial / "genotype.json").write_bytes(b"{}")
    assert (trial / "cycles.jsonl").read_text() == "two\n"
    assert (runs / "exp").is_dir() and trial.is_dir() and (trial / "genotype.json").is_file()
    assert [c.name for c in (runs / "exp").children()] == ["DL-seed0-abc"]
    assert sorted(c.name for c in trial.children()) == ["cycles.jsonl", "genotype.json"]
    assert not (runs / "nothing").exists() and (runs / "nothing").children() == []
    # the URI a user can pass back reaches the same object
    assert location((trial / "cycles.jsonl").uri).read_text() == "two\n"
    assert on_filesystem(runs.fs, trial.path).uri == f"s3://{trial.path}"
    with pytest.raises(ValueError, match="is a bucket"):
        _ = location(s3.replace("/runs", "")).parent
    assert not hasattr(experiment_lock(runs, "exp"), "path")  # no folder lock on a store


def test_results_and_random_cells_on_an_object_store(s3):
    """The parquet writer reads the trial folders and writes through the store; random cells
    written there travel in their references (a trial never reads them back)."""
    from prnas.filenames import CYCLES_FILE, RESULTS_FILE
    from prnas.records import read_trial_rows, trial_dirs
    from prnas.retrain.genotypes import resolve, write_random_cells
    from prnas.space.genotype import Genotype
    from prnas.tune.results import write_results

    exp = location(s3) / "results-exp"
    row = {"trial_id": "t0", "cycle": 1, "seed": 0, "space": "DL", "valid_acc": 0.5}
    (exp / "DL-seed0-t0" / CYCLES_FILE).write_text(json.dumps(row) + "\n")
    assert [d.name for d in trial_dirs(exp)] == ["DL-seed0-t0"]
    (got,) = read_trial_rows(trial_dirs(exp)[0])
    assert got["trial_dir"] == (exp / "DL-seed0-t0").uri and got["genotype_path"] is None
    results, _, frame = write_results(exp)
    assert results.uri == (exp / RESULTS_FILE).uri and frame.valid_acc.tolist() == [0.5]
    assert pd.read_parquet(io.BytesIO(results.read_bytes())).trial_id.tolist() == ["t0"]
    with pytest.raises(FileExistsError):
        write_results(exp)

    cell = Genotype.from_dict(json.loads(json.dumps(_a_cell())))
    refs = resolve(extra=write_random_cells([cell, cell], exp / "random_cells"))
    assert [r.label for r in refs] == [cell.name, f"{cell.name}_2"]
    assert all(r.genotype == cell.to_dict() and r.load() == cell for r in refs)
    assert (exp / "random_cells" / f"{cell.name}.json").is_file()

    # --from-search on the store: each trial's genotype, carried in its reference
    from prnas.retrain.genotypes import from_search

    (exp / "DL-seed0-t0" / "genotype.json").write_text(cell.to_json())
    (ref,) = from_search(exp.uri)
    assert ref.label == "DL-seed0-t0" and ref.load() == cell and ref.kind == "searched"


def _a_cell() -> dict:
    from prnas.presets import load_genotype

    return load_genotype("darts-v2").to_dict()


def test_out_splits_a_uri_into_storage_and_name_keeping_its_query():
    import argparse

    from prnas import cli

    args = argparse.Namespace(out="s3://bucket/runs/exp?endpoint_override=h:9000&scheme=http",
                              storage=None, name=None)
    assert cli.experiment_path(args) == ("s3://bucket/runs?endpoint_override=h:9000&scheme=http",
                                         "exp")
