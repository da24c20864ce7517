"""The op value type: canonical strings, parsing, hashing, constraint validation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from prnas.space.constraints import PRESETS, Constraints, preset
from prnas.space.ops import INITIAL_POOL, START_OP, Op


@st.composite
def conv_ops(draw: st.DrawFn) -> Op:
    kernel = draw(st.integers(0, 6)) * 2 + 1
    dilation = 1 if kernel == 1 else draw(st.integers(1, 4))
    expansions = draw(st.lists(st.integers(1, 12), max_size=5))
    return Op.conv(kernel, dilation, expansions)


ops = st.one_of(st.sampled_from([Op.skip(), Op.max_pool(), Op.avg_pool()]), conv_ops())


@given(ops)
def test_string_round_trip(op: Op) -> None:
    text = str(op)
    assert Op.parse(text) == op
    assert str(Op.parse(text)) == text


@given(ops, ops)
def test_equality_and_hash_follow_the_string(a: Op, b: Op) -> None:
    assert (a == b) == (str(a) == str(b))
    if a == b:
        assert hash(a) == hash(b)
    assert len({a, b, Op.parse(str(a))}) == (1 if a == b else 2)


def test_known_strings() -> None:
    assert str(START_OP) == "conv_k3_d1"
    assert Op.parse("conv_k5_d2_e3-1-1") == Op.conv(5, 2, (3, 1, 1))
    assert [str(o) for o in INITIAL_POOL] == ["max_pool_3x3", "avg_pool_3x3", "skip", "conv_k3_d1"]


@pytest.mark.parametrize(
    "text",
    [
        "", "conv", "conv_k3", "conv_k4_d1", "conv_k0_d1", "conv_k3_d0", "conv_k1_d2",
        "conv_k03_d1", "conv_k3_d1_e", "conv_k3_d1_e0", "conv_k3_d1_e2-", "conv_k3_d1_e02",
        "CONV_K3_D1", " skip", "skip ", "max_pool_5x5", "none", "conv_k3_d1_e1_e1",
    ],
)
def test_malformed_strings_raise_naming_the_string(text: str) -> None:
    with pytest.raises(ValueError) as info:
        Op.parse(text)
    assert repr(text) in str(info.value)


@given(st.text(max_size=20))
def test_parse_accepts_only_canonical_strings(text: str) -> None:
    try:
        op = Op.parse(text)
    except ValueError as err:
        assert repr(text) in str(err)
    else:
        assert str(op) == text


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "conv", "kernel": 2, "dilation": 1},
        {"kind": "conv", "kernel": 3, "dilation": 0},
        {"kind": "conv", "kernel": 1, "dilation": 2},
        {"kind": "conv", "kernel": 3, "dilation": 1, "expansions": (0,)},
        {"kind": "skip", "kernel": 3},
        {"kind": "sep_conv_3x3"},
    ],
)
def test_invalid_op_values_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Op(**kwargs)


def test_op_properties() -> None:
    op = Op.conv(5, 2, (3, 1))
    assert (op.depth, op.width, op.type_name, op.is_conv, op.is_pool) == (2, 3, "conv", True, False)
    assert Op.avg_pool().type_name == "pool" and Op.max_pool().is_pool
    assert Op.skip().type_name == "skip" and Op.skip().depth == 0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"kernel_min": 5, "kernel_max": 3}, "kernel_min"),
        ({"dilation_min": 3, "dilation_max": 2}, "dilation_min"),
        ({"kernel_min": 2}, "kernel_min"),
        ({"kernel_max": 6}, "kernel_max"),
        ({"kernel_min": 0}, "kernel_min"),
        ({"kernel_min": -1}, "kernel_min"),
        # bounds that exclude the start op conv_k3_d1
        ({"kernel_min": 5}, "kernel_min"),
        ({"kernel_min": 1, "kernel_max": 1}, "kernel_max"),
        ({"dilation_min": 2}, "dilation_min"),
        ({"max_width": 0}, "max_width"),
        ({"max_depth": -1}, "max_depth"),
    ],
)
def test_bad_constraints_are_rejected_naming_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        Constraints(**overrides)
    assert field in str(info.value)
    with pytest.raises(ValidationError):
        preset("DR").with_overrides(**overrides)


def test_constraints_are_frozen_and_reject_unknown_fields() -> None:
    c = preset("dl")
    with pytest.raises(ValidationError):
        c.kernel_min = 1  # type: ignore[misc]
    with pytest.raises(ValidationError, match="kernel_size"):
        Constraints(kernel_size=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="'XX'"):
        preset("XX")


def test_presets_match_table_ii() -> None:
    rows = {name: c.model_dump() for name, c in PRESETS.items()}
    assert rows["DL"] == dict(kernel_min=3, kernel_max=7, dilation_min=1, dilation_max=2,
                              max_depth=1, max_width=1)
    assert rows["DR"] == {**rows["DL"], "kernel_min": 1, "max_width": 5}
    assert rows["UR"] == {**rows["DR"], "max_depth": None, "max_width": None}


def test_admits() -> None:
    dr = preset("DR")
    assert dr.admits(Op.conv(1, 1, (5,)))
    assert not dr.admits(Op.conv(1, 1, (6,)))
    assert not dr.admits(Op.conv(3, 1, (1, 1)))
    assert not dr.admits(Op.conv(9, 1))
    assert not dr.admits(Op.conv(3, 3))
    assert not preset("DL").admits(Op.conv(1, 1))
    assert all(c.admits(o) for c in PRESETS.values() for o in INITIAL_POOL)
    # dilation bounds do not apply to a 1x1 kernel
    assert Constraints(kernel_min=1, dilation_min=1, dilation_max=1).admits(Op.conv(1, 1))
