"""The per-cycle measure of whether the alphas learned (prnas.search.alpha_signal)."""

import math
import random

import pytest

from prnas.search import alpha_signal as sig
from prnas.space import Op


def test_spread_is_zero_when_uniform_and_one_when_decided():
    assert sig.edge_spread([0.0, 0.0, 0.0]) == pytest.approx(0.0)
    assert sig.edge_spread([50.0, 0.0, 0.0, 0.0]) == pytest.approx(1.0)
    assert sig.edge_spread([3.0]) == 0.0  # one candidate: nothing to decide
    alphas = {"normal": [[0.0, 0.0], [50.0, 0.0]], "reduce": [[1.0]]}
    assert sig.mean_spread(alphas) == pytest.approx(0.5)


@pytest.mark.parametrize("k,lr,steps", [(4, 0.05, 20), (6, 0.03, 60), (4, 6e-4, 16)])
def test_noise_figure_is_what_adam_does_on_gradients_without_signal(k, lr, steps):
    """The closed form against the search's own optimiser (Adam, betas (0.5, 0.999), the
    alpha weight decay) fed zero-mean gradients: 4000 independent edges at once."""
    import torch

    torch.manual_seed(0)
    alphas = torch.nn.Parameter(1e-3 * torch.randn(4000, k))
    opt = torch.optim.Adam([alphas], lr=lr, betas=(0.5, 0.999), weight_decay=1e-3)
    for _ in range(steps):
        alphas.grad = torch.randn(4000, k)
        opt.step()
    w = torch.softmax(alphas.detach(), -1)
    measured = (w.max(-1).values - w.min(-1).values).mean().item()
    assert sig.noise_spread([k], init_scale=1e-3, alpha_lr=lr, alpha_steps=steps) \
        == pytest.approx(measured, rel=0.05)
    assert sig.noise_sigma(1e-3, lr, steps) == pytest.approx(math.sqrt(1e-6 + lr**2 * steps))


def test_noise_figure_grows_with_steps_and_learning_rate_and_is_deterministic():
    base = sig.noise_spread([4, 6], init_scale=1e-3, alpha_lr=6e-4, alpha_steps=16)
    assert base == sig.noise_spread([4, 6], init_scale=1e-3, alpha_lr=6e-4, alpha_steps=16)
    assert sig.noise_spread([4, 6], init_scale=1e-3, alpha_lr=6e-4, alpha_steps=64) > base
    assert sig.noise_spread([4, 6], init_scale=1e-3, alpha_lr=6e-3, alpha_steps=16) > base
    assert sig.noise_spread([1], init_scale=1e-3, alpha_lr=1.0, alpha_steps=16) == 0.0


def test_a_consistent_drift_is_signal_and_a_random_walk_is_noise():
    lr, n = 0.03, 60
    rng = random.Random(1)
    drift = {"normal": [[lr * n, 0.0, 0.0, 0.0] for _ in range(5)]}
    walk = {"normal": [[lr * sum(rng.choice((-1, 1)) for _ in range(n)) for _ in range(4)]
                       for _ in range(200)]}
    for alphas, noisy in ((drift, False), (walk, True)):
        rec = {"cycle": 1, **sig.cycle_signal(alphas, init_scale=1e-3, alpha_lr=lr,
                                              alpha_steps=n)}
        assert sig.is_noise(rec["alpha_spread"], rec["alpha_spread_noise"]) is noisy
        warning = sig.noise_warning(rec)
        assert (warning is not None) is noisy
    assert "60 alpha steps" in warning and "steps_per_epoch" in warning


def test_a_uniform_softmax_names_the_learning_rate():
    rec = {"cycle": 2, "alpha_steps": 16, "alpha_spread": 0.002, "alpha_spread_noise": 0.0013}
    assert "optim.alpha_lr" in sig.noise_warning(rec)
    assert "cycle 2 decided on noise" in sig.noise_warning(rec)


def test_records_without_the_measure_print_and_warn_nothing():
    """A cycle checkpointed before the measure existed (resumed after an upgrade)."""
    assert sig.signal_text({"cycle": 1}) == "alpha spread not recorded"
    assert sig.noise_warning({"cycle": 1, "alpha_spread": None}) is None


def test_report_table_and_statement():
    import pandas as pd

    from analysis import signal

    results = pd.DataFrame({
        "experiment": "e", "trial_id": ["a", "a", "b", "b"], "space": "DL", "seed": [0, 0, 1, 1],
        "cycle": [1, 2, 1, 2], "alpha_steps": [20, 20, 60, 60],
        "alpha_spread": [0.12, 0.31, None, 0.0], "alpha_spread_noise": [0.11, 0.1, None, 0.0]})
    table = signal.signal_table(results)
    assert table["decided_on_noise"].tolist() == [True, False, pd.NA, pd.NA]
    assert table["signal"].tolist()[:2] == pytest.approx([0.12 / 0.11, 3.1])
    text = signal.noise_statement(table)
    assert text.startswith("Warning: 1 of 2 cycles were decided on noise")
    assert "2 cycle(s) carry no measure" in text
    assert signal.noise_statement(table.iloc[1:2]).startswith("Every one of the 1 measured")
    assert signal.noise_statement(table.iloc[2:]).startswith("No cycle carries the measure")


def test_softmax_curves_name_every_edge_and_op():
    pools = {"normal": ((Op.parse("skip"), Op.parse("conv_k3_d1")),),
             "reduce": ((Op.parse("max_pool_3x3"),),)}
    curves = sig.softmax_curves(pools, {"normal": [[0.0, 0.0]], "reduce": [[2.0]]})
    assert curves == {"normal": {"edge00": {"skip": 0.5, "conv_k3_d1": 0.5}},
                      "reduce": {"edge00": {"max_pool_3x3": 1.0}}}


def test_every_cycle_record_carries_the_measure_and_the_console_line_shows_it():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from tiny import tiny_search

    from prnas.search.config import build_config
    from prnas.search.engine import Search

    cfg = build_config(tiny_search(schedule=[
        {"epochs": 2, "grace_epochs": 1, "morphs": 1, "candidates": 4},
        {"epochs": 1, "grace_epochs": 0, "morphs": 0, "candidates": 1}]))
    search = Search(cfg, log=None)
    search.run()
    first = search.cycle_log[0]
    assert first["alpha_steps"] == cfg.steps_per_epoch  # the grace epoch takes none
    assert first["alpha_spread"] == pytest.approx(sig.mean_spread(first.alphas))
    assert first["alpha_spread_noise"] == pytest.approx(sig.noise_spread(
        [len(a) for edges in first.alphas.values() for a in edges], init_scale=1e-3,
        alpha_lr=cfg.optim.alpha_lr, alpha_steps=cfg.steps_per_epoch))
    assert "alpha spread" in sig.signal_text(first)
