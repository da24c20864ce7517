"""build_op: every reachable op builds, runs and has the documented structure."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prnas.nn.ops import ConvOp, FactorizedReduce, SepBlock, build_op
from prnas.space.constraints import preset
from prnas.space.counting import reachable
from prnas.space.ops import Op

C = 4


REACHABLE = sorted({s for name in ("DR", "UR") for s in reachable(preset(name), 5)})
ALL_OPS = [Op.skip(), Op.max_pool(), Op.avg_pool(), *map(Op.parse, REACHABLE)]


def _bns(module: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


@pytest.mark.parametrize("search", [True, False], ids=["search", "eval"])
@pytest.mark.parametrize("stride", [1, 2])
def test_every_op_builds_and_keeps_the_shape(stride: int, search: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, C, 8, 8)
    assert set(reachable(preset("DR"), 5)) < set(REACHABLE) == set(reachable(preset("UR"), 5))
    for op in ALL_OPS:
        module = build_op(op, C, stride, search=search)
        for mode in (module.train, module.eval):
            mode()
            with torch.no_grad():
                y = module(x)
            assert y.shape == (2, C, 8 // stride, 8 // stride), str(op)
            assert torch.isfinite(y).all(), str(op)


@pytest.mark.parametrize("search", [True, False], ids=["search", "eval"])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv_structure(stride: int, search: bool) -> None:
    for op in ALL_OPS:
        if not op.is_conv:
            continue
        module = build_op(op, C, stride, search=search)
        assert isinstance(module, ConvOp)
        blocks = list(module.blocks)
        assert len(blocks) == op.depth + 1
        assert all(isinstance(b, SepBlock) for b in blocks)
        widths = [C * m for m in op.expansions] + [C]
        c_in = C
        for i, (block, c_out) in enumerate(zip(blocks, widths)):
            dw, pw = block.depthwise, block.pointwise
            assert (dw.in_channels, dw.out_channels, dw.groups) == (c_in, c_in, c_in)
            assert dw.kernel_size == (op.kernel, op.kernel)
            assert dw.dilation == (op.dilation, op.dilation)
            assert dw.stride == ((stride, stride) if i == 0 else (1, 1))
            assert (pw.in_channels, pw.out_channels, pw.kernel_size) == (c_in, c_out, (1, 1))
            assert dw.bias is None and pw.bias is None
            assert block.bn.num_features == c_out
            assert block.bn.affine is not search
            c_in = c_out


def test_named_darts_ops() -> None:
    sep = build_op(Op.conv(3, 1, (1,)), C, 1)  # DARTS sep_conv_3x3: two single blocks
    assert [b.pointwise.out_channels for b in sep.blocks] == [C, C]
    dil = build_op(Op.conv(3, 2), C, 1)  # DARTS dil_conv_3x3: one dilated block
    assert len(dil.blocks) == 1 and dil.blocks[0].depthwise.padding == (2, 2)


@pytest.mark.parametrize("stride", [1, 2])
def test_skip_and_pools(stride: int) -> None:
    skip = build_op(Op.skip(), C, stride)
    if stride == 1:
        assert isinstance(skip, nn.Identity)
    else:
        assert isinstance(skip, FactorizedReduce) and skip.bn.affine is False
        assert build_op(Op.skip(), C, stride, search=False).bn.affine is True
    for op, kind in [(Op.max_pool(), nn.MaxPool2d), (Op.avg_pool(), nn.AvgPool2d)]:
        searched = build_op(op, C, stride, search=True)
        assert isinstance(searched, nn.Sequential)
        assert isinstance(searched[0], kind) and isinstance(searched[1], nn.BatchNorm2d)
        assert searched[1].affine is False and searched[1].num_features == C
        evaluated = build_op(op, C, stride, search=False)
        assert isinstance(evaluated, kind)
        assert _bns(evaluated) == []


def test_avg_pool_excludes_padding() -> None:
    pool = build_op(Op.avg_pool(), C, 1, search=False)
    y = pool(torch.ones(1, C, 4, 4))
    assert torch.equal(y, torch.ones_like(y))


def test_skip_is_identity_at_stride_one() -> None:
    x = torch.randn(1, C, 4, 4)
    assert torch.equal(build_op(Op.skip(), C, 1)(x), x)


def test_bad_stride_and_odd_reduce() -> None:
    with pytest.raises(ValueError, match="stride"):
        build_op(Op.skip(), C, 3)
    with pytest.raises(ValueError, match="even"):
        build_op(Op.skip(), 3, 2)
