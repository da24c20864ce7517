"""Reachable-set counting (Table II), search-space size, and operation similarity."""

from __future__ import annotations

from itertools import product
from math import comb

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prnas.space.constraints import PRESETS, Constraints, preset
from prnas.space.counting import reachable, search_space_size
from prnas.space.ops import INITIAL_POOL, Op
from prnas.space.similarity import pool_similarity, similarity


def _non_increasing_lists(max_len: int, max_factor: int) -> list[tuple[int, ...]]:
    out: list[tuple[int, ...]] = [()]
    frontier: list[tuple[int, ...]] = [()]
    for _ in range(max_len):
        frontier = [e + (m,) for e in frontier for m in range(1, min(e or (max_factor,)) + 1)]
        out += frontier
    return out


def brute_force(c: Constraints, steps: int, paper_counting: bool) -> set[str]:
    """Every admitted configuration, kept if its analytic morph distance is within ``steps``.

    Kernel, dilation and expansion moves act on separate parts of a config, so
    the distance from conv_k3_d1 is |k-3|/2 + |d-1| + sum(mult): one insert per
    block plus (factor - 1) widens. Functionally a 1x1 exists only at d=1.
    """
    depth = steps if c.max_depth is None else min(c.max_depth, steps)
    width = steps if c.max_width is None else min(c.max_width, steps)
    found = set()
    for k, d, e in product(range(c.kernel_min, c.kernel_max + 1, 2),
                           range(c.dilation_min, c.dilation_max + 1),
                           _non_increasing_lists(depth, width)):
        if k == 1 and d > 1 and not paper_counting:
            continue
        if abs(k - 3) // 2 + abs(d - 1) + sum(e) <= steps:
            found.add(f"conv_k{k}_d{d}" + ("_e" + "-".join(map(str, e)) if e else ""))
    return found


@pytest.mark.parametrize(
    ("name", "paper", "functional"), [("DL", 12, 12), ("DR", 36, 32), ("UR", 80, 73)]
)
def test_table_ii_totals(name: str, paper: int, functional: int) -> None:
    c = preset(name)
    assert len(reachable(c, 5, paper_counting=True)) == paper
    assert len(reachable(c, 5)) == functional


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("paper", [False, True])
@pytest.mark.parametrize("steps", range(0, 8))
def test_reachable_matches_brute_force_on_presets(name: str, paper: bool, steps: int) -> None:
    assert set(reachable(preset(name), steps, paper)) == brute_force(preset(name), steps, paper)


@settings(max_examples=40, deadline=None)
@given(
    kmin=st.sampled_from([1, 3]), kmax=st.sampled_from([3, 5, 9]), dmax=st.integers(1, 3),
    depth=st.none() | st.integers(0, 3), width=st.none() | st.integers(1, 4),
    steps=st.integers(0, 6), paper=st.booleans(),
)
def test_reachable_matches_brute_force(kmin: int, kmax: int, dmax: int, depth: int | None,
                                       width: int | None, steps: int, paper: bool) -> None:
    c = Constraints(kernel_min=kmin, kernel_max=kmax, dilation_max=dmax, max_depth=depth,
                    max_width=width)
    assert set(reachable(c, steps, paper)) == brute_force(c, steps, paper)


def test_reachable_is_sorted_unique_parseable_and_grows_with_steps() -> None:
    ur = preset("UR")
    previous: set[str] = set()
    for steps in range(6):
        ops = reachable(ur, steps)
        assert ops == sorted(set(ops))
        assert all(str(Op.parse(s)) == s for s in ops)
        assert previous <= set(ops)
        previous = set(ops)
    assert reachable(ur, 0) == ["conv_k3_d1"]
    with pytest.raises(ValueError, match="steps"):
        reachable(ur, -1)


def test_paper_counting_adds_only_dilated_1x1_kernels() -> None:
    for c in PRESETS.values():
        extra = set(reachable(c, 5, True)) - set(reachable(c, 5))
        assert all(s.startswith("conv_k1_d2") for s in extra)
        assert set(reachable(c, 5)) <= set(reachable(c, 5, True))


def test_search_space_size() -> None:
    ratio = search_space_size(15) / search_space_size(8)
    assert 140 < ratio < 160  # the paper's "about 150 times" the DARTS space
    for k in (1, 2, 8, 15):
        assert search_space_size(k) == 180 * k**8
        assert search_space_size(k, nodes=4) == search_space_size(k)
    for m in (1, 2, 3, 5):
        expected = 1
        for n in range(2, m + 2):
            expected *= comb(n, 2) * 7**2
        assert search_space_size(7, nodes=m) == expected
    assert isinstance(search_space_size(15), int)
    for bad in ((0, 4), (8, 0)):
        with pytest.raises(ValueError):
            search_space_size(*bad)


def test_similarity_examples() -> None:
    k3, k5 = Op.conv(3, 1), Op.conv(5, 1)
    assert similarity(k3, k3) == 1.0
    assert similarity(Op.skip(), Op.skip()) == 1.0
    assert similarity(Op.max_pool(), Op.max_pool()) == 1.0
    # Pools have two parameters, kernel (equal) and type: (1 + 1) / (1 + 2)
    assert similarity(Op.max_pool(), Op.avg_pool()) == pytest.approx(2 / 3)
    for a, b in [(Op.skip(), Op.max_pool()), (Op.skip(), k3), (Op.avg_pool(), k3)]:
        assert similarity(a, b) == similarity(b, a) == 0.0
    # (1 + k) / (1 + n) with n = 3 (kernel, dilation, expansions)
    assert similarity(k3, k5) == (1 + 2) / 4
    assert similarity(k3, Op.conv(5, 2)) == (1 + 1) / 4
    assert similarity(k3, Op.conv(5, 2, (1,))) == 1 / 4
    assert similarity(k3, Op.conv(3, 1, (1,))) == (1 + 2) / 4
    # Expansions as the reference scores them, m = the shorter length:
    # 1/(m+1) for equal lengths plus 1/(m+1) per equal leading position.
    assert similarity(Op.conv(3, 1, (2, 1)), Op.conv(3, 1, (2,))) == (1 + 2 + 1 / 2) / 4
    assert similarity(Op.conv(3, 1, (2, 1)), Op.conv(3, 1, (2, 2))) == pytest.approx(
        (1 + 2 + 2 / 3) / 4)
    assert similarity(Op.conv(3, 1, (1,)), Op.conv(3, 1, (2,))) == (1 + 2 + 1 / 2) / 4
    assert similarity(Op.conv(3, 1, (3, 1)), Op.conv(3, 1, (1, 1))) == pytest.approx(
        (1 + 2 + 2 / 3) / 4)


ops_st = st.one_of(
    st.sampled_from(INITIAL_POOL),
    st.builds(Op.conv, st.sampled_from([3, 5, 7]), st.integers(1, 3),
              st.lists(st.integers(1, 3), max_size=3)),
)


@given(ops_st, ops_st)
def test_similarity_is_symmetric_bounded_and_one_only_for_equal_ops(a: Op, b: Op) -> None:
    s = similarity(a, b)
    assert s == similarity(b, a)
    assert 0.0 <= s <= 1.0
    assert (s == 1.0) == (a == b)


@given(st.lists(ops_st, min_size=2, max_size=6))
def test_pool_similarity_is_the_mean_over_all_ordered_pairs(ops: list[Op]) -> None:
    n = len(ops)
    distinct = [(a, b) for i, a in enumerate(ops) for b in ops[i + 1:]]
    # Each op with itself scores 1; each distinct pair counts in both orders.
    expected = (n + 2 * sum(similarity(a, b) for a, b in distinct)) / n**2
    assert pool_similarity(ops) == pytest.approx(expected)
    pairwise = sum(similarity(a, b) for a, b in distinct) / len(distinct)
    assert pool_similarity(ops, self_pairs=False) == pytest.approx(pairwise)


def test_pool_similarity_examples() -> None:
    assert pool_similarity([Op.skip()]) == 1.0
    assert pool_similarity([Op.skip()], self_pairs=False) == 1.0
    assert pool_similarity([]) == 1.0
    assert pool_similarity([Op.max_pool(), Op.avg_pool()]) == pytest.approx((2 + 4 / 3) / 4)
    assert pool_similarity([Op.max_pool(), Op.avg_pool(), Op.skip()]) == pytest.approx(13 / 27)
    # The paper's initial pool: 0.333 as in Fig. 2 at cycle 0 (the reference's statistic).
    assert pool_similarity(INITIAL_POOL) == pytest.approx(1 / 3)
    assert round(pool_similarity(INITIAL_POOL), 3) == 0.333
    assert pool_similarity(INITIAL_POOL, self_pairs=False) == pytest.approx(1 / 9)
    assert pool_similarity([Op.max_pool(), Op.avg_pool()], self_pairs=False) == pytest.approx(2 / 3)
