"""The fast path's depthwise convs on the CPU: the fastest exact equivalent of each.

oneDNN's NHWC depthwise kernels are fast forward, but once the conv is dilated its
backward is 10-40x its forward, and above a 5x5 kernel its dilated forward is slow as
well (batch 32, C=16, 32x32, 3x3 dilation 2: forward 0.3 ms, input gradient 1.7 ms,
weight gradient 6.6 ms; benchmarks/README.md). A searched cell holds dilated convs on
most edges, so these kernels were the largest single cost of a CPU search step. Each
equivalent below computes the same convolution up to float summation order:

- the transposed conv of a stride-1 'same' conv is the same conv with the kernel
  flipped, so the input gradient runs the fast forward kernel;
- a dilation-d conv over an image whose sides d divides is an ordinary conv over its
  d*d interleaved sub-images (space to batch), so the weight gradient runs the
  undilated kernel, at the price of two copies;
- a dilated conv is the dense kernel with zeros between its taps: the forward of a
  large dilated kernel, and every strided dilated conv, run that one.

The parameter stays the k x k one, so its gradient, the weight transfer and checkpoints
do not know which kernel ran. CUDA, autocast and undilated convs take the module's own
conv unchanged.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["depthwise"]

# Above this kernel size oneDNN's dilated depthwise forward is slower than the dense
# kernel (7x7 dilation 2 at 32x32: 18.8 ms against 2.9 ms); at or below it, faster.
_LARGEST_DILATED_KERNEL = 5


def depthwise(x: torch.Tensor, weight: torch.Tensor, stride: int = 1, dilation: int = 1
              ) -> torch.Tensor:
    """The depthwise conv of ``x`` by ``weight`` (C, 1, k, k) with 'same' padding, through
    the fastest CPU kernel that computes it."""
    d = dilation
    if d == 1 or x.device.type != "cpu" or torch.is_autocast_enabled("cpu"):
        k = weight.shape[-1]
        return F.conv2d(x, weight, None, stride, d * (k - 1) // 2, d, weight.shape[0])
    if stride > 1:
        return _dense(x, weight, d, stride)
    return _DilatedDepthwise.apply(x, weight, d)


def _dense_weight(weight: torch.Tensor, d: int) -> torch.Tensor:
    k = weight.shape[-1]
    size = d * (k - 1) + 1
    dense = weight.new_zeros(weight.shape[0], 1, size, size)
    dense[:, :, ::d, ::d] = weight
    return dense


def _dense(x: torch.Tensor, weight: torch.Tensor, d: int, stride: int = 1) -> torch.Tensor:
    k = weight.shape[-1]
    return F.conv2d(x, _dense_weight(weight, d), None, stride, d * (k - 1) // 2, 1,
                    weight.shape[0])


def _conv(x: torch.Tensor, weight: torch.Tensor, d: int) -> torch.Tensor:
    """The stride-1 'same' dilated depthwise conv, without autograd's backward."""
    k = weight.shape[-1]
    if k > _LARGEST_DILATED_KERNEL:
        return _dense(x, weight, d)
    return F.conv2d(x, weight, None, 1, d * (k - 1) // 2, d, weight.shape[0])


def _to_batch(x: torch.Tensor, d: int) -> torch.Tensor:
    """[N, C, H, W] -> [d*d*N, C, H/d, W/d], sub-image (a, b) holding x[..., a::d, b::d];
    one copy, written channels-last (the layout the fast path runs in)."""
    n, c, h, w = x.shape
    nhwc = x.permute(0, 2, 3, 1).reshape(n, h // d, d, w // d, d, c)
    batched = nhwc.permute(2, 4, 0, 1, 3, 5).reshape(d * d * n, h // d, w // d, c)
    return batched.permute(0, 3, 1, 2)


def _weight_grad(x: torch.Tensor, grad: torch.Tensor, weight: torch.Tensor, d: int
                 ) -> torch.Tensor:
    k = weight.shape[-1]
    h, w = x.shape[-2:]
    if h % d or w % d:  # no interleaved sub-images: the dense kernel's gradient, sampled
        dense = _dense_weight(weight, d)
        pad = d * (k - 1) // 2
        full = torch.ops.aten.convolution_backward(
            grad, x, dense, None, [1, 1], [pad, pad], [1, 1], False, [0, 0],
            weight.shape[0], [False, True, False])[1]
        return full[:, :, ::d, ::d]
    pad = (k - 1) // 2
    return torch.ops.aten.convolution_backward(
        _to_batch(grad, d), _to_batch(x, d), weight, None, [1, 1], [pad, pad], [1, 1],
        False, [0, 0], weight.shape[0], [False, True, False])[1]


class _DilatedDepthwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, d: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.d = d
        return _conv(x, weight, d)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        d = ctx.d
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = _conv(grad, weight.flip(2, 3), d)
        if ctx.needs_input_grad[1]:
            grad_w = _weight_grad(x, grad, weight, d)
        return grad_x, grad_w, None
