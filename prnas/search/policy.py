"""Prune and replace: a pure function of pools, alphas, the cycle's targets and an RNG.

Keeping it free of torch and of any state makes every decision reproducible
from (seed, cycle) alone, which is what lets a Tune scheduler own it and a
restored driver take the very same decision again.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from prnas.space.constraints import Constraints
from prnas.space.fates import EdgeDecision, NewOp, PolicyResult
from prnas.space.morphisms import Morphism, available_morphisms
from prnas.space.ops import Op
from prnas.space.pools import CELL_TYPES, Histories, Pools, check_alphas_match
from prnas.space.weights import softmax


def cycle_rng(seed: int, cycle: int) -> random.Random:
    """The decision RNG after ``cycle`` (0-based): a function of the seed and cycle only."""
    return random.Random(f"prnas-policy-{seed}-{cycle}")


def _choose_survivors(ranked: list[tuple[Op, float]], n_keep: int, keep_conv: bool
                      ) -> list[tuple[Op, float]]:
    keep = ranked[:n_keep]
    if keep_conv and not any(op.is_conv for op, _ in keep):
        best_conv = next((c for c in ranked if c[0].is_conv), None)
        if best_conv is not None and n_keep > 0:
            keep = ranked[: n_keep - 1] + [best_conv]
    return keep


def _proposals(survivors: list[tuple[Op, float]], constraints: Constraints
               ) -> list[tuple[float, Op, Morphism, Op]]:
    """Every (probability, parent, morphism, child) of the paper's proposal: a parent drawn by
    its softmax weight renormalised over the survivors that can be morphed, then one of its
    available morphisms uniformly."""
    parents = [(op, w, available_morphisms(op, constraints)) for op, w in survivors]
    parents = [(op, w, moves) for op, w, moves in parents if moves]
    total = sum(w for _, w, _ in parents)
    out = []
    for parent, w, moves in parents:
        # Softmax weights that underflowed to 0 everywhere: every parent equally likely.
        p_parent = w / total if total > 0 else 1 / len(parents)
        out += [(p_parent / len(moves), parent, m, child) for m, child in moves]
    return out


def _propose(survivors: list[tuple[Op, float]], constraints: Constraints, rng: random.Random,
             taken: set[Op], history: frozenset[Op],
             boost: Mapping[Op, float] | None = None) -> NewOp | None:
    """One new op for an edge: an undiscovered child whenever any survivor has one, else a
    rediscovered (previously pruned) one, else None.

    Enumerated rather than retried: the reference draws parent and morphism up to 200 times
    looking for an undiscovered child before it takes a pruned one, which may rediscover
    although undiscovered children exist. Here the draw is made once among the undiscovered
    children, with the paper's distribution conditioned on them (exactly what unlimited
    retries would give); only when there are none, among the rediscoverable ones likewise.

    ``boost`` (population share): each child's probability multiplied by its factor
    (1 for a child not in it) and renormalised; the chosen child records both.
    """
    proposals = [p for p in _proposals(survivors, constraints) if p[3] not in taken]
    for rediscovered in (False, True):
        options = [p for p in proposals if (p[3] in history) == rediscovered]
        if not options:
            continue
        weights = [p[0] for p in options]
        if not sum(weights) > 0:
            weights = [1.0] * len(options)
        shared = weights if boost is None else [w * boost.get(p[3], 1.0)
                                                for w, p in zip(weights, options)]
        (i,) = rng.choices(range(len(options)), weights=shared, k=1)
        _, parent, morphism, child = options[i]
        if boost is None:
            return NewOp(child, parent, morphism, rediscovered=rediscovered)
        return NewOp(child, parent, morphism, rediscovered, p_paper=weights[i] / sum(weights),
                     p_shared=shared[i] / sum(shared))
    return None


#: The reference code's budget per new op: a pruned child is accepted from the draw after
#: the first 201 (its ``t > 200``, 0-based), and after 250 draws the edge stays short.
REDISCOVER_AFTER, MAX_DRAWS = 200, 250


def _propose_reference(survivors: list[tuple[Op, float]], constraints: Constraints,
                       rng: random.Random, taken: set[Op], history: frozenset[Op]
                       ) -> NewOp | None:
    """One new op as the reference code draws it (``behaviour: reference``): up to 250
    times a parent by its softmax weight renormalised over *all* survivors (a draw of one
    that cannot be morphed is spent), then one of its morphisms uniformly; the first child
    never in the edge's pool is taken, or, after the first 201 draws, also one pruned
    before; none after 250. The numbers drawn differ from the reference's (``random`` here, NumPy
    there); the rule is the same."""
    total = sum(w for _, w in survivors)
    weights = [w if total > 0 else 1.0 for _, w in survivors]
    for draw in range(MAX_DRAWS):
        (parent, _), = rng.choices(survivors, weights=weights, k=1)
        moves = available_morphisms(parent, constraints)
        if not moves:
            continue
        morphism, child = rng.choice(moves)
        if child in taken:
            continue
        if child not in history:
            return NewOp(child, parent, morphism, rediscovered=False)
        if draw > REDISCOVER_AFTER:
            return NewOp(child, parent, morphism, rediscovered=True)
    return None


def prune_and_replace(
    pools: Pools,
    alphas: Mapping[str, Sequence[Sequence[float]]],
    histories: Histories,
    *,
    candidates: int,
    morphs: int,
    constraints: Constraints,
    rng: random.Random,
    final: bool,
    boost: Mapping[str, Mapping[Op, float]] | None = None,
    reference: bool = False,
) -> PolicyResult:
    """Per edge: keep the ``candidates - morphs`` most probable ops (at least one conv unless
    ``final``), then add ``morphs`` morphed children of the survivors (their proposal
    probabilities multiplied by ``boost[cell_type]``'s factors when given: population
    share, :mod:`prnas.search.population`).

    When fewer new ops can be found than asked (every child of every survivor
    already in the pool), the best dropped ops are kept instead; only an edge
    that had fewer ops than the target to begin with ends up smaller.

    ``reference`` (``behaviour: reference``): new ops drawn by the reference code's
    bounded retries (:func:`_propose_reference`), and no refill: an edge with too few
    new children stays short, as there.
    """
    if reference and boost is not None:
        raise ValueError("population share has no reference behaviour")
    if not 0 <= morphs < candidates:
        raise ValueError(f"need 0 <= morphs < candidates, got morphs={morphs}, "
                         f"candidates={candidates}")
    check_alphas_match(pools, alphas)
    pools_next: dict[str, list[tuple[Op, ...]]] = {}
    new_hist: dict[str, list[frozenset[Op]]] = {}
    decisions = []
    for t in CELL_TYPES:
        if t not in pools:
            continue
        pools_next[t], new_hist[t] = [], []
        for e, (edge, a) in enumerate(zip(pools[t], alphas[t])):
            weights = softmax(a)
            # Stable order on ties: by weight, then by position in the pool.
            ranked = sorted(zip(edge, weights), key=lambda p: -p[1])
            keep = _choose_survivors(ranked, candidates - morphs, keep_conv=not final)
            kept_ops = {op for op, _ in keep}
            dropped = tuple(p for p in ranked if p[0] not in kept_ops)
            # Survivors keep their pool order so module order stays stable across cycles.
            survivors = [(op, w) for op, w in zip(edge, weights) if op in kept_ops]
            taken = set(kept_ops)
            history = histories[t][e]
            added: list[NewOp] = []
            for _ in range(morphs):
                if reference:
                    new = _propose_reference(survivors, constraints, rng, taken, history)
                else:
                    new = _propose(survivors, constraints, rng, taken, history,
                                   None if boost is None else boost.get(t, {}))
                if new is None:
                    break
                added.append(new)
                taken.add(new.op)
            # Too few new ops (a small constrained space): refill from the best dropped ones,
            # so survivors + new still meets the target.
            new_ops = {n.op for n in added}
            refill = [p for p in dropped if p[0] not in new_ops]
            refill = refill[: max(0, candidates - len(survivors) - len(added))] if not reference \
                else []
            if refill:
                kept_ops |= {op for op, _ in refill}
                dropped = tuple(p for p in dropped if p[0] not in kept_ops)
                survivors = [(op, w) for op, w in zip(edge, weights) if op in kept_ops]
            pools_next[t].append(tuple(op for op, _ in survivors) + tuple(n.op for n in added))
            new_hist[t].append(history | {n.op for n in added})
            decisions.append(EdgeDecision(t, e, tuple(survivors), dropped, tuple(added)))
    return PolicyResult(
        pools={t: tuple(v) for t, v in pools_next.items()},
        histories={t: tuple(v) for t, v in new_hist.items()},
        decisions=tuple(decisions),
    )
