"""The prune-and-replace policy and genotype derivation: pure functions, tested directly."""

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prnas.search.genotype import derive_genotype
from prnas.search.policy import cycle_rng, prune_and_replace
from prnas.space import Op, apply_morphism, preset
from prnas.space.fates import PolicyResult
from prnas.space.pools import (
    edge_inputs,
    histories_from_plain,
    histories_plain,
    initial_histories,
    initial_pools,
    num_edges,
    pool_statistics,
    pools_from_plain,
    pools_plain,
)
from prnas.space.weights import softmax

DL = preset("DL")


def _random_alphas(pools, rng):
    return {t: [[rng.gauss(0, 1) for _ in edge] for edge in edges] for t, edges in pools.items()}


def _run_cycles(seed, schedule, constraints=DL, nodes=4):
    pools = initial_pools(nodes)
    hist = initial_histories(pools)
    rng = random.Random(seed)
    trail = [pools]
    results = []
    for i, (cands, morphs) in enumerate(schedule):
        res = prune_and_replace(pools, _random_alphas(pools, rng), hist, candidates=cands,
                                morphs=morphs, constraints=constraints, rng=cycle_rng(seed, i),
                                final=i == len(schedule) - 1)
        pools, hist = res.pools, res.histories
        trail.append(pools)
        results.append(res)
    return trail, results


def test_pool_sizes_follow_schedule_and_new_ops_are_morphs_of_survivors():
    schedule = [(6, 3), (6, 3), (6, 3), (4, 0), (2, 0), (1, 0)]
    trail, results = _run_cycles(1, schedule)
    for (cands, _), pools in zip(schedule, trail[1:]):
        for edges in pools.values():
            assert len(edges) == 14
            assert all(len(edge) == cands for edge in edges)
            assert all(len(set(edge)) == len(edge) for edge in edges)
    for res in results:
        for d in res.decisions:
            kept = {op for op, _ in d.survived}
            for new in d.new:
                assert new.parent in kept
                assert apply_morphism(new.parent, new.morphism) == new.op
                assert DL.admits(new.op)


def test_dropped_are_the_lowest_weights():
    pools = initial_pools(2)
    hist = initial_histories(pools)
    alphas = {t: [[0.1, 0.2, 3.0, 1.0] for _ in edges] for t, edges in pools.items()}
    res = prune_and_replace(pools, alphas, hist, candidates=3, morphs=1, constraints=DL,
                            rng=random.Random(0), final=False)
    for d in res.decisions:
        assert [str(op) for op, _ in d.dropped] == ["avg_pool_3x3", "max_pool_3x3"]
        assert {str(op) for op, _ in d.survived} == {"skip", "conv_k3_d1"}
        assert len(d.new) == 1


def test_at_least_one_conv_survives_outside_final_cycle():
    pools = initial_pools(2)
    hist = initial_histories(pools)
    # The conv has by far the lowest weight; it must survive anyway, except in the final cycle.
    alphas = {t: [[5.0, 4.0, 3.0, -9.0] for _ in edges] for t, edges in pools.items()}
    for final, expect_conv in ((False, True), (True, False)):
        res = prune_and_replace(pools, alphas, hist, candidates=2, morphs=0, constraints=DL,
                                rng=random.Random(0), final=final)
        for edges in res.pools.values():
            for edge in edges:
                assert any(op.is_conv for op in edge) is expect_conv
                assert len(edge) == 2


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_histories_prevent_rediscovery_until_exhausted(seed):
    trail, results = _run_cycles(seed, [(6, 3)] * 4)
    for res in results:
        for d in res.decisions:
            for new in d.new:
                assert new.op not in {op for op, _ in d.survived}
    # An op that left an edge comes back only flagged as rediscovered.
    seen: dict = {}
    for pools, res in zip(trail, results):
        for d in res.decisions:
            key = (d.cell_type, d.edge)
            history = seen.setdefault(key, set(pools[d.cell_type][d.edge]))
            for new in d.new:
                assert new.rediscovered == (new.op in history)
                history.add(new.op)


def _one_edge_state(pool: list[str], history: list[str]):
    """One node (2 edges) per cell type, every edge with ``pool`` and ``history`` + ``pool``."""
    ops = tuple(Op.parse(s) for s in pool)
    pools = initial_pools(1, ops)
    hist = {t: tuple(frozenset(ops) | {Op.parse(s) for s in history} for _ in edges)
            for t, edges in pools.items()}
    return pools, hist


def test_rediscovery_only_when_space_is_exhausted():
    """Issue 12: an undiscovered child is taken whenever any survivor has one, however
    unlikely its parent; a pruned op comes back only when no survivor has any."""
    # The likely parent conv_k3_d1 has only pruned children (all in the history); the unlikely
    # conv_k7_d2_e1 (softmax weight ~1e-9) has one undiscovered child, conv_k5_d2_e1.
    pruned = ["conv_k5_d1", "conv_k3_d2", "conv_k3_d1_e1", "conv_k7_d1_e1"]
    pool = ["conv_k3_d1", "conv_k7_d2_e1", "skip"]
    alphas = {t: [[10.0, -10.0, -20.0]] * 2 for t in ("normal", "reduce")}
    for seed in range(30):
        pools, hist = _one_edge_state(pool, pruned)
        res = prune_and_replace(pools, alphas, hist, candidates=3, morphs=1, constraints=DL,
                                rng=random.Random(seed), final=False)
        for d in res.decisions:
            assert [(str(n.op), str(n.parent), n.morphism, n.rediscovered) for n in d.new] == [
                ("conv_k5_d2_e1", "conv_k7_d2_e1", "kernel_down", False)]
    # Now that child was tried before too: every child of every survivor is pruned, so a
    # pruned one returns (flagged), drawn by the paper's distribution: mostly the likely
    # parent's.
    parents = set()
    for seed in range(30):
        pools, hist = _one_edge_state(pool, [*pruned, "conv_k5_d2_e1"])
        res = prune_and_replace(pools, alphas, hist, candidates=3, morphs=1, constraints=DL,
                                rng=random.Random(seed), final=False)
        for d in res.decisions:
            (new,) = d.new
            assert new.rediscovered
            assert str(new.op) in [*pruned, "conv_k5_d2_e1"]
            assert apply_morphism(new.parent, new.morphism) == new.op
            parents.add(str(new.parent))
    assert parents == {"conv_k3_d1"}


def test_new_ops_follow_the_papers_distribution_among_undiscovered_children():
    """Parent by softmax weight, morphism uniform among its available ones, conditioned on
    an undiscovered child: exact enumeration instead of bounded retries."""
    # Equal weights. conv_k3_d1's children: k5_d1 (in the pool), k3_d2, k3_d1_e1 -> 1/6 each;
    # conv_k5_d1's: k7_d1, k3_d1 (in the pool), k5_d2, k5_d1_e1 -> 1/8 each. Sum 17/24.
    expected = {"conv_k3_d2": 4 / 17, "conv_k3_d1_e1": 4 / 17, "conv_k7_d1": 3 / 17,
                "conv_k5_d2": 3 / 17, "conv_k5_d1_e1": 3 / 17}
    pools, hist = _one_edge_state(["conv_k3_d1", "conv_k5_d1"], [])
    alphas = {t: [[0.0, 0.0]] * 2 for t in ("normal", "reduce")}
    counts = dict.fromkeys(expected, 0)
    for seed in range(600):
        res = prune_and_replace(pools, alphas, hist, candidates=3, morphs=1, constraints=DL,
                                rng=random.Random(seed), final=False)
        for d in res.decisions:
            (new,) = d.new
            counts[str(new.op)] += 1
    n = sum(counts.values())
    assert n == 2400
    for op, p in expected.items():
        assert abs(counts[op] / n - p) < 0.03, (op, counts[op] / n, p)


def test_same_seed_same_decision_and_json_round_trip():
    a, ra = _run_cycles(7, [(6, 3), (6, 3)])
    b, rb = _run_cycles(7, [(6, 3), (6, 3)])
    c, _ = _run_cycles(8, [(6, 3), (6, 3)])
    assert a == b
    assert a != c
    for res in ra:
        back = PolicyResult.from_plain(json.loads(json.dumps(res.to_plain())))
        assert back == res
    assert pools_from_plain(json.loads(json.dumps(pools_plain(a[-1])))) == a[-1]
    hist = rb[-1].histories
    assert histories_from_plain(json.loads(json.dumps(histories_plain(hist)))) == hist


def test_ragged_pools_and_mismatched_alphas():
    pools = initial_pools(2)
    ragged = {t: tuple(edge[: 1 + i % 4] if i % 2 else edge for i, edge in enumerate(edges))
              for t, edges in pools.items()}
    hist = initial_histories(ragged)
    rng = random.Random(3)
    alphas = _random_alphas(ragged, rng)
    res = prune_and_replace(ragged, alphas, hist, candidates=4, morphs=2, constraints=DL,
                            rng=random.Random(0), final=False)
    for t, edges in res.pools.items():
        for before, after in zip(ragged[t], edges):
            if any(op.is_conv for op in before):
                assert len(after) == 4
            else:  # nothing to morph: the pools stay as they were
                assert after == before
    bad = {t: [a[:-1] if len(a) > 1 else a for a in v] for t, v in alphas.items()}
    with pytest.raises(ValueError, match="architecture weights"):
        prune_and_replace(ragged, bad, hist, candidates=4, morphs=2, constraints=DL,
                          rng=random.Random(0), final=False)


def test_invalid_targets_rejected():
    pools = initial_pools(1)
    with pytest.raises(ValueError, match="morphs"):
        prune_and_replace(pools, _random_alphas(pools, random.Random(0)),
                          initial_histories(pools), candidates=2, morphs=2, constraints=DL,
                          rng=random.Random(0), final=False)


def test_genotype_picks_top_op_and_top_two_edges():
    nodes = 4
    pools = initial_pools(nodes)
    rng = random.Random(5)
    alphas = _random_alphas(pools, rng)
    g = derive_genotype(pools, alphas, nodes, name="t")
    inputs = edge_inputs(nodes)
    assert len(g.normal) == len(g.reduce) == 2 * nodes
    for t, cell in (("normal", g.normal), ("reduce", g.reduce)):
        for j in range(nodes):
            edges = [e for e, (node, _) in enumerate(inputs) if node == j]
            strength = {inputs[e][1]: max(softmax(alphas[t][e])) for e in edges}
            chosen = [src for _, src in cell[2 * j: 2 * j + 2]]
            best = sorted(strength, key=lambda s: -strength[s])[:2]
            assert sorted(chosen) == sorted(best)
            for op, src in cell[2 * j: 2 * j + 2]:
                e = inputs.index((j, src))
                w = softmax(alphas[t][e])
                assert op == pools[t][e][w.index(max(w))]
    assert num_edges(nodes) == 14
    assert g.to_dict()["format"] == "prnas-genotype/1"
    assert isinstance(g.normal[0][0], Op)


def test_reported_similarity_is_the_papers_statistic():
    """The engine's similarity columns use Fig. 2's statistic: 1/3 for the initial pools."""
    stats = pool_statistics(initial_pools(4))
    assert stats["similarity_normal"] == stats["similarity_reduce"] == pytest.approx(1 / 3)
