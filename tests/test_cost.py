"""Inference cost: MACs as torch's flop counter sees them (conv + linear, FLOPs / 2), checked
against a count of every layer; timing fields measured and recorded with device and threads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prnas.cost import count_macs, measure_timing
from prnas.nn.eval_net import EvalNetwork
from prnas.presets import load_genotype


def _layer_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of every Conv2d and Linear, from their output shapes."""
    total = 0

    def conv(m, _, out):
        nonlocal total
        per_output = (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        total += out.numel() * per_output

    def linear(m, _, out):
        nonlocal total
        total += out.numel() * m.in_features

    hooks = [m.register_forward_hook(conv if isinstance(m, nn.Conv2d) else linear)
             for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return total


@pytest.mark.slow
def test_darts_v2_macs_at_the_cifar_evaluation_network():
    with torch.device("meta"):
        net = EvalNetwork(load_genotype("darts-v2"), channels=36, layers=20, num_classes=10)
    net.train()
    macs = count_macs(net, (3, 32, 32))
    assert net.training  # mode restored
    assert macs == _layer_macs(net, torch.zeros(1, 3, 32, 32, device="meta"))
    # docs/retrain.md; DARTS reports ~528M multiply-adds. The auxiliary head (built here) is
    # not part of inference: its layers never run in eval mode, so neither count includes it.
    assert macs == 528_359_040


def test_macs_follow_input_size_and_genotype():
    g = load_genotype("prdarts-dl2")
    net = EvalNetwork(g, channels=4, layers=3, num_classes=5, in_channels=1)
    for size in (8, 16):
        assert count_macs(net, (1, size, size)) == _layer_macs(net, torch.zeros(1, 1, size, size))


def test_timing_is_recorded_with_device_and_threads():
    net = EvalNetwork(load_genotype("prdarts-dl1"), channels=4, layers=3, num_classes=10,
                      in_channels=1)
    net.train()
    weight = net.stem[0].weight
    torch.manual_seed(3)
    draw = torch.rand(2)
    torch.manual_seed(3)
    t = measure_timing(net, (1, 8, 8), "cpu", repeats=3, budget_s=0.5)
    assert torch.equal(torch.rand(2), draw)  # measuring used its own random stream
    assert t.latency_ms_b1 > 0 and t.throughput_b64 > 0
    assert t.cost_device.startswith("cpu: ") and t.cost_threads == torch.get_num_threads()
    assert net.training and net.stem[0].weight.is_contiguous() and net.stem[0].weight is weight
    assert set(t.as_dict()) == {"latency_ms_b1", "throughput_b64", "cost_device", "cost_threads"}
