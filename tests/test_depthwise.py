"""The fast path's depthwise kernels compute the module's own conv, forward and backward."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from prnas.nn.depthwise import depthwise


def _pair(size: int, kernel: int, channels_last: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 5, size, size, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(5, 1, kernel, kernel, generator=g)
    return x, w


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("size", [16, 9])  # 9: no interleaved sub-images (the dense fallback)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dilation", [2, 3])  # dilation 1 is the plain conv itself
@pytest.mark.parametrize("kernel", [3, 5, 7])
def test_depthwise_equals_the_plain_conv_with_its_gradients(kernel, dilation, stride, size,
                                                             channels_last):
    x, w = _pair(size, kernel, channels_last)
    x.requires_grad_(True)
    w.requires_grad_(True)
    pad = dilation * (kernel - 1) // 2
    want = F.conv2d(x, w, None, stride, pad, dilation, 5)
    got = depthwise(x, w, stride, dilation)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(want)
    want_x, want_w = torch.autograd.grad(want, (x, w), grad)
    got_x, got_w = torch.autograd.grad(got, (x, w), grad)
    torch.testing.assert_close(got_x, want_x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_w, want_w, atol=1e-4, rtol=1e-5)


def test_a_frozen_weight_gets_no_gradient_and_the_input_still_does():
    """The alpha step freezes the weights: the backward must not need them to have one."""
    x, w = _pair(16, 3, channels_last=True)
    x.requires_grad_(True)
    y = depthwise(x, w, 1, 2)
    (gx,) = torch.autograd.grad(y.square().sum(), (x,))
    (want,) = torch.autograd.grad(F.conv2d(x, w, None, 1, 2, 2, 5).square().sum(), (x,))
    torch.testing.assert_close(gx, want, atol=1e-5, rtol=1e-5)
    assert w.grad is None


def test_under_no_grad_it_is_the_forward_alone():
    x, w = _pair(16, 5, channels_last=True)
    with torch.no_grad():
        y = depthwise(x, w, 1, 2)
    assert y.grad_fn is None
    torch.testing.assert_close(y, F.conv2d(x, w, None, 1, 4, 2, 5), atol=1e-5, rtol=1e-5)
