"""Prune and replace: a pure function of pools, alphas, the cycle's targets and an RNG.

Keeping it free of torch and of any state makes every decision reproducible
from (seed, cycle) alone, which is what lets a Tune scheduler own it and a
restored driver take the very same decision again.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from prnas.search.pools import (
    CELL_TYPES,
    Histories,
    Pools,
    check_alphas_match,
    histories_from_json,
    histories_plain,
    histories_to_json,
    pools_from_json,
    pools_plain,
    pools_to_json,
)
from prnas.space.constraints import Constraints
from prnas.space.morphisms import Morphism, available_morphisms
from prnas.space.ops import Op
from prnas.space.weights import softmax


@dataclass(frozen=True)
class NewOp:
    op: Op
    parent: Op
    morphism: Morphism
    rediscovered: bool  # accepted although it had been in this edge's pool before


@dataclass(frozen=True)
class EdgeDecision:
    """One edge's fate after a cycle, in the vocabulary used everywhere downstream
    (``prnas.records``, the parquet files, the analysis): survived, dropped, new."""

    cell_type: str
    edge: int
    survived: tuple[tuple[Op, float], ...]
    dropped: tuple[tuple[Op, float], ...]
    new: tuple[NewOp, ...]

    def to_dict(self) -> dict:
        return {
            "cell_type": self.cell_type,
            "edge": self.edge,
            "survived": [[str(op), w] for op, w in self.survived],
            "dropped": [[str(op), w] for op, w in self.dropped],
            "new": [{"op": str(n.op), "parent": str(n.parent), "morphism": str(n.morphism),
                     "rediscovered": n.rediscovered} for n in self.new],
        }

    @classmethod
    def from_dict(cls, x: Mapping) -> EdgeDecision:
        return cls(x["cell_type"], int(x["edge"]),
                   tuple((Op.parse(s), float(w)) for s, w in x["survived"]),
                   tuple((Op.parse(s), float(w)) for s, w in x["dropped"]),
                   tuple(NewOp(Op.parse(n["op"]), Op.parse(n["parent"]),
                               Morphism(n["morphism"]), bool(n["rediscovered"]))
                         for n in x["new"]))


@dataclass(frozen=True)
class PolicyResult:
    pools: Pools
    histories: Histories
    decisions: tuple[EdgeDecision, ...]

    def new_ops(self) -> list[tuple[str, int, NewOp]]:
        return [(d.cell_type, d.edge, n) for d in self.decisions for n in d.new]


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
             taken: set[Op], history: frozenset[Op]) -> NewOp | None:
    """One new op for an edge: an undiscovered child whenever any survivor has one, else a
    rediscovered (previously pruned) one, else None.

    Enumerated rather than retried: the reference draws parent and morphism up to 200 times
    looking for an undiscovered child before it takes a pruned one, which may rediscover
    although undiscovered children exist. Here the draw is made once among the undiscovered
    children, with the paper's distribution conditioned on them (exactly what unlimited
    retries would give); only when there are none, among the rediscoverable ones likewise.
    """
    proposals = [p for p in _proposals(survivors, constraints) if p[3] not in taken]
    for rediscovered in (False, True):
        options = [p for p in proposals if (p[3] in history) == rediscovered]
        if not options:
            continue
        weights = [p[0] for p in options]
        if not sum(weights) > 0:
            weights = [1.0] * len(options)
        (_, parent, morphism, child), = rng.choices(options, weights=weights, k=1)
        return NewOp(child, parent, morphism, rediscovered=rediscovered)
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
) -> PolicyResult:
    """Per edge: keep the ``candidates - morphs`` most probable ops (at least one conv unless
    ``final``), then add ``morphs`` morphed children of the survivors.

    When fewer new ops can be found than asked (every child of every survivor
    already in the pool), the best dropped ops are kept instead; only an edge
    that had fewer ops than the target to begin with ends up smaller.
    """
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
                new = _propose(survivors, constraints, rng, taken, history)
                if new is None:
                    break
                added.append(new)
                taken.add(new.op)
            # Too few new ops (a small constrained space): refill from the best dropped ones,
            # so survivors + new still meets the target.
            new_ops = {n.op for n in added}
            refill = [p for p in dropped if p[0] not in new_ops]
            refill = refill[: max(0, candidates - len(survivors) - len(added))]
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


def result_to_dict(result: PolicyResult) -> dict:
    """The JSON form of a decision (pools and histories as JSON text, as in the parquet files):
    used only where a decision leaves the process, i.e. into a Tune trial config."""
    return {"pools": pools_to_json(result.pools),
            "histories": histories_to_json(result.histories),
            "decisions": decisions_to_json(result.decisions)}


def result_from_dict(d: Mapping) -> PolicyResult:
    return PolicyResult(pools_from_json(d["pools"]), histories_from_json(d["histories"]),
                        decisions_from_json(d["decisions"]))


def decisions_to_json(decisions: Sequence[EdgeDecision]) -> list[dict]:
    return [d.to_dict() for d in decisions]


def decisions_from_json(raw: Sequence[Mapping]) -> tuple[EdgeDecision, ...]:
    return tuple(EdgeDecision.from_dict(x) for x in raw)


# The engine's per-cycle record (``Search.cycle_log`` entries, ``Search.cycle_metrics()``)
# holds native values under these keys; everything else in it is a JSON scalar.
def cycle_to_json(record: Mapping) -> dict:
    """A cycle record as plain JSON values (nested objects, not JSON text): the one encoding
    of a cycle for files (``cycles.jsonl``, ``metrics.jsonl``, checkpoints)."""
    out = dict(record)
    for key, encode in (("pools", pools_plain), ("pools_next", pools_plain),
                        ("histories", histories_plain), ("decisions", decisions_to_json)):
        if out.get(key) is not None:
            out[key] = encode(out[key])
    return out


def cycle_from_json(raw: Mapping) -> dict:
    """The inverse of :func:`cycle_to_json`."""
    out = dict(raw)
    for key, decode in (("pools", pools_from_json), ("pools_next", pools_from_json),
                        ("histories", histories_from_json), ("decisions", decisions_from_json)):
        if out.get(key) is not None:
            out[key] = decode(out[key])
    return out
