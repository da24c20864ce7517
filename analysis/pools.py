"""Pure helpers over pools as the parquet files store them: ``{cell_type: [[op str] per edge]}``.

The search engine computes the same statistics from ``Op`` values; these work
on the persisted strings so that a results file missing a statistic column can
still be analysed, and they reuse the space's own similarity definition.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from statistics import fmean

from prnas.space.ops import Op
from prnas.space.similarity import pool_similarity

OP_TYPES = ("skip", "pool", "conv")
CELL_TYPES = ("normal", "reduce")
PoolsJSON = Mapping[str, Sequence[Sequence[str]]]


@lru_cache(maxsize=4096)
def parse_op(text: str) -> Op:
    return Op.parse(text)


def op_type(text: str) -> str:
    """skip, pool or conv: the coarse type the paper's op distribution counts."""
    return parse_op(text).type_name


def pool_stats(pools: PoolsJSON) -> dict[str, float]:
    """Per cell type: share of skip/pool/conv candidates, mean edge similarity, #candidates."""
    out: dict[str, float] = {}
    for t, edges in pools.items():
        ops = [op for edge in edges for op in edge]
        for kind in OP_TYPES:
            out[f"ratio_{t}_{kind}"] = sum(op_type(op) == kind for op in ops) / max(1, len(ops))
        sims = [pool_similarity([parse_op(op) for op in edge]) for edge in edges]
        out[f"similarity_{t}"] = fmean(sims) if sims else math.nan
        out[f"candidates_{t}"] = len(ops)
    return out


def softmax(xs: Sequence[float]) -> list[float]:
    if not xs:
        return []
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    s = sum(e)
    return [v / s for v in e]


def edge_inputs(nodes: int) -> list[tuple[int, int]]:
    """(node, input) per edge in storage order: node j has j + 2 inputs (0, 1 = cell inputs)."""
    return [(j, i) for j in range(nodes) for i in range(j + 2)]


def nodes_for_edges(n_edges: int) -> int:
    """Intermediate nodes of a cell with ``n_edges`` edges (14 -> 4); error if none fits."""
    nodes, total = 0, 0
    while total < n_edges:
        total += nodes + 2
        nodes += 1
    if total != n_edges:
        raise ValueError(f"{n_edges} edges is not a DARTS cell (2 + 3 + ... inputs per node)")
    return nodes
