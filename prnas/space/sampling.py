"""Random cells from the space a search explores: the baseline every NAS result needs.

A searched cell is only evidence for the search if it beats cells drawn at
random from the *same* space (Li and Talwalkar, 2019). "The same space" is
what the search could have returned under its constraints and schedule:

- each edge's op is uniform over skip, ``max_pool_3x3``, ``avg_pool_3x3`` and
  the convs reachable from ``conv_k3_d1`` within ``morph_rounds`` morphisms
  (functionally distinct ones, as a search can only hold those; the number of
  cycles after which morphisms are added, 5 in the paper's Table I);
- each node's two inputs are a uniform pair of *distinct* predecessors (the two
  cell inputs and the earlier nodes), as the derived genotype keeps the two
  strongest of a node's incoming edges; the pairs are listed by input, as
  derived genotypes list them.

All choices are independent, so every one of the
``prod_{n=2}^{M+1} C(n,2) K^2`` cells (:func:`prnas.space.search_space_size`)
is equally likely, in both cell types alike.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

from prnas.space.constraints import Constraints
from prnas.space.counting import reachable
from prnas.space.genotype import Genotype
from prnas.space.ops import Op

PAPER_MORPH_ROUNDS = 5  # Table I adds morphisms after cycles 1..5
#: The most cells one request draws: a baseline needs tens, and every cell is held in
#: memory (and retrained), so a mistyped count fails at once instead of filling memory.
MAX_CELLS = 100_000
KIND = "random"


def sampleable_ops(constraints: Constraints, morph_rounds: int) -> tuple[Op, ...]:
    """Skip, the two pools, then the reachable convs in canonical-string order."""
    convs = [Op.parse(s) for s in reachable(constraints, morph_rounds, paper_counting=False)]
    return (Op.skip(), Op.max_pool(), Op.avg_pool(), *convs)


def input_pairs(node: int) -> list[tuple[int, int]]:
    """The input pairs node ``node`` (0-based) may keep: two distinct earlier states."""
    return list(combinations(range(node + 2), 2))


def sample_cell(rng: random.Random, ops: Sequence[Op], nodes: int) -> tuple[tuple[Op, int], ...]:
    spec: list[tuple[Op, int]] = []
    for node in range(nodes):
        a, b = rng.choice(input_pairs(node))
        spec += [(rng.choice(ops), a), (rng.choice(ops), b)]
    return tuple(spec)


@dataclass(frozen=True)
class SampleSpec:
    """What a random cell is drawn from; recorded in every sampled genotype."""

    space: str
    constraints: Constraints
    morph_rounds: int = PAPER_MORPH_ROUNDS
    nodes: int = 4

    def __post_init__(self) -> None:
        if self.morph_rounds < 0:
            raise ValueError(f"morph rounds must be >= 0, got {self.morph_rounds}")
        if self.nodes < 1:
            raise ValueError(f"nodes must be >= 1, got {self.nodes}")


def sample_genotypes(spec: SampleSpec, count: int, seed: int = 0) -> list[Genotype]:
    """``count`` independent uniform cells from one ``random.Random(seed)`` stream.

    The stream is consumed in order, so the first k of ``count`` cells are the
    cells a request for k gives: growing a baseline keeps the cells it had.
    Names are ``random-<space>-s<seed>-<i>``.
    """
    if not 0 <= count <= MAX_CELLS:
        raise ValueError(f"count must be in 0..{MAX_CELLS:,}, got {count:,}")
    ops = sampleable_ops(spec.constraints, spec.morph_rounds)
    rng = random.Random(seed)
    concat = tuple(range(2, spec.nodes + 2))
    out = []
    for i in range(count):
        normal = sample_cell(rng, ops, spec.nodes)
        reduce = sample_cell(rng, ops, spec.nodes)
        out.append(Genotype(
            normal=normal, reduce=reduce, normal_concat=concat, reduce_concat=concat,
            name=f"random-{spec.space}-s{seed}-{i}",
            source=f"prnas.space sample: space {spec.space}, {spec.morph_rounds} morph rounds, "
                   f"seed {seed}, cell {i}",
            extra={"kind": KIND, "space": spec.space, "morph_rounds": spec.morph_rounds,
                   "sample_seed": seed, "sample_index": i, "ops_per_edge": len(ops)},
        ))
    return out
