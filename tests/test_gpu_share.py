"""A trial on a fraction of a GPU is held to its share (checked with a stand-in CUDA)."""

from types import SimpleNamespace

import torch

from prnas.tune.cluster import claim_gpu_share, trial_gpu_fraction


def test_trial_gpu_fraction_reads_the_reserved_resources():
    pgf = SimpleNamespace(required_resources={"CPU": 2.0, "GPU": 0.5})
    assert trial_gpu_fraction(SimpleNamespace(trial_resources=pgf)) == 0.5
    assert trial_gpu_fraction(SimpleNamespace(trial_resources=None)) == 0.0
    assert trial_gpu_fraction(object()) == 0.0


def test_claim_gpu_share_caps_allocator_and_returns_budget(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction",
                        lambda f, d: calls.append((f, d)))
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda d: SimpleNamespace(total_memory=80 * 2**30))
    assert claim_gpu_share(0.25) == 20 * 2**30
    assert calls == [(0.25, 0)]
    # A whole GPU (or none) is not shared: nothing is capped.
    assert claim_gpu_share(1.0) is None and claim_gpu_share(0.0) is None
    assert calls == [(0.25, 0)]


def test_claim_gpu_share_without_cuda_is_a_no_op(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert claim_gpu_share(0.5) is None
