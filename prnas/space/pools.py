"""Candidate pools and per-edge histories as values, and their plain-JSON form.

``Pools`` maps a cell type ("normal", "reduce") to one tuple of ops per edge;
edges are numbered node by node (node j has j + 2 inputs), 14 for 4 nodes.
Histories hold every op that was ever in an edge's pool, so the policy can
refuse to rediscover what was already tried there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from statistics import fmean

from prnas.space.ops import INITIAL_POOL, Op
from prnas.space.similarity import pool_similarity

CELL_TYPES: tuple[str, ...] = ("normal", "reduce")
Pools = dict[str, tuple[tuple[Op, ...], ...]]
Histories = dict[str, tuple[frozenset[Op], ...]]


def num_edges(nodes: int) -> int:
    return sum(j + 2 for j in range(nodes))


def edge_inputs(nodes: int) -> list[tuple[int, int]]:
    """(node, input) for every edge in order; input 0/1 are the cell inputs, i >= 2 node i-2."""
    return [(j, i) for j in range(nodes) for i in range(j + 2)]


def initial_pools(nodes: int, ops: Sequence[Op] = INITIAL_POOL) -> Pools:
    return {t: tuple(tuple(ops) for _ in range(num_edges(nodes))) for t in CELL_TYPES}


def initial_histories(pools: Pools) -> Histories:
    return {t: tuple(frozenset(edge) for edge in edges) for t, edges in pools.items()}


def pools_plain(pools: Mapping[str, Sequence[Sequence[Op]]]) -> dict[str, list[list[str]]]:
    """Pools as plain JSON values: ``{cell_type: [[op str] per edge]}``."""
    return {t: [[str(op) for op in edge] for edge in edges] for t, edges in pools.items()}


def pools_from_plain(raw: Mapping[str, Sequence[Sequence[str]]]) -> Pools:
    return {t: tuple(tuple(Op.parse(s) for s in edge) for edge in edges)
            for t, edges in raw.items()}


def histories_plain(hist: Histories) -> dict[str, list[list[str]]]:
    return {t: [sorted(str(op) for op in edge) for edge in edges] for t, edges in hist.items()}


def histories_from_plain(raw: Mapping[str, Sequence[Sequence[str]]]) -> Histories:
    return {t: tuple(frozenset(Op.parse(s) for s in edge) for edge in edges)
            for t, edges in raw.items()}


def check_alphas_match(pools: Pools, alphas: Mapping[str, Sequence[Sequence[float]]]) -> None:
    """Refuse mismatched shapes instead of truncating them as zip would (a reference-code bug)."""
    for t, edges in pools.items():
        if t not in alphas or len(alphas[t]) != len(edges):
            raise ValueError(f"alphas for cell type {t!r} do not have one vector per edge")
        for e, (edge, a) in enumerate(zip(edges, alphas[t])):
            if len(edge) != len(a):
                raise ValueError(
                    f"{t} edge {e}: {len(edge)} candidates but {len(a)} architecture weights"
                )


def pool_statistics(pools: Pools) -> dict[str, float]:
    """Op-type shares, mean edge similarity and #candidates per cell type (paper Fig. 2)."""
    out: dict[str, float] = {}
    for t, edges in pools.items():
        ops = [op for edge in edges for op in edge]
        for kind in ("skip", "pool", "conv"):
            out[f"ratio_{t}_{kind}"] = sum(op.type_name == kind for op in ops) / max(1, len(ops))
        sims = [pool_similarity(edge) for edge in edges]
        out[f"similarity_{t}"] = fmean(sims) if sims else math.nan
        out[f"candidates_{t}"] = len(ops)
    return out
