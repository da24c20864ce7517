"""The one CLI convention (prnas/cli.py): exit-code table, seed rule, shared flags."""

import re
from pathlib import Path

import pytest

from prnas import cli

ROOT = Path(__file__).resolve().parents[1]


def test_docs_exit_code_table_is_the_code_table():
    """docs/errors.md shows EXIT_CODES; the two never drift apart."""
    text = (ROOT / "docs" / "errors.md").read_text()
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| (\d+) \| (.+?) \| .+ \|$", section, flags=re.M))
    assert {int(k): v for k, v in rows.items()} == cli.EXIT_CODES
    assert (cli.EXIT_OK, cli.EXIT_FAILED, cli.EXIT_BAD_INPUT, cli.EXIT_INTERRUPTED) == (
        0, 1, 2, 130)


def test_seed_rule_and_shared_overrides():
    assert cli.seeds(5, 3) == [5, 6, 7] and cli.seeds(0, 1) == [0]
    p = cli.argparse.ArgumentParser()
    cli.add_config(p, "x")
    cli.add_data(p)
    cli.add_seed(p)
    cli.add_device(p)
    cli.add_verbosity(p)
    args = p.parse_args(["--set", "network.channels=8", "--data-dir", "d", "--download",
                         "--seed", "4", "--device", "cpu", "-q"])
    assert cli.overrides(args) == {"network.channels": 8, "data.data_dir": "d",
                                   "data.download": True, "seed": 4, "device": "cpu"}
    assert args.verbosity == 0
    assert p.parse_args([]).verbosity == 1 and p.parse_args(["--verbose"]).verbosity == 2
    with pytest.raises(SystemExit):
        p.parse_args(["-q", "-v"])


@pytest.mark.parametrize("module, argv, refused", [
    ("tune_jobs/run_search.py", ["--log-epochs"], "--log-epochs"),
    ("tune_jobs/run_retrain.py", ["--verbose", "0"], "0"),
    ("prnas.retrain.__main__", ["--out", "x", "--no-progress"], "--no-progress"),
    ("prnas.space.__main__", ["count", "--paper-counting"], "--paper-counting"),
    ("analysis.__main__", ["report", "x", "--out", "y", "--functional-counting"],
     "--functional-counting"),
    ("prnas.evaluate.__main__", ["m", "--data", "x"], "--data x"),  # no prefix of --data-dir
    ("prnas.export.__main__", ["m", "--format", "onnx", "--out", "x", "--overwrite"],
     "--overwrite"),
])
def test_removed_spellings_are_refused_by_argparse(module, argv, refused, capsys):
    """One spelling per flag: the old ones (renamed in earlier releases) are gone, and no
    abbreviation of a flag is taken for it (allow_abbrev=False)."""
    with pytest.raises(SystemExit) as exit_:
        _module(module)._parser().parse_args(argv)
    assert exit_.value.code == cli.EXIT_BAD_INPUT
    assert f"unrecognized arguments: {refused}" in capsys.readouterr().err


def _module(module: str):
    import importlib
    import importlib.util

    if not module.endswith(".py"):
        return importlib.import_module(module)
    path = ROOT / module
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tune_out_is_storage_and_name(tmp_path):
    p = cli.argparse.ArgumentParser()
    cli.add_out(p, tune=True)
    storage, name = cli.experiment_path(p.parse_args(["--out", str(tmp_path / "exp")]))
    assert (storage, name) == (str(tmp_path), "exp")
    assert cli.experiment_path(p.parse_args(["--storage", "s", "--name", "n"])) == ("s", "n")
    with pytest.raises(ValueError, match="one or the other"):
        cli.experiment_path(p.parse_args(["--out", "a", "--name", "n"]))


@pytest.mark.parametrize("module", ["prnas.search.__main__", "prnas.retrain.__main__",
                                    "prnas.evaluate.__main__", "prnas.export.__main__",
                                    "tune_jobs/run_search.py", "tune_jobs/run_retrain.py"])
def test_every_training_or_model_command_takes_the_shared_flags(module):
    """-q/-v, --out where something is written, --device defaulting as elsewhere (never a
    hard-coded cpu); none of the old spellings (--overwrite, --data)."""
    options = {o: a for a in _module(module)._parser()._actions for o in a.option_strings}
    assert {"-q", "--quiet", "-v", "--verbose"} <= set(options), module
    assert "--out" in options or module == "prnas.evaluate.__main__"
    assert "--overwrite" not in options and "--data" not in options
    if "--device" in options:
        assert options["--device"].default in (None, "auto"), module


def test_a_job_started_beside_a_busy_cpu_sleeps_its_idle_threads():
    """Issue 26 item 4: PASSIVE only when another process runs at start; a policy the
    user set is kept; a job on an idle CPU keeps the default (PASSIVE would double it)."""
    from prnas.cli import runnable_now, wait_policy

    env: dict[str, str] = {}
    assert wait_policy(env, runnable=lambda: 1, cores=2) is None and env == {}
    # Others keep fewer than half of 16 cores busy: the default stays.
    assert wait_policy(env, runnable=lambda: 5, cores=16) is None and env == {}
    assert wait_policy(env, runnable=lambda: 2, cores=2) == "PASSIVE"
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    mine = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert wait_policy(mine, runnable=lambda: 3, cores=2) is None
    assert mine["OMP_WAIT_POLICY"] == "ACTIVE"
    assert runnable_now() >= 1


def test_an_entry_point_applies_the_wait_policy_before_torch():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    probe = ("import sys, os; sys.modules['__main__'].__spec__ = type('S', (), {'name': "
             "'prnas.search.__main__'})(); import prnas.cli as c; "
             "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    # A busy CPU: other processes spinning on half the cores while the probe starts.
    busy = max(1, len(os.sched_getaffinity(0)) // 2)
    spins = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                             text=True, check=True).stdout.split()
    finally:
        for s in spins:
            s.kill()
    assert out == ["PASSIVE", "False"]
