"""``behaviour: reference``, row by row (docs/search.md, "Fidelity"): each behaviour of the
authors' code happens under ``reference`` and not under ``paper``, on tiny networks."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch
from data_folders import write_cifar_folder
from fakes import FakeProbe
from tiny import tiny_search
from torch import nn

from prnas.data import DataConfig
from prnas.data.cifar import CIFAR_STATS, REFERENCE_STATS
from prnas.data.datasets import retrain_datasets, search_datasets
from prnas.nn.ops import build_op
from prnas.nn.transfer import transfer_weights
from prnas.retrain import config as retrain_config
from prnas.runtime import checkpoint
from prnas.runtime.batch_size import BatchSizeConfig, BatchSizeController, proportional_size
from prnas.search.config import ConfigError, build_config
from prnas.search.engine import Search
from prnas.search.policy import MAX_DRAWS, prune_and_replace
from prnas.space import Op
from prnas.space.constraints import preset
from prnas.space.morphisms import Morphism, available_morphisms

DL = preset("DL")
CONV = Op.parse("conv_k3_d1")


# ---------------------------------------------------------------- the switch itself


def test_the_switch_sets_the_lower_layers_fields_unless_set():
    paper, ref = build_config({}), build_config({"behaviour": "reference"})
    assert (paper.data.split, paper.data.statistics, paper.batch.growth) == (
        "random", "prnas", "fit")
    assert (ref.data.split, ref.data.statistics, ref.batch.growth) == (
        "in_order", "reference", "proportional")
    assert ref.batch.b_min == paper.batch.b_min == 24  # the rest of the section stays
    mixed = build_config({"behaviour": "reference", "data": {"split": "random"}})
    assert (mixed.data.split, mixed.data.statistics) == ("random", "reference")
    r = retrain_config.build_config({}, {"behaviour": "reference"})
    assert (r.batch.grow_every, r.batch.growth, r.batch.b_min) == (10, "proportional", 32)
    assert retrain_config.build_config({}).batch.grow_every == 5
    # A paper protocol is recorded as before the switch existed.
    assert "behaviour" not in retrain_config.protocol_json(retrain_config.build_config({}))
    assert '"behaviour": "reference"' in retrain_config.protocol_json(r)


def test_the_switch_names_its_values_and_refuses_a_population():
    with pytest.raises(ConfigError, match="behaviour.*'paper' or 'reference'"):
        build_config({"behaviour": "authors"})
    with pytest.raises(ConfigError, match="population needs behaviour: paper"):
        build_config({"behaviour": "reference", "population": {"halve": {}}})


# ---------------------------------------------------------------- prune and replace


def _decide(pool, alphas, history, *, candidates, morphs, seed, reference, final=False):
    return prune_and_replace(
        {"normal": (tuple(pool),)}, {"normal": [alphas]}, {"normal": (frozenset(history),)},
        candidates=candidates, morphs=morphs, constraints=DL, rng=random.Random(seed),
        final=final, reference=reference)


def test_rediscovery_within_the_reference_budget():
    """A likely parent whose children were all pruned before, and an unlikely one with
    undiscovered children: the reference's 200 draws mostly miss the unlikely parent and
    then take a pruned child; the paper's rule always finds the undiscovered one."""
    b = Op.parse("conv_k5_d1")
    pruned = {child for _, child in available_morphisms(CONV, DL)} - {b}
    pool = (Op.skip(), CONV, b)
    history = set(pool) | pruned
    alphas = [0.0, 0.0, -15.0]  # b: a softmax weight of 1.5e-7
    runs = {mode: [_decide(pool, alphas, history, candidates=4, morphs=1, seed=s,
                           reference=mode == "reference").decisions[0].new[0]
                   for s in range(40)] for mode in ("paper", "reference")}
    assert all(not n.rediscovered and n.parent == b for n in runs["paper"])
    assert sum(n.rediscovered for n in runs["reference"]) >= 35
    assert all(n.op in pruned for n in runs["reference"] if n.rediscovered)


def test_after_250_draws_the_reference_leaves_the_edge_short():
    """Nearly all weight on skip, which cannot be morphed: every reference draw of it is
    spent, so 250 draws find nothing; the paper's rule draws among morphable parents."""
    pool = (Op.skip(), CONV)
    for seed in range(5):
        ref = _decide(pool, [0.0, -30.0], pool, candidates=3, morphs=1, seed=seed,
                      reference=True)
        paper = _decide(pool, [0.0, -30.0], pool, candidates=3, morphs=1, seed=seed,
                        reference=False)
        assert ref.pools["normal"][0] == pool and not ref.decisions[0].new
        assert len(paper.pools["normal"][0]) == 3 and paper.decisions[0].new[0].parent == CONV
    assert MAX_DRAWS == 250


def test_no_refill_under_the_reference():
    """No survivor can be morphed: the paper keeps the best dropped ops instead, the
    reference leaves the edge with its survivors."""
    pool = (Op.skip(), Op.max_pool(), Op.avg_pool(), CONV)
    alphas = [5.0, 4.0, 1.0, 0.0]
    paper = _decide(pool, alphas, pool, candidates=4, morphs=2, seed=0, reference=False,
                    final=True)
    ref = _decide(pool, alphas, pool, candidates=4, morphs=2, seed=0, reference=True,
                  final=True)
    assert paper.pools["normal"][0] == pool
    assert ref.pools["normal"][0] == (Op.skip(), Op.max_pool())


# ---------------------------------------------------------------- weight transfer


def _pair(morphism: Morphism) -> tuple[Op, Op]:
    for op in (CONV, Op.parse("conv_k3_d1_e1"), Op.parse("conv_k3_d1_e2")):
        for m, child in available_morphisms(op, preset("UR")):
            if m is morphism:
                return op, child
    raise AssertionError(f"no {morphism} pair")


def test_widened_channels_drawn_with_xavier_normal_under_the_reference():
    parent, child = _pair(Morphism.WIDEN)
    grown = next(i for i, (a, b) in enumerate(zip(parent.expansions, child.expansions))
                 if a != b)
    for reference in (False, True):
        p_mod, c_mod = build_op(parent, 4, 1, search=True), build_op(child, 4, 1, search=True)
        own = copy.deepcopy(c_mod.state_dict())
        torch.manual_seed(7)
        transfer_weights(parent, p_mod, child, c_mod, Morphism.WIDEN, reference=reference)
        new = slice(p_mod.blocks[grown].bn.num_features, None)
        pw = c_mod.blocks[grown].pointwise.weight[new]
        dw = c_mod.blocks[grown + 1].depthwise.weight[new]
        if reference:
            torch.manual_seed(7)
            expected = [nn.init.xavier_normal_(torch.empty_like(w)) for w in (pw, dw)]
            assert torch.equal(pw, expected[0]) and torch.equal(dw, expected[1])
        else:  # the child's own initialisation
            assert torch.equal(pw, own[f"blocks.{grown}.pointwise.weight"][new])
            assert torch.equal(dw, own[f"blocks.{grown + 1}.depthwise.weight"][new])


def test_an_inserted_block_has_bn_variance_one_under_the_reference():
    parent, child = _pair(Morphism.INSERT)
    x = torch.relu(torch.randn(2, 4, 6, 6))
    for reference, var in ((False, 1 - 1e-5), (True, 1.0)):
        p_mod, c_mod = build_op(parent, 4, 1, search=True), build_op(child, 4, 1, search=True)
        transfer_weights(parent, p_mod, child, c_mod, Morphism.INSERT, reference=reference)
        bn = c_mod.blocks[-1].bn
        assert torch.equal(bn.running_var, torch.full_like(bn.running_var, var))
        p_mod.eval(), c_mod.eval()
        with torch.no_grad():
            diff = (c_mod(x) - torch.relu(p_mod(x))).abs().max().item()
        assert (diff < 1e-6) if not reference else (1e-7 < diff < 1e-4)


# ---------------------------------------------------------------- a surviving child


def _module_state(s, cell_type, edge, op):
    return [{k: v.clone() for k, v in cell.edges[edge].ops[str(op)].state_dict().items()}
            for cell in s.net.cells_of(cell_type)]


def _retransfer(s, cell_type, edge, new, seed):
    """The child as its parent's current weights make it, once per cell."""
    torch.manual_seed(seed)
    out = []
    for cell in s.net.cells_of(cell_type):
        ops = cell.edges[edge].ops
        child = copy.deepcopy(ops[str(new.op)])
        transfer_weights(new.parent, ops[str(new.parent)], new.op, child, new.morphism,
                         reference=True)
        out.append(child.state_dict())
    return out


@pytest.mark.slow
@pytest.mark.parametrize("behaviour", ["paper", "reference"])
def test_a_surviving_child_is_reinitialised_from_its_parent_only_under_the_reference(
        behaviour):
    """Issue 12's bug, on demand: at the start of cycle c+2 a child added after cycle c is
    its parent's transformed weights under the reference, its own training under paper."""
    keep_all = {"epochs": 1, "grace_epochs": 0, "morphs": 1, "candidates": 6}
    s = Search(build_config(tiny_search(
        seed=3, num_threads=1, behaviour=behaviour,
        schedule=[{"epochs": 1, "grace_epochs": 0, "morphs": 1, "candidates": 5}, keep_all,
                  {"epochs": 1, "grace_epochs": 0, "morphs": 0, "candidates": 1}])), log=None)
    s.run_cycle()
    first = s.decide()
    s.apply(first)
    t, e, new = first.new_ops()[0]
    s.run_cycle()
    trained = _module_state(s, t, e, new.op)
    second = s.decide()  # 5 -> 6 candidates: every op survives
    assert new.op in s.pools[t][e] and new.op in second.pools[t][e]
    s.apply(second)
    after = _module_state(s, t, e, new.op)
    again = [_retransfer(s, t, e, new, seed) for seed in (1, 2)]
    for cell, mine in enumerate(after):
        lost = any(not torch.equal(mine[k], trained[cell][k]) for k in mine)
        # Entries the transfer fixes (not drawn at random): equal under both seeds.
        fixed = {k: again[0][cell][k] == again[1][cell][k] for k in mine}
        assert any(m.any() for m in fixed.values())
        from_parent = all(torch.equal(mine[k][fixed[k]], again[0][cell][k][fixed[k]])
                          for k in mine)
        if behaviour == "reference":
            assert lost and from_parent
        else:
            assert not lost and not from_parent


@pytest.mark.slow
def test_a_resumed_reference_search_ends_as_an_uninterrupted_one(tmp_path):
    cfg = build_config(tiny_search(seed=2, num_threads=1, behaviour="reference"))
    whole = Search(cfg, log=None)
    whole.run()
    a = Search(cfg, log=None)
    a.run(stop_after_cycles=2)  # the re-initialisation needs the children of cycle 1
    checkpoint.save_atomic(a.state_dict(), tmp_path / "a.pt")
    b = Search(cfg, log=None)
    b.load_state_dict(checkpoint.load(tmp_path / "a.pt"))
    b.run()
    assert [r.to_json()["decisions"] for r in b.cycle_log] == [
        r.to_json()["decisions"] for r in whole.cycle_log]
    assert [r.alphas for r in b.cycle_log] == [r.alphas for r in whole.cycle_log]
    assert b.genotype.to_dict() == whole.genotype.to_dict()


# ---------------------------------------------------------------- batch size


def test_proportional_growth_is_the_reference_formula():
    cfg = BatchSizeConfig(b_min=24, b_mult=8, b_max=128, growth="proportional")
    gib = 2**30
    assert proportional_size(cfg, 24, gib // 4, gib) == 48  # 0.95 x 24 / 0.25 = 91: doubled
    assert proportional_size(cfg, 48, int(0.6 * gib), gib) == 72  # 76 -> the grid's 72
    assert proportional_size(cfg, 72, int(0.99 * gib), gib) == 72  # over: never shrinks
    assert proportional_size(cfg, 96, gib // 10, gib) == 128  # b_max
    assert proportional_size(cfg, 24, gib, None) == 24  # no reading: stays


def test_proportional_growth_decides_from_the_recent_peak_and_never_backs_off():
    cfg = BatchSizeConfig(b_min=24, b_mult=8, b_max=128, grow_every=2, growth="proportional")
    ctl = BatchSizeController(cfg, None)
    probe = FakeProbe(1000, lambda b: 10 * b, batch_size=lambda: ctl.batch_size)
    ctl.probe = probe
    sizes = []
    for _ in range(8):
        ctl.step_done()
        sizes.append(ctl.batch_size)
    # usage 240/1000 at 24: x2 (cap) -> 48, 480/1000 -> 95 -> 88, 880/1000 -> 95 -> 88.
    assert sizes == [24, 48, 48, 88, 88, 88, 88, 88]
    with pytest.raises(RuntimeError, match="never backs off"):
        ctl.on_oom()
    fit = BatchSizeController(cfg.model_copy(update={"growth": "fit"}), None)
    fit.batch_size = 48
    assert fit.on_oom() == 40  # the paper's controller backs off


# ---------------------------------------------------------------- data


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar_folder(root, num_classes=100, n_train=40, n_test=10, seed=1)
    return root


def test_search_halves_in_file_order_under_the_reference(cifar_root):
    base = DataConfig(dataset="cifar100", data_dir=str(cifar_root))
    w, a, _ = search_datasets(base.model_copy(update={"split": "in_order"}))
    assert list(w.indices) == list(range(20)) and list(a.indices) == list(range(20, 40))
    w, a, _ = search_datasets(base)
    assert sorted([*w.indices, *a.indices]) == list(range(40))
    assert list(w.indices) != list(range(20))


def test_the_reference_cifar_statistics(cifar_root):
    base = DataConfig(dataset="cifar100", data_dir=str(cifar_root))
    *_, paper = retrain_datasets(base)
    *_, ref = retrain_datasets(base.model_copy(update={"statistics": "reference"}))
    assert (paper.mean, paper.std) == CIFAR_STATS["cifar100"]
    assert (ref.mean, ref.std) == REFERENCE_STATS["cifar100"] == (
        (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))
    assert not np.allclose(paper.mean, ref.mean, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- retrain (ImageNet)


def test_the_reference_imagenet_schedule_and_auxiliary_head():
    from prnas.nn.eval_networks import build_eval_network
    from prnas.presets import load_genotype
    from prnas.retrain.network import lr_scheduler

    def schedule(behaviour, kind):
        cfg = retrain_config.build_config({"epochs": 10, "behaviour": behaviour,
                                           "network": {"kind": kind},
                                           "optim": {"lr": 1.0, "lr_schedule": "exponential"}})
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        sched, lrs = lr_scheduler(opt, cfg), []
        for _ in range(10):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return cfg, lrs

    _, paper = schedule("paper", "imagenet")
    cfg, ref = schedule("reference", "imagenet")
    assert paper == pytest.approx([0.97 ** e for e in range(10)])
    # Linear over epochs - 5, then a five times smaller slope: 0.2 at epoch 4 and at 5.
    assert ref == pytest.approx([1, 0.8, 0.6, 0.4, 0.2, 0.2, 0.16, 0.12, 0.08, 0.04])
    assert schedule("reference", "cifar")[1] == paper  # CIFAR: the config's schedule
    genotype = load_genotype("darts-v2")

    def head_bns(aux_bn):
        net = build_eval_network("imagenet", genotype, channels=8, layers=3, num_classes=5,
                                 auxiliary=True, in_channels=3, auxiliary_bn=aux_bn)
        return sum(isinstance(m, nn.BatchNorm2d) for m in net.auxiliary_head.modules())
    assert cfg.auxiliary_bn and head_bns(True) == head_bns(False) + 1 == 2
    assert not retrain_config.build_config({"behaviour": "reference"}).auxiliary_bn


def test_a_child_is_remade_after_its_parent_even_when_the_parent_came_back_later():
    """A parent pruned, then rediscovered from another op, sits after its surviving child
    in the pool; the child must be made from the parent's new weights, so after it."""
    from prnas.search.supernet import _parents_first
    from prnas.space.fates import NewOp

    a, b, c = CONV, Op.parse("conv_k5_d1"), Op.parse("conv_k7_d1")
    made = {c: NewOp(c, b, Morphism.KERNEL_UP, False), b: NewOp(b, a, Morphism.KERNEL_UP, True)}
    assert _parents_first((a, c, b), made) == [b, c]
    assert _parents_first((a, b, c), made) == [b, c]
    assert _parents_first((c, b), made) == [c]  # b's parent is gone: b is not remade
