"""The paper's operation similarity (Sect. IV-B), used to watch pools lose diversity."""

from __future__ import annotations

from itertools import combinations
from statistics import fmean

from prnas.space.ops import Op


def _expansion_similarity(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """Partial credit for expansion lists: the share of positions with equal factors.

    The paper only says expansions "may be partly similar"; comparing position
    by position over the longer list gives 1 for equal lists (both empty
    included) and degrades smoothly with each differing or missing block.
    """
    n = max(len(a), len(b))
    if n == 0:
        return 1.0
    return sum(x == y for x, y in zip(a, b)) / n


def similarity(a: Op, b: Op) -> float:
    """0 across types; otherwise (1 + k) / (1 + n) for k of n equal configuration parameters."""
    if a.type_name != b.type_name:
        return 0.0
    if a.type_name == "skip":
        return 1.0
    if a.type_name == "pool":
        return (1 + (a.kind == b.kind)) / 2
    equal = (
        (a.kernel == b.kernel)
        + (a.dilation == b.dilation)
        + _expansion_similarity(a.expansions, b.expansions)
    )
    return (1 + equal) / 4


def pool_similarity(ops: list[Op] | tuple[Op, ...]) -> float:
    """Mean pairwise similarity; a pool of one op is perfectly homogeneous (1.0)."""
    pairs = list(combinations(ops, 2))
    if not pairs:
        return 1.0
    return fmean(similarity(a, b) for a, b in pairs)
