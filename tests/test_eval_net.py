"""The evaluation network: DARTS-exact parameter count, every preset and reachable op, drop-path."""

from __future__ import annotations

import random

import pytest
import torch

from prnas.nn.drop_path import drop_path
from prnas.nn.eval_net import EvalCell, EvalNetwork, count_parameters
from prnas.presets import list_genotypes, load_genotype
from prnas.space import Op, preset, reachable
from prnas.space.genotype import Genotype


def _tiny(genotype: Genotype, **kw) -> EvalNetwork:
    torch.manual_seed(0)
    return EvalNetwork(genotype, channels=8, layers=5, **kw)


def _forward_backward(net: EvalNetwork, size: int, in_channels: int = 3) -> None:
    net.train()
    net.drop_path_prob = 0.2
    x = torch.randn(2, in_channels, size, size)
    logits, aux = net(x)
    assert logits.shape == (2, 10) and aux is not None and aux.shape == (2, 10)
    (logits.sum() + 0.4 * aux.sum()).backward()
    # A cell input no node reads leaves its preprocess without gradient, as in DARTS.
    for name, p in net.named_parameters():
        if ".ops." in name or not name.startswith("cells."):
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_darts_v2_parameter_count_matches_darts():
    net = EvalNetwork(load_genotype("darts-v2"), channels=36, layers=20, num_classes=10)
    assert count_parameters(net) == 3_349_342
    # The auxiliary head exists but is not counted.
    assert sum(p.numel() for p in net.parameters()) > count_parameters(net)
    assert count_parameters(net) == count_parameters(
        EvalNetwork(load_genotype("darts-v2"), auxiliary=False))


@pytest.mark.parametrize(("name", "paper_m", "space"), [("prdarts-dr", 4.2, "DR"),
                                                        ("prdarts-ur", 5.4, "UR")])
def test_published_dr_and_ur_cells_have_the_papers_parameter_counts(name, paper_m, space):
    """Issue 12: the authors' DR and UR cells (Table III), retrain-sized (C=36, 20 cells)."""
    g = load_genotype(name)
    net = EvalNetwork(g, channels=36, layers=20, num_classes=10, auxiliary=False)
    assert round(count_parameters(net) / 1e6, 1) == paper_m
    # Every op of the cells is one the preset's space admits, and some only that space has.
    c = preset(space)
    ops = {op for cell in (g.normal, g.reduce) for op, _ in cell}
    assert all(c.admits(op) for op in ops)
    assert not all(preset("DL").admits(op) for op in ops)


def test_presets_listed_and_unknown_name_lists_them(tmp_path):
    names = list_genotypes()
    assert {"darts-v2", "pdarts", "prdarts-dl1", "prdarts-dl2", "prdarts-dr",
            "prdarts-ur"} <= set(names)
    with pytest.raises(ValueError, match="darts-v2"):
        load_genotype("no-such-genotype")
    path = tmp_path / "g.json"
    load_genotype("prdarts-dl1").save(path)
    assert load_genotype(str(path)) == load_genotype("prdarts-dl1")


@pytest.mark.parametrize("name", list_genotypes())
@pytest.mark.parametrize("size", [32, 16])
def test_every_preset_trains_at_tiny_size(name, size):
    _forward_backward(_tiny(load_genotype(name)), size)


def _genotypes_covering(ops: list[Op], seed: int) -> list[Genotype]:
    """Genotypes whose 16 edges together use every op in ``ops`` at least once."""
    rng = random.Random(seed)
    ops = ops[:]
    rng.shuffle(ops)
    out = []
    for start in range(0, len(ops), 16):
        chunk = ops[start:start + 16]
        chunk += rng.choices(ops, k=16 - len(chunk))
        cells = [tuple((op, rng.randrange(i // 2 + 2)) for i, op in enumerate(chunk[c:c + 8]))
                 for c in (0, 8)]
        out.append(Genotype(normal=cells[0], reduce=cells[1], name=f"random-{start}"))
    return out


@pytest.mark.parametrize("space", ["DR", "UR"])
def test_random_genotypes_from_reachable_ops_train(space):
    ops = [Op.parse(s) for s in reachable(preset(space), 5)]
    ops += [Op.skip(), Op.max_pool(), Op.avg_pool()]
    assert any(o.is_conv and o.kernel == 1 for o in ops)
    assert any(o.depth >= 2 for o in ops) or space == "DR"
    assert any(o.width >= 2 for o in ops)
    for genotype in _genotypes_covering(ops, seed=len(space)):
        _forward_backward(_tiny(genotype), 16)


def test_cifar100_head_and_other_input_channels():
    net = _tiny(load_genotype("prdarts-dl2"), num_classes=100, in_channels=1)
    net.train()
    logits, aux = net(torch.randn(2, 1, 16, 16))
    assert logits.shape == (2, 100) and aux.shape == (2, 100)
    full = EvalNetwork(load_genotype("prdarts-dl2"), num_classes=100)
    assert full.classifier.out_features == 100
    assert count_parameters(full) > count_parameters(EvalNetwork(load_genotype("prdarts-dl2")))


def test_aux_logits_only_in_training_with_head():
    net = _tiny(load_genotype("darts-v2"))
    x = torch.randn(2, 3, 32, 32)
    net.eval()
    with torch.no_grad():
        logits, aux = net(x)
    assert aux is None and logits.shape == (2, 10)
    no_aux = _tiny(load_genotype("darts-v2"), auxiliary=False).train()
    assert no_aux(x)[1] is None


def test_aux_head_keeps_darts_layer_shapes_at_32px():
    net = EvalNetwork(load_genotype("darts-v2"), channels=36, layers=20)
    head = net.auxiliary_head
    shapes = [tuple(p.shape) for p in head.parameters()]
    # DARTS AuxiliaryHeadCIFAR on C_aux = 4 * 144 = 576 channels.
    assert shapes == [(128, 576, 1, 1), (128,), (128,), (768, 128, 2, 2), (768,), (768,),
                      (10, 768), (10,)]
    seen = {}
    head.register_forward_pre_hook(lambda m, i: seen.update(map=i[0]))
    head.features.register_forward_pre_hook(lambda m, i: seen.update(pooled=i[0]))
    net.train()
    net(torch.randn(2, 3, 32, 32))
    # On the 8x8 map of a 32x32 input: DARTS' ReLU + 5x5/stride-3 average pool to 2x2.
    assert tuple(seen["map"].shape[-2:]) == (8, 8)
    expected = torch.nn.functional.avg_pool2d(seen["map"].relu(), 5, 3, count_include_pad=False)
    torch.testing.assert_close(seen["pooled"], expected)


def test_drop_path_never_drops_identity_but_drops_ops():
    skip, conv, pool = Op.skip(), Op.conv(3, 1), Op.max_pool()
    # node 2 = skip(s0) + conv(s1); node 3 = pool(s0) + skip(node 2)
    spec = ((skip, 0), (conv, 1), (pool, 0), (skip, 2))
    torch.manual_seed(0)
    cell = EvalCell(spec, (2, 3), c_prev_prev=8, c_prev=8, channels=8,
                    reduction=False, reduction_prev=False).train()
    s0, s1 = torch.randn(4, 8, 8, 8), torch.randn(4, 8, 8, 8)
    out = cell(s0, s1, drop_prob=1.0)
    pre0 = cell.preprocess0(s0)
    # Every non-identity output is dropped, every identity passes unchanged.
    torch.testing.assert_close(out[:, :8], pre0)
    torch.testing.assert_close(out[:, 8:], pre0)
    kept = cell(s0, s1, drop_prob=0.0)
    assert not torch.allclose(kept[:, :8], pre0)
    # In evaluation mode drop-path is off whatever the probability.
    cell.eval()
    torch.testing.assert_close(cell(s0, s1, drop_prob=1.0), cell(s0, s1, drop_prob=0.0))


def test_drop_path_per_sample_and_rescaled():
    torch.manual_seed(0)
    x = torch.ones(2000, 3, 2, 2)
    y = drop_path(x, 0.25)
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) <= {0.0, torch.tensor(1 / 0.75).item()}
    assert (per_sample.min(1).values == per_sample.max(1).values).all()
    assert 0.2 < (per_sample[:, 0] == 0).float().mean().item() < 0.3
    assert drop_path(x, 0.0) is x
    assert torch.equal(drop_path(x, 1.0), torch.zeros_like(x))


def test_network_drop_path_one_stays_finite():
    net = _tiny(load_genotype("prdarts-dl1")).train()
    net.drop_path_prob = 1.0
    logits, aux = net(torch.randn(2, 3, 32, 32))
    assert torch.isfinite(logits).all() and torch.isfinite(aux).all()
