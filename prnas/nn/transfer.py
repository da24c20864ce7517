"""Weight transfer from a parent conv to the child a morphism made of it.

A new candidate starts from its parent's training instead of from scratch;
that is what makes adding candidates mid-search affordable. Because a conv is
a flat chain of single separable blocks (``prnas.nn.ops.ConvOp``), every
morphism touches either every block's depthwise kernel (kernel, dilation),
one whole block (insert) or some channels of two neighbouring blocks (widen),
so each rule below is a few slice copies:

* kernel +2: each depthwise kernel zero-padded in the centre; the extra
  padding of the bigger kernel lines the old taps up with the same pixels, so
  the function is preserved exactly, at any stride and in any BN mode;
* kernel -2: the centre of each kernel is kept (lossy); never offered on a
  dilated 3x3, as in the reference (see ``prnas.space.morphisms``);
* dilation +/-1: all weights copied unchanged (the function changes);
* insert: the parent's blocks map 1:1 (the parent's last block outputs C and
  so does the child's block at that position, whose factor is 1) and the new
  last block is an identity on non-negative inputs in eval mode, so the child
  computes relu(parent(x)) there;
* widen: the widened block gets extra output channels that keep the child's
  own fresh initialisation, with neutral BN statistics; the next block reads
  them through pointwise columns that are zero, so the function is preserved
  exactly in any BN mode.

Running statistics (mean, var, batch counter) and affine parameters of every
kept channel are carried over, so an eval-mode child behaves like its parent
from the first step.
"""

from __future__ import annotations

import torch
from torch import nn

from prnas.nn.ops import ConvOp, SepBlock
from prnas.space.morphisms import Morphism, apply_morphism
from prnas.space.ops import Op


def transfer_weights(parent: Op, parent_module: nn.Module, child: Op, child_module: nn.Module,
                     morphism: Morphism | str, *, reference: bool = False) -> None:
    """Initialise ``child_module`` (in place) from ``parent_module`` through ``morphism``.

    ``reference``: the new parts as the authors' code makes them (``behaviour:
    reference``): widened channels drawn with ``xavier_normal_`` (the widened pointwise
    rows and the next block's depthwise channels) instead of kept at PyTorch's default
    initialisation, and an inserted block's BN running variance 1 instead of 1 - eps.
    The function is preserved either way but for the 1 - eps (about 5e-6, relative).

    Both modules must come from ``build_op`` with the same channels, stride and
    flavour; ValueError if they do not, or if ``morphism`` does not turn
    ``parent`` into ``child``. The parent is only read.
    """
    morphism = Morphism(morphism)
    expected = apply_morphism(parent, morphism)  # ValueError for skip and pools
    if expected != child:
        raise ValueError(
            f"morphism {morphism} turns {parent} into {expected}, not into {child}"
        )
    p_blocks = _blocks(parent, parent_module, "parent")
    c_blocks = _blocks(child, child_module, "child")
    p0, c0 = p_blocks[0], c_blocks[0]
    if p0.depthwise.in_channels != c0.depthwise.in_channels:
        raise ValueError(
            f"parent has {p0.depthwise.in_channels} channels, child "
            f"{c0.depthwise.in_channels}; both must be built with the same channels"
        )
    if p0.depthwise.stride != c0.depthwise.stride:
        raise ValueError(
            f"parent has stride {p0.depthwise.stride}, child {c0.depthwise.stride}; "
            "both must be built with the same stride"
        )
    with torch.no_grad():
        if morphism is Morphism.INSERT:
            for src, dst in zip(p_blocks, c_blocks[:-1], strict=True):
                _copy_block(src, dst)
            _init_identity(c_blocks[-1], exact=not reference)
        elif morphism is Morphism.WIDEN:
            grown = _widened_index(parent.expansions, child.expansions)
            for src, dst in zip(p_blocks, c_blocks, strict=True):
                _copy_block(src, dst)
            # The widened block's new channels: neutral BN statistics, so
            # nothing about them depends on the parent; then the next block
            # must not read them yet.
            new = slice(p_blocks[grown].bn.num_features, None)
            _reset_bn_channels(c_blocks[grown].bn, new)
            c_blocks[grown + 1].pointwise.weight[:, new].zero_()
            if reference:
                for w in (c_blocks[grown].pointwise.weight, c_blocks[grown + 1].depthwise.weight):
                    w[new] = nn.init.xavier_normal_(torch.empty_like(w[new]))
        else:  # kernel and dilation moves keep the block structure
            for src, dst in zip(p_blocks, c_blocks, strict=True):
                _copy_block(src, dst)


def _blocks(op: Op, module: nn.Module, role: str) -> list[SepBlock]:
    """The module's blocks, after checking they are what ``build_op(op, ...)`` makes."""
    if not isinstance(module, ConvOp):
        raise ValueError(f"{role} module for {op} must be a ConvOp, got {type(module).__name__}")
    blocks = list(module.blocks)
    channels = blocks[0].depthwise.in_channels
    widths = [channels * m for m in op.expansions] + [channels]
    actual = [b.pointwise.out_channels for b in blocks]
    kernels = {b.depthwise.kernel_size for b in blocks}
    dilations = {b.depthwise.dilation for b in blocks}
    if (actual != widths or kernels != {(op.kernel, op.kernel)}
            or dilations != {(op.dilation, op.dilation)}):
        raise ValueError(
            f"{role} module does not match {op}: block widths {actual}, kernels {kernels}, "
            f"dilations {dilations}"
        )
    return blocks


def _widened_index(before: tuple[int, ...], after: tuple[int, ...]) -> int:
    return next(i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b)


def _copy_block(src: SepBlock, dst: SepBlock) -> None:
    """Copy every weight the two blocks share: overlapping channels, centre-aligned kernels."""
    _copy_kernel(src.depthwise.weight, dst.depthwise.weight)
    sw, dw = src.pointwise.weight, dst.pointwise.weight
    rows, cols = min(sw.shape[0], dw.shape[0]), min(sw.shape[1], dw.shape[1])
    dw[:rows, :cols].copy_(sw[:rows, :cols])
    _copy_bn(src.bn, dst.bn)


def _copy_kernel(src: torch.Tensor, dst: torch.Tensor) -> None:
    """Depthwise (C, 1, k, k) kernels: zero-pad a smaller source, crop a bigger one, centred."""
    ch = min(src.shape[0], dst.shape[0])
    ks, kd = src.shape[-1], dst.shape[-1]
    if kd >= ks:
        pad = (kd - ks) // 2
        target = dst[:ch, :, pad:pad + ks, pad:pad + ks]
        if pad:
            dst[:ch].zero_()
        target.copy_(src[:ch])
    else:
        crop = (ks - kd) // 2
        dst[:ch].copy_(src[:ch, :, crop:crop + kd, crop:crop + kd])


def _copy_bn(src: nn.BatchNorm2d, dst: nn.BatchNorm2d) -> None:
    n = min(src.num_features, dst.num_features)
    for name in ("running_mean", "running_var", "weight", "bias"):
        s, d = getattr(src, name), getattr(dst, name)
        if s is not None and d is not None:
            d[:n].copy_(s[:n])
    if src.num_batches_tracked is not None and dst.num_batches_tracked is not None:
        dst.num_batches_tracked.copy_(src.num_batches_tracked)


def _reset_bn_channels(bn: nn.BatchNorm2d, channels: slice) -> None:
    bn.running_mean[channels].zero_()
    bn.running_var[channels].fill_(1.0)
    if bn.affine:
        bn.weight[channels].fill_(1.0)
        bn.bias[channels].zero_()


def _init_identity(block: SepBlock, exact: bool = True) -> None:
    """Make ``block`` the identity on non-negative inputs in eval mode.

    ReLU passes them, a centre tap of 1 and a Dirac pointwise copy them, and a
    running variance of 1 - eps makes the eval BN divide by exactly 1 (``exact=False``:
    1, the reference's, which divides by sqrt(1 + eps)). In training mode BN normalises
    with batch statistics, hence only near-identity.
    """
    if block.pointwise.in_channels != block.pointwise.out_channels:
        raise ValueError("an inserted block must keep the channel count")
    dw = block.depthwise.weight
    dw.zero_()
    centre = dw.shape[-1] // 2
    dw[:, :, centre, centre] = 1.0
    nn.init.dirac_(block.pointwise.weight)
    bn = block.bn
    bn.running_mean.zero_()
    bn.running_var.fill_(1.0 - bn.eps if exact else 1.0)
    if bn.num_batches_tracked is not None:
        bn.num_batches_tracked.zero_()
    if bn.affine:
        bn.weight.fill_(1.0)
        bn.bias.zero_()
