"""The search searches: on data built to need known ops, it finds them far above chance.

``benchmarks/planted.py`` (its docstring has the design) at a small size: two seeds of
the planted search through the normal engine, and the same two with the alphas frozen at
their initialisation, where every decision is noise. The check must tell them apart:
if a change stops the alphas from learning (a broken alpha step, a decision that no
longer reads the alphas), the first test fails; the second shows it can.
"""

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import planted  # noqa: E402

SEEDS = ["--seeds", "2", "--chance-draws", "200"]


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    return planted.make_task(tmp_path_factory.mktemp("planted") / "task")


def _summary(task: Path, *extra: str) -> dict:
    rows = planted.main([*SEEDS, "--data", str(task), *extra])
    return rows[-1]


def test_chance_is_the_policy_on_random_alphas():
    """Normal edges: the two planted convs among six candidates after one morph round;
    reduction edges: max pool must survive the first prune (2 of 3 non-convs) and then
    win among six."""
    cfg = planted.search_config(Path("unused"), 0)
    level = planted.chance(cfg, draws=600)
    assert level["chance_normal"] == pytest.approx(2 / 6, abs=0.06)
    assert level["chance_reduce"] == pytest.approx(2 / 3 / 6, abs=0.04)


@pytest.mark.slow
def test_planted_ops_are_recovered_far_above_chance(task):
    s = _summary(task)
    assert s["recovered"] >= 0.5, s
    assert s["recovered"] >= 2 * s["chance"], s
    assert s["recovered_normal"] > s["chance_normal"], s
    assert s["seeds_above_chance"] == 2, s


@pytest.mark.slow
def test_frozen_alphas_fall_to_chance(task):
    """The control: the same searches whose alphas never move recover no more than chance
    would, so the test above cannot pass on noise. Frozen alphas make every decision a
    function of their initial values alone, whatever the weights learn, so two training
    steps an epoch show the same cells as the full run (0.25 either way) in a tenth of
    the time."""
    s = _summary(task, "--control", "frozen", "--steps", "2")
    assert s["recovered"] < 0.5, s
    assert s["recovered"] < 2 * s["chance"], s


@pytest.mark.parametrize("argv,needle", [
    (["--seeds", "0"], "--seeds"), (["--steps", "0"], "steps_per_epoch"),
    (["--grace", "6"], "grace_epochs"), (["--per-class", "0"], "--per-class")])
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, capsys, argv, needle):
    with pytest.raises(SystemExit) as stop:
        planted.main([*argv, "--data", str(tmp_path / "task")])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert needle in err[0] and not (tmp_path / "task").exists()


def test_data_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    with pytest.raises(SystemExit) as stop:
        planted.main(["--data", str(tmp_path / "f")])
    assert stop.value.code == 2 and "is a file" in capsys.readouterr().err
