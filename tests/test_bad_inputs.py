"""Hostile but realistic inputs to every entry point, and the faults a shared folder sees.

Bad inputs: each case runs one command's ``main()`` in-process and asserts exit
status 2, exactly one line on stderr that names the field, file or flag, no
traceback, and that nothing under the test's folder was created or changed. All
of them fail before any training and before Ray starts.

Faults: a crafted checkpoint that would run code, SIGKILL during the first epoch
(then resume to the uninterrupted genotype), two runs on one folder and on one
Tune experiment, a stale lock, a full disk during a checkpoint write, divergence.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from scripts import script_main
from tiny import tiny_search

from prnas.runtime import checkpoint
from prnas.space.genotype import Genotype

ROOT = Path(__file__).resolve().parents[1]


def _entry(name: str) -> Callable[[list[str]], int]:
    if name == "search":
        from prnas.search.__main__ import main
    elif name == "retrain":
        from prnas.retrain.__main__ import main
    elif name == "analysis":
        from analysis.__main__ import main
    elif name == "space":
        from prnas.space.__main__ import main
    elif name == "evaluate":
        from prnas.evaluate.__main__ import main
    elif name == "export":
        from prnas.export.__main__ import main
    else:
        main = script_main(name)
    return main


def _snapshot(root: Path) -> dict[str, tuple[int, bytes] | None]:
    """Every path under ``root``; files with mtime and bytes. A folder's own mtime is left
    out: a refused ``--resume`` creates and removes its lock file there."""
    return {p.relative_to(root).as_posix(): ((p.stat().st_mtime_ns, p.read_bytes())
                                             if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


# ----------------------------------------------------------------------------- setups
# Each takes the test's folder, prepares what the case needs, returns the arguments.

def _tiny_yaml(tmp: Path, **over) -> str:
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_search(**over)))
    return str(path)


def _genotype_file(tmp: Path, mutate: Callable[[dict], object]) -> str:
    d = json.loads((ROOT / "prnas/presets/genotypes/darts-v2.json").read_text())
    replaced = mutate(d)
    path = tmp / "bad_genotype.json"
    path.write_text(json.dumps(d if replaced is None else replaced))
    return str(path)


def _images(tmp: Path, *, bad: str | None = None, classes: int = 3) -> list[str]:
    from data_folders import write_image_folder

    train = write_image_folder(tmp / "img" / "train", num_classes=classes, per_class=6, size=8)
    test = write_image_folder(tmp / "img" / "test", num_classes=classes, per_class=2, size=8)
    if bad == "train":
        p = train / "class_1" / "0003.png"
        p.write_bytes(p.read_bytes()[:40])
    elif bad == "test":
        (test / "class_2" / "0001.png").write_bytes(b"not a png")
    elif bad == "train-jpeg":  # a cut-off scan: PIL's cheap verify passes, decoding fails
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(torch.randint(0, 255, (32, 32, 3), dtype=torch.uint8,
                                      generator=torch.Generator().manual_seed(0)).numpy()
                        ).save(buf, "JPEG", quality=95)
        (train / "class_1" / "0004.jpg").write_bytes(buf.getvalue()[:len(buf.getvalue()) * 3 // 5])
    return ["--set", "data.dataset=imagefolder", "--set", f"data.train_dir={train}",
            "--set", f"data.test_dir={test}"]


def _model(tmp: Path) -> str:
    """A tiny model.pt whose classes are those of :func:`_images` (class_0..class_2)."""
    from prnas import model_file
    from prnas.model_file import NetworkSpec
    from prnas.nn.eval_net import EvalNetwork
    from prnas.presets import load_genotype

    torch.manual_seed(0)
    genotype = load_genotype("prdarts-dl1")
    net = EvalNetwork(genotype, channels=4, layers=3, num_classes=3, in_channels=3)
    path = tmp / "model.pt"
    model_file.save(path, net, genotype, NetworkSpec(channels=4, layers=3, num_classes=3,
                                                     in_channels=3, input_size=8,
                                                     auxiliary=True),
                    mean=(0.5,) * 3, std=(0.25,) * 3, classes=[f"class_{i}" for i in range(3)])
    return str(path)


def _train_tree(tmp: Path, bad: str | None = None) -> str:
    return _images(tmp, bad=bad)[3][len("data.train_dir="):]


_PWNED = "pwned.txt"


class _Evil:
    """Unpickling this runs ``touch`` on a marker file (in a full unpickle)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _run_folder(tmp: Path, kind: str, state: str) -> Path:
    """A run folder holding a checkpoint that is crafted, truncated, empty or of ``kind``."""
    out = tmp / "run"
    out.mkdir()
    (out / "config.yaml").write_text("{}\n")
    if kind == "retrain":
        (out / "genotype.json").write_text(
            (ROOT / "prnas/presets/genotypes/darts-v2.json").read_text())
    ckpt = out / "checkpoint.pt"
    if state == "crafted":
        checkpoint.save_atomic({"version": 1, "pools": _Evil(tmp / _PWNED),
                                "model": 1, "genotype": 1}, ckpt)
    elif state == "truncated":
        checkpoint.save_atomic({"version": 1, "pools": torch.zeros(1000)}, ckpt)
        ckpt.write_bytes(ckpt.read_bytes()[:300])
    elif state == "empty":
        ckpt.write_bytes(b"")
    elif state == "other-kind":  # a checkpoint of the other kind of run
        other = ({"version": 1, "model": {}, "genotype": {}} if kind == "search"
                 else {"version": 1, "pools": "{}"})
        checkpoint.save_atomic(other, ckpt)
    return out


def _search_experiment_running(tmp: Path) -> Path:
    """A Tune experiment folder mid-run: Tune's files, no parquet yet."""
    exp = tmp / "exp"
    exp.mkdir()
    (exp / "tuner.pkl").write_bytes(b"\x80\x04N.")
    return exp


def _old_report(tmp: Path) -> Path:
    out = tmp / "report"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "mine.png").write_bytes(b"the user's own figure")
    (out / "index.html").write_text("<html></html>")
    return out


BIG = str(2**70)

CASES: list[tuple[str, str, Callable[[Path], list[str]], str]] = [
    # ---- python -m prnas.search
    ("search-lr-inf", "search",
     lambda t: ["--config", _tiny_yaml(t), "--out", str(t / "o"), "--set", "optim.lr=.inf"],
     "optim.lr"),
    ("search-wd-inf", "search",
     lambda t: ["--config", _tiny_yaml(t), "--out", str(t / "o"),
                "--set", "optim.weight_decay=.inf"], "optim.weight_decay"),
    ("search-holdout-nan", "search",
     lambda t: ["--config", _tiny_yaml(t), "--out", str(t / "o"),
                "--set", "data.holdout_fraction=.nan"], "data.holdout_fraction"),
    ("search-grace-equals-epochs", "search",
     lambda t: ["--config", _tiny_yaml(t, schedule=[
         {"epochs": 2, "grace_epochs": 2, "morphs": 0, "candidates": 1}]),
         "--out", str(t / "o")], "grace_epochs"),
    ("search-betas", "search",
     lambda t: ["--out", str(t / "o"), "--set", "optim.alpha_betas=[1.5, 0.9]"],
     "optim.alpha_betas"),
    ("search-stop-after-0", "search",
     lambda t: ["--config", _tiny_yaml(t), "--out", str(t / "o"), "--stop-after-cycles", "0"],
     "--stop-after-cycles"),
    ("search-stop-after-negative", "search",
     lambda t: ["--config", _tiny_yaml(t), "--out", str(t / "o"), "--stop-after-cycles", "-1"],
     "--stop-after-cycles"),
    ("search-seed-huge", "search",
     lambda t: ["--config", _tiny_yaml(t), "--out", str(t / "o"), "--seed", BIG], "seed"),
    ("search-seed-negative", "search",
     lambda t: ["--config", _tiny_yaml(t), "--out", str(t / "o"), "--seed", "-3"], "seed"),
    ("search-set-bad-yaml", "search",
     lambda t: ["--out", str(t / "o"), "--set", "network.channels=[8"], "network.channels"),
    ("search-set-unknown-field", "search",
     lambda t: ["--out", str(t / "o"), "--set", "network.chanels=8"], "network.chanels"),
    ("search-bad-device", "search",
     lambda t: ["--out", str(t / "o"), "--device", "tpu"], "device"),
    ("search-out-is-file", "search",
     lambda t: ["--config", _tiny_yaml(t), "--out", str(t / "tiny.yaml")], "--out"),
    ("search-out-below-file", "search",
     lambda t: ["--config", _tiny_yaml(t), "--out", str(t / "tiny.yaml" / "sub")], "--out"),
    ("search-out-not-empty", "search",
     lambda t: ["--config", _tiny_yaml(t), "--out", str(_old_report(t))], "not empty"),
    ("search-resume-nothing", "search",
     lambda t: ["--out", str(t / "nothing"), "--resume"], "--resume"),
    ("search-resume-crafted-checkpoint", "search",
     lambda t: ["--out", str(_run_folder(t, "search", "crafted")), "--resume"], "refused"),
    ("search-resume-truncated-checkpoint", "search",
     lambda t: ["--out", str(_run_folder(t, "search", "truncated")), "--resume"],
     "checkpoint.pt"),
    ("search-resume-empty-checkpoint", "search",
     lambda t: ["--out", str(_run_folder(t, "search", "empty")), "--resume"], "checkpoint.pt"),
    ("search-resume-retrain-folder", "search",
     lambda t: ["--out", str(_run_folder(t, "search", "other-kind")), "--resume"], "retrain"),
    ("search-corrupt-train-image", "search",
     lambda t: ["--config", _tiny_yaml(t), "--out", str(t / "o"), *_images(t, bad="train")],
     "0003.png"),
    ("search-truncated-train-jpeg-in-a-worker", "search",
     lambda t: ["--config", _tiny_yaml(t), "--out", str(t / "o"), *_images(t, bad="train-jpeg"),
                "--set", "data.num_workers=1"], "0004.jpg"),
    ("search-corrupt-test-image", "search",
     lambda t: ["--config", _tiny_yaml(t), "--out", str(t / "o"), *_images(t, bad="test")],
     "0001.png"),
    ("search-one-class", "search",
     lambda t: ["--config", _tiny_yaml(t), "--out", str(t / "o"), *_images(t, classes=1)],
     "class"),
    # ---- python -m prnas.retrain
    ("retrain-lr-inf", "retrain",
     lambda t: ["--genotype", "darts-v2", "--out", str(t / "o"), "--set", "optim.lr=.inf"],
     "optim.lr"),
    ("retrain-seed-huge", "retrain",
     lambda t: ["--genotype", "darts-v2", "--out", str(t / "o"), "--seed", BIG], "seed"),
    ("retrain-set-bad-yaml", "retrain",
     lambda t: ["--genotype", "darts-v2", "--out", str(t / "o"), "--set", "epochs={"],
     "epochs"),
    ("retrain-concat-out-of-range", "retrain",
     lambda t: ["--genotype", _genotype_file(t, lambda d: d.update(normal_concat=[2, 3, 9])),
                "--out", str(t / "o")], "normal_concat"),
    ("retrain-concat-empty", "retrain",
     lambda t: ["--genotype", _genotype_file(t, lambda d: d.update(reduce_concat=[])),
                "--out", str(t / "o")], "reduce_concat"),
    ("retrain-empty-cell", "retrain",
     lambda t: ["--genotype", _genotype_file(t, lambda d: d.update(normal=[])),
                "--out", str(t / "o")], "normal"),
    ("retrain-fractional-input", "retrain",
     lambda t: ["--genotype", _genotype_file(t, lambda d: d["normal"][2].__setitem__(1, 1.5)),
                "--out", str(t / "o")], "1.5"),
    ("retrain-genotype-list", "retrain",
     lambda t: ["--genotype", _genotype_file(t, lambda d: [d]), "--out", str(t / "o")],
     "bad_genotype.json"),
    ("retrain-genotype-string", "retrain",
     lambda t: ["--genotype", _genotype_file(t, lambda d: "normal"), "--out", str(t / "o")],
     "bad_genotype.json"),
    ("retrain-out-is-file", "retrain",
     lambda t: ["--genotype", _genotype_file(t, lambda d: None),
                "--out", str(t / "bad_genotype.json")], "--out"),
    ("retrain-resume-search-folder", "retrain",
     lambda t: ["--out", str(_run_folder(t, "retrain", "other-kind")), "--resume"], "search"),
    ("retrain-resume-crafted-checkpoint", "retrain",
     lambda t: ["--out", str(_run_folder(t, "retrain", "crafted")), "--resume"], "refused"),
    ("retrain-resume-truncated-checkpoint", "retrain",
     lambda t: ["--out", str(_run_folder(t, "retrain", "truncated")), "--resume"],
     "checkpoint.pt"),
    # ---- tune_jobs/run_search.py (all refused before Ray starts)
    ("run_search-name-parent", "run_search",
     lambda t: ["--config", _tiny_yaml(t), "--storage", str(t / "runs"), "--name", "../../x"],
     "--name"),
    ("run_search-name-absolute", "run_search",
     lambda t: ["--config", _tiny_yaml(t), "--storage", str(t / "runs"),
                "--name", str(t / "abs")], "--name"),
    ("run_search-storage-is-file", "run_search",
     lambda t: ["--config", _tiny_yaml(t), "--storage", _tiny_yaml(t)], "--storage"),
    ("run_search-lr-inf", "run_search",
     lambda t: ["--config", _tiny_yaml(t), "--storage", str(t / "runs"),
                "--set", "optim.lr=.inf"], "optim.lr"),
    ("run_search-seeds-overflow", "run_search",
     lambda t: ["--config", _tiny_yaml(t, seed=2**63 - 1), "--storage", str(t / "runs"),
                "--num-samples", "2"], "seed"),
    ("run_search-set-bad-yaml", "run_search",
     lambda t: ["--storage", str(t / "runs"), "--set", "seed=[1"], "--set seed"),
    ("run_search-unreachable-address", "run_search",
     lambda t: ["--config", _tiny_yaml(t), "--storage", str(t / "runs"),
                "--address", "127.0.0.1:1"], "--address"),
    ("run_search-resume-missing", "run_search",
     lambda t: ["--storage", str(t / "runs"), "--name", "none", "--resume"], "--resume"),
    # ---- tune_jobs/run_retrain.py
    ("run_retrain-name-parent", "run_retrain",
     lambda t: ["--genotype", "darts-v2", "--storage", str(t / "runs"), "--name", "../x"],
     "--name"),
    ("run_retrain-storage-is-file", "run_retrain",
     lambda t: ["--genotype", "darts-v2", "--storage", _genotype_file(t, lambda d: None)],
     "--storage"),
    ("run_retrain-bad-genotype", "run_retrain",
     lambda t: ["--genotype", _genotype_file(t, lambda d: d.update(normal_concat=[7])),
                "--storage", str(t / "runs")], "normal_concat"),
    ("run_retrain-lr-inf", "run_retrain",
     lambda t: ["--genotype", "darts-v2", "--storage", str(t / "runs"), "--set",
                "optim.lr=.inf"], "optim.lr"),
    ("run_retrain-workers-zero", "run_retrain",
     lambda t: ["--genotype", "darts-v2", "--storage", str(t / "runs"),
                "--workers-per-trial", "0"], "--workers-per-trial"),
    ("run_retrain-imagenet-without-val", "run_retrain",
     lambda t: ["--genotype", "darts-v2", "--network", "imagenet", "--storage",
                str(t / "runs"), "--data-dir", str(_images(t)[3][len("data.train_dir="):])
                .removesuffix("/train")], "no val/ folder"),
    ("run_retrain-workers-not-dividing-batch", "run_retrain",
     lambda t: ["--genotype", "darts-v2", "--storage", str(t / "runs"),
                "--workers-per-trial", "5"], "--workers-per-trial 5: batch.b_max"),
    ("run_retrain-num-cpus-zero", "run_retrain",
     lambda t: ["--genotype", "darts-v2", "--storage", str(t / "runs"), "--num-cpus", "0"],
     "--num-cpus"),
    ("run_search-num-cpus-zero", "run_search",
     lambda t: ["--config", _tiny_yaml(t), "--storage", str(t / "runs"), "--num-cpus", "0"],
     "--num-cpus"),
    ("run_retrain-unreachable-address", "run_retrain",
     lambda t: ["--genotype", "darts-v2", "--set", "data.dataset=demo", "--storage",
                str(t / "runs"), "--address", "127.0.0.1:1"], "--address"),
    ("run_search-storage-in-proc", "run_search",
     lambda t: ["--config", _tiny_yaml(t), "--storage", "/proc/x"], "--storage"),
    ("search-out-in-proc", "search",
     lambda t: ["--config", _tiny_yaml(t), "--out", "/proc/x"], "--out /proc/x"),
    # ---- python -m prnas.evaluate, python -m prnas.export
    ("evaluate-truncated-png-in-data", "evaluate",
     lambda t: [_model(t), "--data-dir", _train_tree(t, bad="train")], "0003.png"),
    ("export-out-in-proc", "export",
     lambda t: [_model(t), "--format", "torchscript", "--out", "/proc/m.ts"], "--out"),
    ("export-tolerance-nan", "export",
     lambda t: [_model(t), "--format", "torchscript", "--out", str(t / "m.ts"),
                "--tolerance", "nan"], "--tolerance"),
    ("export-opset-2", "export",
     lambda t: [_model(t), "--format", "onnx", "--out", str(t / "m.onnx"), "--opset", "2"],
     "--opset 2"),
    ("export-opset-for-torchscript", "export",
     lambda t: [_model(t), "--format", "torchscript", "--out", str(t / "m.ts"),
                "--opset", "18"], "--opset"),
    # ---- python -m analysis
    ("analysis-force-running-experiment", "analysis",
     lambda t: ["report", str(_search_experiment_running(t)), "--out", str(_old_report(t)),
                "--force"], "no results.parquet"),
    ("analysis-running-experiment", "analysis",
     lambda t: ["report", str(_search_experiment_running(t)), "--out", str(t / "rep")],
     "still running"),
    ("analysis-bad-lineage", "analysis",
     lambda t: ["report", str(_search_experiment_running(t)), "--out", str(t / "rep"),
                "--lineage", "normal:x"], "--lineage"),
    # ---- python -m prnas.space
    ("space-count-unbounded", "space", lambda t: ["count", "--steps", "50"], "steps"),
    ("space-count-ur-many-steps", "space",
     lambda t: ["count", "--preset", "UR", "--steps", "100000"], "steps"),
    ("space-sample-count-huge", "space",
     lambda t: ["sample", "--space", "DL", "--count", "100000000000"], "--count"),
    ("run_retrain-random-count-huge", "run_retrain",
     lambda t: ["--random", "DL:1000000000", "--params-only"], "--random"),
    ("space-size-huge", "space", lambda t: ["size", "--ops", "5", "--nodes", "100000"],
     "nodes"),
]


@pytest.mark.parametrize("entry,setup,needle", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
@pytest.mark.slow
def test_bad_input_is_one_line_exit_2_and_touches_nothing(tmp_path, capsys, entry, setup,
                                                          needle):
    argv = setup(tmp_path)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    rc = _entry(entry)(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("note:")]
    assert rc == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0], lines[0]
    assert _snapshot(tmp_path) == before
    assert not (tmp_path / _PWNED).exists()  # a crafted checkpoint ran nothing


# ----------------------------------------------------------------------------- faults

def test_crafted_checkpoint_is_refused_without_running(tmp_path):
    marker = tmp_path / _PWNED
    checkpoint.save_atomic({"pools": _Evil(marker)}, tmp_path / "c.pt")
    torch.load(tmp_path / "c.pt", weights_only=False)  # the file really is an exploit...
    assert marker.exists()
    marker.unlink()
    with pytest.raises(checkpoint.CheckpointError, match="refused"):
        checkpoint.load(tmp_path / "c.pt")  # ...and loading it runs nothing
    assert not marker.exists()


def test_analysis_force_deletes_only_its_own_files(tmp_path):
    from analysis.report import MANIFEST, OutputExists, prepare_out

    legacy = _old_report(tmp_path)  # no manifest: refused, nothing deleted
    before = _snapshot(legacy)
    with pytest.raises(OutputExists, match="manifest"):
        prepare_out(legacy, force=True)
    assert _snapshot(legacy) == before

    out = tmp_path / "report2"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "a.png").write_bytes(b"report's")
    (out / "figures" / "mine.png").write_bytes(b"user's")
    (out / "notes.txt").write_text("user's")
    (out / MANIFEST).write_text(json.dumps({"files": ["figures/a.png", "../outside.txt"]}))
    (tmp_path / "outside.txt").write_text("must survive a crafted manifest")
    prepare_out(out, force=True)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "figures", "figures/mine.png", "notes.txt"]
    assert (tmp_path / "outside.txt").exists()


_SLOW_FIRST_EPOCH = """
import sys, time
import prnas.search.engine as engine
real = engine.Search.train_epoch
cycle = int(sys.argv[1])
def slow(self):
    if self.cycle == cycle and self.epoch == 0:
        time.sleep(120)  # the moment the test kills this process
    return real(self)
engine.Search.train_epoch = slow
from prnas.search.__main__ import main
sys.exit(main(sys.argv[2:]))
"""


def _start_search(cfg: str, out: Path, stall_in_cycle: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PRNAS_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", _SLOW_FIRST_EPOCH, str(stall_in_cycle),
                             "--config", cfg, "--out", str(out), "--quiet"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> tuple[str, dict]:
    """The tiny search's config and the genotype of an uninterrupted run."""
    from prnas.search.__main__ import main

    tmp = tmp_path_factory.mktemp("baseline")
    cfg = _tiny_yaml(tmp)
    assert main(["--config", cfg, "--out", str(tmp / "run"), "--quiet"]) == 0
    return cfg, Genotype.load(tmp / "run" / "genotype.json").to_dict()


# SIGKILL after a checkpoint, then --resume, is covered at every cycle by
# test_search_engine.py and test_tune_search.py; the first epoch, before any
# checkpoint, is the moment that used to leave a folder stuck between two refusals.
@pytest.mark.slow
def test_sigkill_in_first_epoch_then_resume_matches_uninterrupted_and_lock_refuses_second_run(
        tmp_path, capsys, baseline):
    from prnas.search.__main__ import main

    cfg, expected = baseline
    out = tmp_path / "run"
    proc = _start_search(cfg, out, stall_in_cycle=0)
    try:
        _wait_for(out / "config.yaml", proc)
        # A second run on the live folder is refused, naming the holder, and writes nothing.
        before = _snapshot(out)
        capsys.readouterr()
        assert main(["--out", str(out), "--resume", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"pid {proc.pid}" in err and len(err.strip().splitlines()) == 1, err
        assert main(["--config", cfg, "--out", str(out), "--quiet"]) == 2
        assert _snapshot(out) == before
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (out / "checkpoint.pt").exists()
    assert (out / ".prnas.lock").exists()  # stale: its process is dead
    assert main(["--out", str(out), "--resume", "--quiet"]) == 0
    assert Genotype.load(out / "genotype.json").to_dict() == expected
    assert not (out / ".prnas.lock").exists()


def test_full_disk_on_checkpoint_write_keeps_the_previous_one(tmp_path, capsys, monkeypatch):
    import prnas._io
    from prnas.search.__main__ import main

    real, calls = prnas._io.os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) > 2:  # config.yaml and the first checkpoint get through
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(prnas._io.os, "fsync", fsync)
    out = tmp_path / "run"
    rc = main(["--config", _tiny_yaml(tmp_path), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and "No space left on device" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    state = checkpoint.load(out / "checkpoint.pt", kind="search")
    assert (state["cycle"], state["epoch"]) == (0, 1)  # the first epoch's checkpoint
    assert not list(out.glob(".*.tmp"))  # no half-written file left behind
    monkeypatch.setattr(prnas._io.os, "fsync", real)
    assert main(["--out", str(out), "--resume", "--quiet"]) == 0


def _diverge_after(monkeypatch, cls: type, method: str, steps: int, loss: float) -> None:
    """From step ``steps + 1`` on, ``cls.method`` (a training step returning the loss first)
    reports ``loss``: a run that diverges."""
    real, calls = getattr(cls, method), []

    def poisoned(self, x, y):
        calls.append(1)
        got, *rest = real(self, x, y)
        return (loss if len(calls) > steps else got, *rest)

    monkeypatch.setattr(cls, method, poisoned)


def test_divergence_stops_with_one_line_and_keeps_last_good_checkpoint(tmp_path, capsys,
                                                                      monkeypatch):
    from prnas.search.__main__ import main
    from prnas.search.steps import SearchSteps

    _diverge_after(monkeypatch, SearchSteps, "weight_step", 2, float("nan"))  # 2 steps/epoch
    out = tmp_path / "run"
    rc = main(["--config", _tiny_yaml(tmp_path), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    # Progress lines share stderr (prnas.cli); the failure itself is one error line.
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 1 and len(errors) == 1 and "diverged" in errors[0], err
    assert "Traceback" not in err, err
    state = checkpoint.load(out / "checkpoint.pt", kind="search")
    assert (state["cycle"], state["epoch"]) == (1, 0)  # saved after cycle 1, before the NaN
    assert all(torch.isfinite(v).all() for v in state["net"].values() if v.is_floating_point())


def test_tune_experiment_lock_names_the_driver(tmp_path, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from prnas.tune.cluster import experiment_lock;"
         " experiment_lock(sys.argv[1], 'exp').acquire(); print('held', flush=True);"
         " time.sleep(120)", str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        (tmp_path / "exp").mkdir()
        (tmp_path / "exp" / "tuner.pkl").write_bytes(b"never unpickled by a refused driver")
        before = _snapshot(tmp_path)
        capsys.readouterr()
        rc = script_main("run_search")(["--storage", str(tmp_path), "--name", "exp", "--resume"])
        err = capsys.readouterr().err
        assert rc == 2 and f"pid {holder.pid}" in err, err
        assert _snapshot(tmp_path) == before
    finally:
        holder.kill()
        holder.wait()


def test_retrain_divergence_stops_with_one_line_and_keeps_last_good_checkpoint(
        tmp_path, capsys, monkeypatch):
    from prnas.retrain.__main__ import main
    from prnas.retrain.network import RetrainNetwork

    _diverge_after(monkeypatch, RetrainNetwork, "step", 3, float("inf"))  # 3 steps per epoch
    sets = {"network.channels": 4, "network.layers": 3, "device": "cpu", "batch.b_min": 16,
            "batch.b_max": 16, "data.dataset": "demo", "data.subset": 48,
            "data.test_subset": 16, "epochs": 3}
    out = tmp_path / "run"
    rc = main(["--genotype", "darts-v2", "--out", str(out),
               *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error")]
    assert rc == 1 and len(err) == 1 and "diverged" in err[0] and "epoch 2" in err[0], err
    state = checkpoint.load(out / "checkpoint.pt", kind="retrain")
    assert state["epoch"] == 1 and len(state["history"]) == 1


@pytest.mark.slow
def test_retrain_workers_beyond_the_cluster_are_refused_within_seconds(tmp_path):
    """More data-parallel workers than the cluster has CPUs used to wait forever (Ray Train
    gangs its workers) and ignore Ctrl+C; now one line with the cluster's figures."""
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, str(ROOT / "tune_jobs" / "run_retrain.py"), "--genotype", "darts-v2",
         "--set", "data.dataset=demo", "--storage", str(tmp_path / "runs"), "--name", "x",
         "--num-cpus", "2", "--workers-per-trial", "4"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert out.returncode == 2, out.stderr[-2000:]
    assert len(lines) == 1 and "needs 4 CPU(s)" in lines[0] and "has 2" in lines[0], lines
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs" / "x").exists()
    assert time.monotonic() - t0 < 60
