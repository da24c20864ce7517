"""The search space as pure data: op values, constraints, morphisms, counting, similarity.

Nothing here imports torch, so the whole space can be enumerated and tested in
milliseconds and the pruning policy stays a pure function of plain values.
"""

from prnas.space.constraints import PRESETS, Constraints, preset
from prnas.space.counting import reachable, search_space_size
from prnas.space.morphisms import Morphism, apply_morphism, available_morphisms
from prnas.space.ops import INITIAL_POOL, START_OP, Op
from prnas.space.similarity import pool_similarity, similarity

__all__ = [
    "INITIAL_POOL",
    "PRESETS",
    "START_OP",
    "Constraints",
    "Morphism",
    "Op",
    "apply_morphism",
    "available_morphisms",
    "pool_similarity",
    "preset",
    "reachable",
    "search_space_size",
    "similarity",
]
