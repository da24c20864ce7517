"""Weight transfer per morphism, for every op reachable in DR and UR within 5 steps.

Modules run in float64 so "preserved" can be checked far below any float32
rounding: kernel +2 and widen must give the parent's output, insert must give
relu(parent's output) in eval mode, and the lossy moves must copy exactly the
weights the design says they keep.
"""

from __future__ import annotations

import copy
import zlib
from collections import defaultdict

import pytest
import torch
from torch import nn

from prnas.nn.ops import build_op
from prnas.nn.transfer import transfer_weights
from prnas.space.constraints import preset
from prnas.space.counting import reachable
from prnas.space.morphisms import Morphism, apply_morphism, available_morphisms
from prnas.space.ops import START_OP, Op

C = 4
TOL = 1e-9


def _pairs() -> dict[Morphism, list[tuple[Op, Op]]]:
    found = set()
    for name in ("DR", "UR"):
        c = preset(name)
        for text in reachable(c, 5):
            parent = Op.parse(text)
            found.update((parent, m, child) for m, child in available_morphisms(parent, c))
    grouped: dict[Morphism, list[tuple[Op, Op]]] = defaultdict(list)
    for parent, m, child in sorted(found, key=str):
        grouped[m].append((parent, child))
    return grouped


PAIRS = _pairs()


def _bns(module: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def _randomise(module: nn.Module, gen: torch.Generator) -> None:
    """Weights and BN statistics far from their defaults, so a missed copy shows."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
        for bn in _bns(module):
            n = bn.num_features
            bn.running_mean.copy_(torch.randn(n, generator=gen, dtype=bn.running_mean.dtype))
            bn.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=gen,
                                                        dtype=bn.running_var.dtype))
            bn.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=gen)))
            if bn.affine:
                bn.weight.copy_(1 + 0.5 * torch.randn(n, generator=gen, dtype=bn.weight.dtype))


def _make(parent: Op, child: Op, morphism: Morphism, stride: int, search: bool,
          gen: torch.Generator) -> tuple[nn.Module, nn.Module]:
    p_mod = build_op(parent, C, stride, search=search).double()
    c_mod = build_op(child, C, stride, search=search).double()
    _randomise(p_mod, gen)
    _randomise(c_mod, gen)  # the child's own init must not leak through where it matters
    before = copy.deepcopy(p_mod.state_dict())
    transfer_weights(parent, p_mod, child, c_mod, morphism)
    after = p_mod.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "parent was modified"
    return p_mod, c_mod


def _out(module: nn.Module, x: torch.Tensor, train: bool = False) -> torch.Tensor:
    module.train(train)
    with torch.no_grad():
        return module(x)


def _assert_bn_carried(src: nn.BatchNorm2d, dst: nn.BatchNorm2d) -> None:
    n = src.num_features
    assert torch.equal(dst.running_mean[:n], src.running_mean)
    assert torch.equal(dst.running_var[:n], src.running_var)
    assert torch.equal(dst.num_batches_tracked, src.num_batches_tracked)
    if src.affine:
        assert torch.equal(dst.weight[:n], src.weight)
        assert torch.equal(dst.bias[:n], src.bias)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


FLAVOURS = pytest.mark.parametrize("search", [True, False], ids=["search", "eval"])
STRIDES = pytest.mark.parametrize("stride", [1, 2])


def _cases(morphism: Morphism, stride: int, search: bool):
    gen = torch.Generator().manual_seed(zlib.crc32(f"{morphism}-{stride}-{search}".encode()))
    x = torch.randn(3, C, 8, 8, generator=gen, dtype=torch.float64)
    assert PAIRS[morphism], f"no {morphism} pair to test"
    for parent, child in PAIRS[morphism]:
        p_mod, c_mod = _make(parent, child, morphism, stride, search, gen)
        yield parent, child, p_mod, c_mod, x


@pytest.mark.parametrize("morphism", [Morphism.KERNEL_UP, Morphism.WIDEN], ids=str)
@FLAVOURS
@STRIDES
def test_preserving_morphisms_keep_the_function(morphism: Morphism, stride: int,
                                                search: bool) -> None:
    for parent, child, p_mod, c_mod, x in _cases(morphism, stride, search):
        expected = _out(p_mod, x)
        assert _out(c_mod, x).shape == (3, C, 8 // stride, 8 // stride)
        assert _max_diff(_out(c_mod, x), expected) <= TOL, f"{parent} -> {child}"
        # No BN statistic of the output depends on the change, so batch-stat mode agrees too.
        assert _max_diff(_out(c_mod, x, train=True), _out(p_mod, x, train=True)) <= TOL


@FLAVOURS
@STRIDES
def test_kernel_up_zero_pads_in_the_centre(stride: int, search: bool) -> None:
    for _, _, p_mod, c_mod, _ in _cases(Morphism.KERNEL_UP, stride, search):
        for pb, cb in zip(p_mod.blocks, c_mod.blocks, strict=True):
            pw, cw = pb.depthwise.weight, cb.depthwise.weight
            k = pw.shape[-1]
            assert torch.equal(cw[..., 1:-1, 1:-1], pw)
            ring = cw.clone()
            ring[..., 1:k + 1, 1:k + 1] = 0
            assert not ring.any()
            assert torch.equal(cb.pointwise.weight, pb.pointwise.weight)
            _assert_bn_carried(pb.bn, cb.bn)


@FLAVOURS
@STRIDES
def test_widen_adds_channels_the_next_block_does_not_read(stride: int, search: bool) -> None:
    for parent, child, p_mod, c_mod, _ in _cases(Morphism.WIDEN, stride, search):
        grown = next(i for i, (a, b) in enumerate(zip(parent.expansions, child.expansions))
                     if a != b)
        old = C * parent.expansions[grown]
        assert c_mod.blocks[grown].pointwise.out_channels == old + C
        for pb, cb in zip(p_mod.blocks, c_mod.blocks, strict=True):
            _assert_bn_carried(pb.bn, cb.bn)
            rows, cols = pb.pointwise.weight.shape[:2]
            assert torch.equal(cb.pointwise.weight[:rows, :cols], pb.pointwise.weight)
            n = pb.depthwise.weight.shape[0]
            assert torch.equal(cb.depthwise.weight[:n], pb.depthwise.weight)
        assert not c_mod.blocks[grown + 1].pointwise.weight[:, old:].any()
        bn = c_mod.blocks[grown].bn
        assert not bn.running_mean[old:].any()
        assert torch.equal(bn.running_var[old:], torch.ones_like(bn.running_var[old:]))
        if bn.affine:
            assert torch.equal(bn.weight[old:], torch.ones_like(bn.weight[old:]))
            assert not bn.bias[old:].any()


@FLAVOURS
@STRIDES
def test_insert_appends_an_identity_on_non_negative_inputs(stride: int, search: bool) -> None:
    """Eval mode: child(x) == relu(parent(x)), since the new block starts with a ReLU."""
    for parent, child, p_mod, c_mod, x in _cases(Morphism.INSERT, stride, search):
        assert len(c_mod.blocks) == len(p_mod.blocks) + 1
        expected = torch.relu(_out(p_mod, x))
        assert _max_diff(_out(c_mod, x), expected) <= TOL, f"{parent} -> {child}"
        for pb, cb in zip(p_mod.blocks, c_mod.blocks[:-1]):
            for name, value in pb.state_dict().items():
                assert torch.equal(cb.state_dict()[name], value), name


@FLAVOURS
@STRIDES
def test_kernel_down_keeps_the_centre(stride: int, search: bool) -> None:
    for parent, child, p_mod, c_mod, x in _cases(Morphism.KERNEL_DOWN, stride, search):
        assert child.kernel == parent.kernel - 2
        for pb, cb in zip(p_mod.blocks, c_mod.blocks, strict=True):
            assert torch.equal(cb.depthwise.weight, pb.depthwise.weight[..., 1:-1, 1:-1])
            assert torch.equal(cb.pointwise.weight, pb.pointwise.weight)
            _assert_bn_carried(pb.bn, cb.bn)
        assert _out(c_mod, x).shape == (3, C, 8 // stride, 8 // stride)


@pytest.mark.parametrize("morphism", [Morphism.DILATION_UP, Morphism.DILATION_DOWN], ids=str)
@FLAVOURS
@STRIDES
def test_dilation_moves_copy_every_weight(morphism: Morphism, stride: int, search: bool) -> None:
    for _, _, p_mod, c_mod, x in _cases(morphism, stride, search):
        p_state, c_state = p_mod.state_dict(), c_mod.state_dict()
        assert p_state.keys() == c_state.keys()
        for name, value in p_state.items():
            assert torch.equal(c_state[name], value), name
        assert _out(c_mod, x).shape == (3, C, 8 // stride, 8 // stride)


def test_kernel_down_keeps_the_dilation_and_is_not_offered_on_a_dilated_3x3() -> None:
    """As the reference: no 1x1 is made of a dilated kernel; a dilated 5x5 shrinks to a
    dilated 3x3 whose taps are the centre of the old ones."""
    with pytest.raises(ValueError, match="kernel_down"):
        apply_morphism(Op.conv(3, 2, (2,)), Morphism.KERNEL_DOWN)
    parent = Op.conv(5, 2, (2,))
    child = apply_morphism(parent, Morphism.KERNEL_DOWN)
    assert child == Op.conv(3, 2, (2,))
    p_mod, c_mod = build_op(parent, C, 1), build_op(child, C, 1)
    transfer_weights(parent, p_mod, child, c_mod, "kernel_down")
    for pb, cb in zip(p_mod.blocks, c_mod.blocks, strict=True):
        assert cb.depthwise.dilation == (2, 2)
        assert torch.equal(cb.depthwise.weight, pb.depthwise.weight[..., 1:-1, 1:-1])


def test_transfer_in_float32_preserves_within_1e_5() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, C, 8, 8, generator=gen)
    for parent, m in [(Op.conv(3, 2, (2, 1)), Morphism.WIDEN), (START_OP, Morphism.KERNEL_UP),
                      (Op.conv(5, 1, (1,)), Morphism.INSERT)]:
        child = apply_morphism(parent, m)
        p_mod, c_mod = build_op(parent, C, 2, search=False), build_op(child, C, 2, search=False)
        _randomise(p_mod, gen)
        transfer_weights(parent, p_mod, child, c_mod, m)
        expected = _out(p_mod, x)
        if m is Morphism.INSERT:
            expected = torch.relu(expected)
        assert _max_diff(_out(c_mod, x), expected) <= 1e-5


def _modules(parent: Op, child: Op, stride: int = 1, channels: int = C):
    return build_op(parent, C, 1), build_op(child, channels, stride)


@pytest.mark.parametrize(
    ("parent", "child", "morphism", "needle"),
    [
        (START_OP, Op.conv(5, 1), Morphism.DILATION_UP, "conv_k5_d1"),  # wrong morphism
        (START_OP, Op.conv(7, 1), Morphism.KERNEL_UP, "conv_k7_d1"),  # two steps
        (START_OP, Op.conv(3, 1, (2,)), Morphism.WIDEN, "widen"),  # not applicable
        (Op.conv(3, 1, (1,)), START_OP, Morphism.INSERT, "conv_k3_d1"),  # backwards
        (Op.skip(), Op.conv(3, 1), Morphism.KERNEL_UP, "skip"),
        (Op.max_pool(), Op.avg_pool(), Morphism.DILATION_UP, "max_pool_3x3"),
    ],
)
def test_a_morphism_that_does_not_make_the_child_is_refused(parent: Op, child: Op,
                                                            morphism: Morphism,
                                                            needle: str) -> None:
    p_mod = build_op(parent, C, 1)
    c_mod = build_op(child, C, 1)
    with pytest.raises(ValueError, match=needle):
        transfer_weights(parent, p_mod, child, c_mod, morphism)


def test_mismatched_modules_are_refused() -> None:
    parent, child = START_OP, Op.conv(5, 1)
    p_mod = build_op(parent, C, 1)
    with pytest.raises(ValueError, match="channels"):
        transfer_weights(parent, p_mod, child, build_op(child, 2 * C, 1), "kernel_up")
    with pytest.raises(ValueError, match="stride"):
        transfer_weights(parent, p_mod, child, build_op(child, C, 2), "kernel_up")
    with pytest.raises(ValueError, match="does not match"):
        transfer_weights(parent, p_mod, child, build_op(Op.conv(5, 2), C, 1), "kernel_up")
    with pytest.raises(ValueError, match="ConvOp"):
        transfer_weights(parent, nn.Identity(), child, build_op(child, C, 1), "kernel_up")
    with pytest.raises(ValueError):
        transfer_weights(parent, p_mod, child, build_op(child, C, 1), "grow")
