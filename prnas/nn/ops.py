"""One torch module per op value, in a search or an evaluation flavour.

The conv is built as a flat chain of *single* separable blocks so that every
morphism maps onto whole blocks or whole channels of a block, which is what
keeps the weight transfer in ``prnas.nn.transfer`` simple and exact.
"""

from __future__ import annotations

import torch
from torch import nn

from prnas.nn.depthwise import depthwise
from prnas.space.ops import Op


class SepBlock(nn.Module):
    """ReLU -> depthwise kxk (dilated, 'same' padding) -> pointwise 1x1 -> BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dilation: int, stride: int,
                 affine: bool) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.depthwise = nn.Conv2d(c_in, c_in, kernel, stride=stride,
                                   padding=dilation * (kernel - 1) // 2, dilation=dilation,
                                   groups=c_in, bias=False)
        self.pointwise = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor, relu_done: bool = False, fast: bool = False
                ) -> torch.Tensor:
        """``relu_done``: ``x`` is already rectified (the edge shares one ReLU of its input).
        ``fast``: on the CPU, the depthwise conv through its fastest exact equivalent
        (``prnas.nn.depthwise``)."""
        x = x if relu_done else self.relu(x)
        dw = self.depthwise
        x = depthwise(x, dw.weight, dw.stride[0], dw.dilation[0]) if fast else dw(x)
        return self.bn(self.pointwise(x))


class ConvOp(nn.Module):
    """``len(expansions) + 1`` SepBlocks; block i outputs C*expansions[i], the last C."""

    def __init__(self, op: Op, channels: int, stride: int, affine: bool) -> None:
        super().__init__()
        widths = [channels * m for m in op.expansions] + [channels]
        c_in = channels
        blocks = []
        for i, c_out in enumerate(widths):
            blocks.append(SepBlock(c_in, c_out, op.kernel, op.dilation,
                                   stride if i == 0 else 1, affine))
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor, relu_done: bool = False, fast: bool = False
                ) -> torch.Tensor:
        """``fast`` (the search's fast path): rectify inner blocks' inputs in place (they are
        BN outputs that nothing else reads, and BN's backward does not need its output), and
        let each block pick its fastest equivalent kernel."""
        x = self.blocks[0](x, relu_done, fast)
        for block in self.blocks[1:]:
            x = block(torch.relu_(x), relu_done=True, fast=True) if fast else block(x)
        return x


class FactorizedReduce(nn.Module):
    """Halves the resolution without losing a pixel row: two offset strided 1x1 convs."""

    def __init__(self, c_in: int, c_out: int, affine: bool) -> None:
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even channel count, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor, relu_done: bool = False, fast: bool = False
                ) -> torch.Tensor:
        if not relu_done:
            x = self.relu(x)
        # Pad so odd spatial sizes keep both branches the same shape.
        shifted = nn.functional.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class ReLUConvBN(nn.Module):
    """Cell-input preprocessing when the previous cell did not reduce."""

    def __init__(self, c_in: int, c_out: int, affine: bool) -> None:
        super().__init__()
        self.op = nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(c_in, c_out, 1, bias=False),
                                nn.BatchNorm2d(c_out, affine=affine))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def build_op(op: Op, channels: int, stride: int, search: bool = True) -> nn.Module:
    """The module for ``op``: ``search`` uses BN affine=False and a BN after pools, as DARTS."""
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride}")
    affine = not search
    if op.kind == "skip":
        return nn.Identity() if stride == 1 else FactorizedReduce(channels, channels, affine)
    if op.is_pool:
        pool: nn.Module
        if op.kind == "max_pool_3x3":
            pool = nn.MaxPool2d(3, stride=stride, padding=1)
        else:
            pool = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
        return nn.Sequential(pool, nn.BatchNorm2d(channels, affine=False)) if search else pool
    return ConvOp(op, channels, stride, affine)
