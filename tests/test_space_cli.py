"""``python -m prnas.space``: one JSON object on stdout, one-line errors on stderr."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from prnas.space.constraints import preset
from prnas.space.counting import reachable, search_space_size


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "prnas.space", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("flags", "expected", "paper"),
    [(("--counting", "functional"), 32, False), (("--counting", "paper"), 36, True),
     ((), 36, True)],  # issue 11: the paper's counting is the default, as in `analysis`
)
def test_count_dr(flags: tuple[str, ...], expected: int, paper: bool) -> None:
    proc = run_cli("count", "--preset", "DR", "--steps", "5", "--list", *flags)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["count"] == expected == len(out["ops"])
    assert out["ops"] == reachable(preset("DR"), 5, paper_counting=paper)
    assert out["constraints"] == preset("DR").model_dump()
    assert out["paper_counting"] is paper and proc.stderr == ""


def test_count_without_list_and_with_overrides() -> None:
    proc = run_cli("count", "--preset", "UR", "--steps", "3", "--max-depth", "1",
                   "--counting", "functional")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    c = preset("UR").with_overrides(max_depth=1)
    assert out["count"] == len(reachable(c, 3))
    assert "ops" not in out
    assert out["constraints"]["max_depth"] == 1


def test_size_is_an_exact_int() -> None:
    proc = run_cli("size", "--ops", "15")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["size"] == search_space_size(15)
    assert isinstance(out["size"], int)
    proc = run_cli("size", "--ops", "8", "--nodes", "3")
    assert json.loads(proc.stdout)["size"] == search_space_size(8, 3)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("count", "--preset", "DR", "--kernel-min", "4"), "kernel_min"),
        (("count", "--kernel-min", "0"), "kernel_min"),
        (("count", "--preset", "DL", "--dilation-min", "3"), "dilation_min"),
        (("count", "--preset", "DL", "--kernel-max", "1"), "kernel_max"),
        (("count", "--steps", "-1"), "steps"),
        (("size", "--ops", "0"), "ops"),
    ],
)
def test_bad_values_give_a_one_line_error(args: tuple[str, ...], needle: str) -> None:
    proc = run_cli(*args)
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert needle in lines[0]
