"""The random-cell sampler draws every cell a search can produce with equal probability.

The distribution checks use chi-square goodness-of-fit tests on large samples
with fixed seeds (deterministic, so never flaky); the same check is shown to
reject a plausible wrong sampler, so it has the power to fail.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter

import pytest
from scipy.stats import chisquare

from prnas.space import preset, reachable, search_space_size
from prnas.space.genotype import Genotype
from prnas.space.ops import Op
from prnas.space.sampling import (
    SampleSpec,
    input_pairs,
    sample_genotypes,
    sampleable_ops,
)

ALPHA = 1e-3


def morph_rounds_of(morphs_per_cycle: list[int]) -> int:
    """Morph rounds of a schedule: cycles that add morphisms (each deepens a lineage by one)."""
    return sum(1 for m in morphs_per_cycle if m > 0)


def uniform_p(counter: Counter, categories: list) -> float:
    observed = [counter.get(c, 0) for c in categories]
    assert sum(observed) == sum(counter.values()), "a draw fell outside the categories"
    return float(chisquare(observed).pvalue)


def test_ops_are_skip_pools_and_the_functionally_reachable_convs() -> None:
    for space, steps, convs in (("DL", 5, 12), ("DR", 5, 32), ("UR", 5, 73), ("DL", 2, 8)):
        ops = sampleable_ops(preset(space), steps)
        assert len(ops) == convs + 3
        assert ops[:3] == (Op.skip(), Op.max_pool(), Op.avg_pool())
        assert [str(o) for o in ops[3:]] == reachable(preset(space), steps)
    assert morph_rounds_of([3, 3, 3, 3, 3, 0, 0, 0, 0]) == 5
    assert morph_rounds_of([2, 2, 0, 0]) == 2


def test_exhaustive_tiny_space_is_uniform_over_all_cells() -> None:
    """2 nodes, no morphs: 4 ops, C(2,2)*16 * C(3,2)*16 = 768 cells, each about 26 times."""
    spec = SampleSpec("DL", preset("DL"), morph_rounds=0, nodes=2)
    cells = Counter(g.normal for g in sample_genotypes(spec, 20_000, seed=1))
    ops = sampleable_ops(spec.constraints, 0)
    every = [((a, i), (b, j), (c, k), (d, m))
             for i, j in input_pairs(0) for k, m in input_pairs(1)
             for a in ops for b in ops for c in ops for d in ops]
    assert len(every) == search_space_size(len(ops), 2) == 768
    assert set(cells) <= set(every)
    assert len(cells) == 768  # every cell drawn at least once
    assert uniform_p(cells, every) > ALPHA


def test_dl_ops_and_input_pairs_follow_the_intended_frequencies() -> None:
    spec = SampleSpec("DL", preset("DL"))
    genotypes = sample_genotypes(spec, 3000, seed=7)
    ops = list(sampleable_ops(spec.constraints, spec.morph_rounds))
    for cell in ("normal", "reduce"):
        specs = [getattr(g, cell) for g in genotypes]
        op_counts = Counter(op for s in specs for op, _ in s)
        assert uniform_p(op_counts, ops) > ALPHA  # 24000 draws over 15 ops
        assert {(s[0][1], s[1][1]) for s in specs} == {(0, 1)}  # node 0's only choice
        for node in range(1, 4):
            pairs = Counter((s[2 * node][1], s[2 * node + 1][1]) for s in specs)
            assert uniform_p(pairs, input_pairs(node)) > ALPHA
        # The op does not depend on the input it reads: types x input of node 3's first edge.
        joint = Counter((s[6][0].type_name, s[6][1]) for s in specs)
        n = len(specs)
        types = {"skip": 1, "pool": 2, "conv": len(ops) - 3}
        p_first = {0: 4 / 10, 1: 3 / 10, 2: 2 / 10, 3: 1 / 10}  # the smaller input of a pair
        keys = [(t, i) for t in types for i in range(4)]
        expected = [n * types[t] / len(ops) * p_first[i] for t, i in keys]
        assert float(chisquare([joint[k] for k in keys], expected).pvalue) > ALPHA


def test_the_check_passes_an_equivalent_sampler_and_rejects_a_biased_one() -> None:
    """Two inputs drawn one by one (duplicates redrawn) is uniform over pairs too; the
    plausible bug of drawing the second input only after the first is caught."""
    rng = random.Random(7)
    pairs = Counter()
    for _ in range(3000):
        a = rng.randrange(5)
        b = rng.randrange(5)
        while b == a:
            b = rng.randrange(5)
        pairs[(min(a, b), max(a, b))] += 1
    assert uniform_p(pairs, input_pairs(3)) > ALPHA  # symmetric: uniform over pairs after all
    biased = Counter()
    for _ in range(3000):  # the second input only among nodes after the first
        a = rng.randrange(4)
        biased[(a, rng.randrange(a + 1, 5))] += 1
    assert uniform_p(biased, input_pairs(3)) < ALPHA


def test_genotypes_are_valid_seeded_and_prefix_stable() -> None:
    spec = SampleSpec("DR", preset("DR"), morph_rounds=3)
    five = sample_genotypes(spec, 5, seed=3)
    assert sample_genotypes(spec, 2, seed=3) == five[:2]
    assert sample_genotypes(spec, 5, seed=4) != five
    allowed = set(sampleable_ops(spec.constraints, 3))
    for i, g in enumerate(five):
        assert g.name == f"random-DR-s3-{i}"
        assert g.extra["kind"] == "random" and g.extra["morph_rounds"] == 3
        for cell in (g.normal, g.reduce):
            assert {op for op, _ in cell} <= allowed
            inputs = [src for _, src in cell]
            assert all(inputs[2 * n] < inputs[2 * n + 1] < n + 2 for n in range(4))
        back = Genotype.from_dict(json.loads(g.to_json()))
        assert back == g and back.extra["kind"] == "random"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "prnas.space", *args],
                          capture_output=True, text=True, timeout=60)


def test_cli_writes_files_and_never_overwrites(tmp_path) -> None:
    proc = run_cli("sample", "--space", "DL", "--count", "3", "--seed", "2", "--steps", "2",
                   "--out", str(tmp_path / "cells"))
    assert proc.returncode == 0, proc.stderr
    written = json.loads(proc.stdout)["written"]
    expected = sample_genotypes(SampleSpec("DL", preset("DL"), 2), 3, seed=2)
    assert [Genotype.load(p) for p in written] == expected
    again = run_cli("sample", "--space", "DL", "--count", "4", "--seed", "2", "--steps", "2",
                    "--out", str(tmp_path / "cells"))
    assert again.returncode == 2 and again.stderr.startswith("error:")
    assert len(again.stderr.strip().splitlines()) == 1
    assert len(list((tmp_path / "cells").iterdir())) == 3
    lines = run_cli("sample", "--space", "DL", "--count", "2", "--seed", "2", "--steps", "2")
    assert [Genotype.from_dict(json.loads(t)) for t in lines.stdout.splitlines()] == expected[:2]


@pytest.mark.parametrize("flags", [("--count", "0"), ("--count", "2", "--steps", "-1"),
                                   ("--count", "2", "--nodes", "0")])
def test_cli_rejects_bad_numbers(flags: tuple[str, ...], tmp_path) -> None:
    proc = run_cli("sample", "--space", "DL", *flags, "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and proc.stderr.startswith("error:")
    assert not (tmp_path / "x").exists()
