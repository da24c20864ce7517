"""prnas.storage: one way to name, read and write an experiment's files on a local or shared
folder and on an object store (the S3 half runs against a local moto server)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest

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
    assert exp.ray_storage() == {"storage_path": "bucket/prefix/exp", "storage_filesystem": fs}


def test_a_uri_pyarrow_cannot_use_fails_with_its_reason():
    with pytest.raises(StorageError, match=r"--storage nosuch://x/y"):
        location("nosuch://x/y")


def test_experiment_storage_checks_a_local_folder_before_any_compute(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="--storage .*is a file"):
        experiment_storage(str(tmp_path / "file"))
    assert experiment_storage(str(tmp_path / "runs")).path == str(tmp_path / "runs")


def test_a_trial_without_data_on_its_node_says_where_and_what_to_do():
    from prnas.data.datasets import DatasetNotFoundError

    expected = r"no CIFAR-10 at /data \[on node .*same path"
    with pytest.raises(DatasetNotFoundError, match=expected), data_on_this_node():
        raise DatasetNotFoundError("no CIFAR-10 at /data")


def test_on_filesystem_names_the_store():
    assert on_filesystem(pafs.LocalFileSystem(), "/a/b").uri == "/a/b"


def test_no_lock_on_an_object_store_but_a_folder_lock_locally(tmp_path):
    from prnas.runtime.lock import FolderLock

    assert isinstance(experiment_lock(location(tmp_path), "exp"), FolderLock)


def test_out_splits_a_uri_into_storage_and_name_keeping_its_query():
    import argparse

    from prnas import cli

    args = argparse.Namespace(out="s3://bucket/runs/exp?endpoint_override=h:9000&scheme=http",
                              storage=None, name=None)
    assert cli.experiment_path(args) == ("s3://bucket/runs?endpoint_override=h:9000&scheme=http",
                                         "exp")
