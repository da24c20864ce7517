"""Which morphisms a conv has, and what children they make, under constraints."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prnas.space.constraints import PRESETS, Constraints, preset
from prnas.space.counting import reachable
from prnas.space.morphisms import Morphism, apply_morphism, available_morphisms, widen
from prnas.space.ops import START_OP, Op

constraints_st = st.one_of(
    st.sampled_from(list(PRESETS.values())),
    st.builds(
        lambda kmin, kmax, dmax, depth, width: Constraints(
            kernel_min=kmin, kernel_max=kmax, dilation_min=1, dilation_max=dmax,
            max_depth=depth, max_width=width,
        ),
        st.sampled_from([1, 3]),
        st.sampled_from([3, 5, 7, 9]),
        st.integers(1, 4),
        st.none() | st.integers(0, 4),
        st.none() | st.integers(1, 5),
    ),
)


def _non_increasing(xs: tuple[int, ...]) -> bool:
    return all(a >= b for a, b in zip(xs, xs[1:]))


@st.composite
def admitted_convs(draw: st.DrawFn, c: Constraints) -> Op:
    kernel = draw(st.sampled_from(range(c.kernel_min, c.kernel_max + 1, 2)))
    dilation = 1 if kernel == 1 else draw(st.integers(c.dilation_min, c.dilation_max))
    depth = draw(st.integers(0, 4 if c.max_depth is None else c.max_depth))
    width = 6 if c.max_width is None else c.max_width
    exps = sorted(draw(st.lists(st.integers(1, width), min_size=depth, max_size=depth)),
                  reverse=True)
    return Op.conv(kernel, dilation, exps)


@given(st.data(), constraints_st)
def test_every_available_child_is_admitted_and_valid(data: st.DataObject, c: Constraints) -> None:
    op = data.draw(admitted_convs(c))
    moves = available_morphisms(op, c)
    assert len({m for m, _ in moves}) == len(moves)
    for m, child in moves:
        assert c.admits(child)
        assert child != op
        assert not (child.kernel == 1 and child.dilation > 1)
        assert apply_morphism(op, m) == child
        assert _non_increasing(child.expansions)


@given(st.data(), constraints_st)
def test_unavailable_morphisms_are_those_leaving_the_constraints(
    data: st.DataObject, c: Constraints
) -> None:
    op = data.draw(admitted_convs(c))
    available = dict(available_morphisms(op, c))
    for m in Morphism:
        try:
            child = apply_morphism(op, m)
        except ValueError:
            assert m not in available
            continue
        assert (m in available) == c.admits(child)


@pytest.mark.parametrize("op", [Op.skip(), Op.max_pool(), Op.avg_pool()])
def test_pools_and_skip_have_no_morphisms(op: Op) -> None:
    for c in PRESETS.values():
        assert available_morphisms(op, c) == []
    for m in Morphism:
        with pytest.raises(ValueError, match=str(op)):
            apply_morphism(op, m)


def test_each_morphism_on_examples() -> None:
    op = Op.conv(3, 2, (2, 1))
    assert apply_morphism(op, Morphism.KERNEL_UP) == Op.conv(5, 2, (2, 1))
    with pytest.raises(ValueError, match="kernel_down"):
        apply_morphism(op, "kernel_down")  # the reference never makes a 1x1 of a dilated 3x3
    assert apply_morphism(Op.conv(5, 2), "kernel_down") == Op.conv(3, 2)
    assert apply_morphism(op, Morphism.DILATION_UP) == Op.conv(3, 3, (2, 1))
    assert apply_morphism(op, Morphism.DILATION_DOWN) == Op.conv(3, 1, (2, 1))
    assert apply_morphism(op, Morphism.INSERT) == Op.conv(3, 2, (2, 1, 1))
    assert apply_morphism(op, Morphism.WIDEN) == Op.conv(3, 2, (2, 2))
    with pytest.raises(ValueError):
        apply_morphism(START_OP, Morphism.WIDEN)  # nothing to widen
    with pytest.raises(ValueError):
        apply_morphism(START_OP, Morphism.DILATION_DOWN)
    with pytest.raises(ValueError):
        apply_morphism(Op.conv(1, 1), Morphism.DILATION_UP)  # a 1x1 ignores dilation
    with pytest.raises(ValueError):
        apply_morphism(START_OP, "grow")


# The reference implementation's morph restrictions per preset (its operations.py):
# smallest and largest kernel, largest dilation, most expansion blocks, largest sum of the
# expansion factors, largest single factor.
_REFERENCE_LIMITS = {
    "DL": (3, 7, 2, 1, 1, 1),
    "DR": (1, 7, 2, 1, 5, 5),
    "UR": (1, 7, 2, 999, 999, 999),
}


def _reference_moves(op: Op, limits: tuple[int, ...]) -> set[tuple[str, str]]:
    """The reference's rule of which morphisms are possible, written out case by case."""
    min_k, max_k, max_dil, max_len, max_sum, max_width = limits
    k, d, e = op.kernel, op.dilation, list(op.expansions)
    out = set()
    if k + 2 <= max_k:
        out.add(("kernel_up", Op.conv(k + 2, d, e)))
    if k - 2 >= min_k and not (k - 2 == 1 and d >= 2):
        out.add(("kernel_down", Op.conv(k - 2, d, e)))
    if k != 1 and d < max_dil:
        out.add(("dilation_up", Op.conv(k, d + 1, e)))
    if d > 1 and not (k == 1 and d == 2):
        out.add(("dilation_down", Op.conv(k, d - 1, e)))
    if len(e) < max_len and sum(e) < max_sum:
        out.add(("insert", Op.conv(k, d, e + [1])))
    if e:
        i = e.index(min(e))
        if e[i] < max_width and sum(e) < max_sum:
            out.add(("widen", Op.conv(k, d, e[:i] + [e[i] + 1] + e[i + 1:])))
    return {(m, str(child)) for m, child in out}


@pytest.mark.parametrize("name", sorted(_REFERENCE_LIMITS))
def test_available_moves_are_the_reference_rule_on_every_reachable_op(name: str) -> None:
    """Issue 12: the same morphisms on offer as in the reference, for every op the search can
    reach (within 7 morphisms; UR is unbounded) of each preset."""
    c = preset(name)
    ops = [Op.parse(s) for s in reachable(c, 7)]
    assert len(ops) >= 12
    offered_any_k1_from_dilated = False
    for op in ops:
        ours = {(str(m), str(child)) for m, child in available_morphisms(op, c)}
        assert ours == _reference_moves(op, _REFERENCE_LIMITS[name]), str(op)
        offered_any_k1_from_dilated |= any(
            child.startswith("conv_k1") and op.dilation > 1 for _, child in ours)
    assert not offered_any_k1_from_dilated
    if name != "DL":  # the case that differed before: conv_k3_d2 offers no kernel -2
        assert "kernel_down" not in {str(m) for m, _ in available_morphisms(Op.conv(3, 2), c)}


def test_start_op_availability_per_preset() -> None:
    names = {n: {str(m) for m, _ in available_morphisms(START_OP, c)} for n, c in PRESETS.items()}
    assert names["DL"] == {"kernel_up", "dilation_up", "insert"}
    assert names["DR"] == names["UR"] == {"kernel_up", "kernel_down", "dilation_up", "insert"}
    # DR's depth limit stops a second insert; DL's width limit stops any widen.
    assert Morphism.INSERT not in dict(available_morphisms(Op.conv(3, 1, (1,)), preset("DR")))
    assert Morphism.WIDEN not in dict(available_morphisms(Op.conv(3, 1, (1,)), preset("DL")))


@given(st.lists(st.integers(1, 9), min_size=1, max_size=6))
def test_widen_grows_the_leading_smallest_factor(exps: list[int]) -> None:
    before = tuple(exps)
    after = widen(before)
    changed = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
    assert len(changed) == 1
    i = changed[0]
    assert after[i] == before[i] + 1
    assert before[i] == min(before)
    assert all(x > before[i] for x in before[:i])
    if _non_increasing(before):
        assert _non_increasing(after)


@given(st.lists(st.integers(1, 5), max_size=5).map(lambda xs: tuple(sorted(xs, reverse=True))))
def test_insert_appends_a_factor_of_one(exps: tuple[int, ...]) -> None:
    child = apply_morphism(Op.conv(5, 1, exps), Morphism.INSERT)
    assert child.expansions == exps + (1,)


@given(st.lists(st.sampled_from(list(Morphism)), max_size=25), constraints_st)
def test_random_walks_stay_admitted_and_non_increasing(walk: list[Morphism],
                                                       c: Constraints) -> None:
    op = START_OP
    for wanted in walk:
        moves = dict(available_morphisms(op, c))
        if wanted in moves:
            op = moves[wanted]
        assert c.admits(op)
        assert _non_increasing(op.expansions)


@pytest.mark.parametrize("paper", [False, True])
def test_reachable_expansion_lists_are_exactly_the_non_increasing_ones(paper: bool) -> None:
    steps = 6
    seen = set()
    for text in reachable(preset("UR"), steps, paper_counting=paper):
        if paper and "_k1_d2" in text:
            continue  # not a valid Op value: counted only in the paper's way
        exps = Op.parse(text).expansions
        assert _non_increasing(exps)
        seen.add(exps)
    # every non-increasing list with sum(e) <= steps is reachable (insert + widens)
    def lists(budget: int, cap: int) -> list[tuple[int, ...]]:
        out: list[tuple[int, ...]] = [()]
        for first in range(1, min(budget, cap) + 1):
            out += [(first, *rest) for rest in lists(budget - first, first)]
        return out

    assert seen == set(lists(steps, steps))
