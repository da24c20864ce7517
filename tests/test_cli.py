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


def test_old_flags_keep_working_with_a_note(capsys):
    p = cli.argparse.ArgumentParser()
    cli.add_verbosity(p)
    cli.deprecated(p, "--log-epochs", dest="verbosity", value=2, new="--verbose")
    assert p.parse_args(["--log-epochs"]).verbosity == 2
    assert "--log-epochs is deprecated; use --verbose" in capsys.readouterr().err
    assert cli.legacy_verbose(["--verbose", "0", "--name", "x"]) == ["--quiet", "--name", "x"]
    assert cli.legacy_verbose(["--verbose", "2"]) == ["--verbose"]
    assert cli.legacy_verbose(["--verbose", "1"]) == []
    assert cli.legacy_verbose(["-v", "--name", "1"]) == ["-v", "--name", "1"]
    assert "deprecated" in capsys.readouterr().err


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
    import importlib
    import importlib.util

    if module.endswith(".py"):
        path = ROOT / module
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    else:
        mod = importlib.import_module(module)
    options = {o: a for a in mod._parser()._actions for o in a.option_strings}
    assert {"-q", "--quiet", "-v", "--verbose"} <= set(options), module
    assert "--out" in options or module == "prnas.evaluate.__main__"
    assert "--overwrite" not in options and "--data" not in options
    if "--device" in options:
        assert options["--device"].default in (None, "auto"), module
