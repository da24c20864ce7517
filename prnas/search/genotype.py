"""Derive the discrete cell from the last cycle's pools and architecture weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prnas.space.genotype import Genotype
from prnas.space.pools import CELL_TYPES, Pools, check_alphas_match, edge_inputs
from prnas.space.weights import softmax


def derive_genotype(pools: Pools, alphas: Mapping[str, Sequence[Sequence[float]]], nodes: int,
                    name: str = "searched", source: str = "",
                    extra: Mapping[str, object] | None = None) -> Genotype:
    """Top op per edge; per node the 2 incoming edges with the highest max-softmax weight.

    Ties keep the earlier edge, so the result is a deterministic function of its inputs.
    """
    check_alphas_match(pools, alphas)
    cells = {}
    inputs = edge_inputs(nodes)
    for t in CELL_TYPES:
        per_node: dict[int, list[tuple[float, int, object]]] = {}
        for e, (edge, a) in enumerate(zip(pools[t], alphas[t])):
            w = softmax(a)
            best = max(range(len(edge)), key=lambda i: (w[i], -i))
            node, src = inputs[e]
            per_node.setdefault(node, []).append((w[best], src, edge[best]))
        spec = []
        for j in range(nodes):
            ranked = sorted(per_node[j], key=lambda x: (-x[0], x[1]))[: min(2, j + 2)]
            spec.extend((op, src) for _, src, op in sorted(ranked, key=lambda x: x[1]))
        cells[t] = tuple(spec)
    concat = tuple(range(2, nodes + 2))
    return Genotype(normal=cells["normal"], reduce=cells["reduce"], normal_concat=concat,
                    reduce_concat=concat, name=name, source=source, extra=dict(extra or {}))
