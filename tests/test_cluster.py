"""Beyond one machine, on one machine: a head and two worker Ray nodes
(``ray.cluster_utils.Cluster``, CPU only), the demo-sized fan-out across them, and the worker
running a trial removed in the middle of a cycle. Once with the experiment on a folder every
node shares, once on an S3-compatible store (moto, on a loopback address) where a fresh
driver process resumes an interrupted experiment.

The head has no CPUs, so every trial runs on a worker and the node a trial hangs on can be
removed. A trial that loses its node is restarted by Tune from its last checkpoint on the
other worker (``max_failures``); its genotype must equal an uninterrupted search's.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from s3store import aws_env, s3_store
from scripts import script_main
from tiny import tiny_search

from prnas.filenames import CYCLES_FILE, GENOTYPE_FILE, RESULTS_FILE
from prnas.search.config import build_config
from prnas.search.engine import Search
from prnas.storage import Location, location

ray = pytest.importorskip("ray")

from faults import InterruptAfterCycles, faulty  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.cluster]

ROOT = Path(__file__).resolve().parents[1]
TINY = tiny_search(data={"subset": 120})
SEEDS = (0, 1)
HANG_S = 180  # a trial waits this long for its node to be removed before it fails anyway


# ----------------------------------------------------------------------------- the cluster
@pytest.fixture(scope="module")
def cluster():
    """Nodes started with S3 credentials in their environment, as every node of a real
    cluster needs them (the S3 test's store checks none, but the clients look for them)."""
    from ray.cluster_utils import Cluster

    with aws_env():
        ray.shutdown()  # a Ray of an earlier module in this process
        c = Cluster(initialize_head=True,
                    head_node_args={"num_cpus": 0, "include_dashboard": False})
        try:
            _ensure_workers(c, 2)
            ray.init(address=c.address)
            yield c
        finally:
            ray.shutdown()
            c.shutdown()


def _ensure_workers(c, n: int) -> None:
    """n live one-CPU worker nodes (the main thread only: Ray installs signal handlers)."""
    while len(c.worker_nodes) < n:
        c.add_node(num_cpus=1)
    c.wait_for_nodes()


def _dead(node_id: str, timeout: float = 60.0) -> bool:
    """Whether Ray's control store declares the node dead (its health check takes up to
    ~15 s by default; Tune notices sooner, as its actor's connection closes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node_id not in {n["NodeID"] for n in ray.nodes() if n.get("Alive")}:
            return True
        time.sleep(0.5)
    return False


class NodeKiller(threading.Thread):
    """Waits for the fault marker a hung trial writes, then removes the node it names."""

    def __init__(self, c, marker: Path, timeout: float = 600.0) -> None:
        super().__init__(daemon=True)
        self.cluster, self.marker, self.timeout = c, marker, timeout
        self.removed: str | None = None
        self.trial_id: str | None = None
        self.error: str | None = None

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.marker.exists():
                try:
                    info = json.loads(self.marker.read_text())
                except ValueError:  # half written: read again
                    time.sleep(0.1)
                    continue
                workers = {w.node_id: w for w in self.cluster.worker_nodes}
                if info["node_id"] not in workers:
                    self.error = f"the hung trial runs on {info['node_id']}, not on a worker"
                    return
                self.cluster.remove_node(workers[info["node_id"]], allow_graceful=False)
                self.removed, self.trial_id = info["node_id"], info["trial_id"]
                return
            time.sleep(0.2)
        self.error = "no trial hung on its fault marker"


# ----------------------------------------------------------------------------- checks
def _reference_cells(trial_config: dict) -> dict:
    """The genotype an uninterrupted search of this trial's config finds, in-process
    (a trial equals it bit for bit)."""
    from prnas.tune.search_trainable import trial_search_config

    genotype = Search(trial_search_config(trial_config), log=None).run()
    d = genotype.to_dict()
    return {"normal": d["normal"], "reduce": d["reduce"]}


def load_trial_config(trial_dir: Location) -> dict:
    """A trial's config as Tune last wrote it (``params.json``, rewritten at each resume,
    so it holds the latest decision too)."""
    return json.loads((trial_dir / "params.json").read_text())


def _check_experiment(experiment: Location, killer: NodeKiller) -> pd.DataFrame:
    """Finished, no duplicate rows, the removed node really ran the victim, the victim's
    cycle really ran elsewhere, and both genotypes are the uninterrupted ones."""
    assert killer.error is None, killer.error
    assert killer.removed is not None and _dead(killer.removed)
    frame = _parquet(experiment / RESULTS_FILE)
    assert not frame.duplicated(["trial_id", "cycle"]).any()
    assert sorted(frame.seed.unique()) == list(SEEDS)
    assert frame.groupby("trial_id").cycle.max().tolist() == [3, 3]
    victim = frame[frame.trial_id == killer.trial_id].set_index("cycle")
    assert victim.loc[2, "node_id"] not in (None, killer.removed)  # restarted elsewhere
    for trial_dir in sorted(set(frame.trial_dir)):
        folder = location(trial_dir)  # a path, or a URI naming its endpoint
        saved = json.loads((folder / GENOTYPE_FILE).read_text())
        ref = _reference_cells(load_trial_config(folder))
        assert {"normal": saved["normal"], "reduce": saved["reduce"]} == ref
        assert (folder / CYCLES_FILE).is_file()
    return frame


def _parquet(loc: Location) -> pd.DataFrame:
    """A parquet file on any storage, read through prnas' own filesystem layer."""
    return pd.read_parquet(io.BytesIO(loc.read_bytes()))


# ----------------------------------------------------------------------------- shared folder
def test_losing_a_node_mid_cycle_on_a_shared_folder(cluster, tmp_path):
    from prnas.tune.experiment import SearchExperiment, run_search

    marker = tmp_path / "hang.marker"
    killer = NodeKiller(cluster, marker)
    killer.start()
    exp = SearchExperiment(cfg=build_config(TINY), storage=tmp_path / "shared", name="exp",
                           seeds=SEEDS, max_failures=2,
                           trainable=faulty({"cycle": 2, "marker": str(marker),
                                             "hang_s": HANG_S}))
    outcome = run_search(exp)
    killer.join(timeout=5)
    assert outcome.complete, outcome.errors
    frame = _check_experiment(outcome.path, killer)
    assert frame.trial_dir.map(lambda d: Path(d).parent == tmp_path / "shared" / "exp").all()


# ----------------------------------------------------------------------------- object store
@pytest.fixture
def s3(cluster):
    """An S3-compatible store on a loopback port, a bucket in it, and the --storage URI."""
    with s3_store("prnas-test") as uri:
        yield uri


def _driver(fault: dict, stop_after_cycles: int, args: list[str],
            timeout: float = 600) -> subprocess.CompletedProcess:
    """``run_search.py`` as a driver process of its own, joined to the test's cluster, with
    a trial that fails as ``fault`` says and, unless 0, the interrupt after that many cycles
    (``tests/faults.py``)."""
    return subprocess.run([sys.executable, str(ROOT / "tests" / "faults.py"), json.dumps(fault),
                           str(stop_after_cycles), "2", "--", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_object_store_node_loss_and_resume_from_a_fresh_driver(cluster, s3, tmp_path):
    """The first driver (this process) stops after cycle 1 (as Ctrl+C would); a second
    driver process, which knows the experiment only from the store, resumes it. The fault
    is armed only then, so a worker is lost during the resumed run and Tune restarts the
    trial elsewhere."""
    _ensure_workers(cluster, 2)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    marker, arm = tmp_path / "hang.marker", tmp_path / "armed"
    fault = {"cycle": 2, "marker": str(marker), "hang_s": HANG_S, "armed_by": str(arm)}
    common = ["--address", cluster.address, "--storage", s3, "--name", "exp", "-q"]
    assert script_main("run_search")(
        [*common, "--config", str(config), "--num-samples", "2", "--max-failures", "2"],
        trainable=faulty(fault), callbacks=[InterruptAfterCycles(1, 2)]) == 130
    experiment = location(s3) / "exp"
    assert (experiment / "tuner.pkl").is_file()
    partial = _parquet(experiment / RESULTS_FILE)
    assert partial.groupby("trial_id").cycle.max().min() < 3  # a trial is left to resume
    assert not marker.exists()  # the fault was not armed yet

    arm.write_text("")
    killer = NodeKiller(cluster, marker)
    killer.start()
    second = _driver(fault, 0, [*common, "--resume"])
    killer.join(timeout=5)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"{s3.split('?')[0]}/exp" in second.stdout
    frame = _check_experiment(experiment, killer)

    # Retrain what the search found, on the cluster, from the store and into it: two
    # workers again, so the two trials run side by side.
    _ensure_workers(cluster, 2)
    assert script_main("run_retrain")(
        ["--address", cluster.address, "--storage", s3, "--name", "retrain", "-q",
         "--from-search", experiment.uri, "--config",
         str(ROOT / "tune_jobs" / "configs" / "retrain_demo.yaml"), "--epochs", "1",
         "--set", "network.channels=4", "--set", "network.layers=3", "--set",
         "data.subset=120", "--set", "data.test_subset=40", "--cpus-per-trial", "1"]) == 0
    rows = _parquet(location(s3) / "retrain" / "retrain.parquet")
    assert sorted(rows.genotype) == sorted({d.rsplit("/", 1)[-1].split("?")[0]
                                            for d in frame.trial_dir})
    assert set(rows.kind) == {"searched"}
    for model in rows.model_path:  # written by a trial: names the store, not its endpoint
        assert model.startswith("s3://")
        assert Location(experiment.fs, model.removeprefix("s3://"), model).is_file()
