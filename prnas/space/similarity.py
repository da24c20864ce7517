"""The paper's operation similarity (Sect. IV-B, Fig. 2), used to watch pools lose diversity.

The paper's figure was computed by the authors' reference implementation, so
this module scores exactly as that code does, to keep the numbers comparable:

* ops of different types (skip, pool, conv) score 0, two skips 1;
* otherwise ``(1 + k) / (1 + n)``, summing the scores ``k`` of the ``n``
  configuration parameters: a pool has two (kernel, always 3 here, and type),
  a conv three (kernel, dilation, expansion list);
* an expansion list earns partial credit: with ``m`` the length of the shorter
  list, ``1/(m+1)`` for equal lengths plus ``1/(m+1)`` per leading position
  (of the shorter list) with equal factors;
* a pool's (candidate set's) similarity is the mean over *all ordered pairs,
  each op with itself included* (``self_pairs=True``, the reference's and
  Fig. 2's statistic). ``self_pairs=False`` gives the mean over distinct
  unordered pairs only, which reads 0 for a maximally diverse set.

Worked example, the paper's initial pool (max pool, avg pool, skip, conv_k3_d1):
max vs avg scores (1 + 1 + 0) / 3 = 2/3, every other distinct pair 0. With self
pairs: (4 * 1 + 2 * 2/3) / 16 = 1/3; distinct pairs only: (2/3) / 6 = 1/9.
"""

from __future__ import annotations

from itertools import combinations, product
from statistics import fmean

from prnas.space.ops import Op


def _expansion_similarity(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """1 for equal lists (both empty included), else the reference's partial credit."""
    n = min(len(a), len(b)) + 1
    return ((len(a) == len(b)) + sum(x == y for x, y in zip(a, b))) / n


def similarity(a: Op, b: Op) -> float:
    """0 across types; otherwise (1 + k) / (1 + n) for k of n equal configuration parameters."""
    if a.type_name != b.type_name:
        return 0.0
    if a.type_name == "skip":
        return 1.0
    if a.type_name == "pool":
        # Parameters: kernel (3 for both pool kinds) and type (max or avg).
        return (1 + 1 + (a.kind == b.kind)) / 3
    equal = (
        (a.kernel == b.kernel)
        + (a.dilation == b.dilation)
        + _expansion_similarity(a.expansions, b.expansions)
    )
    return (1 + equal) / 4


def pool_similarity(ops: list[Op] | tuple[Op, ...], self_pairs: bool = True) -> float:
    """Mean similarity of a candidate set; 1.0 for a single op (and for an empty set).

    ``self_pairs``: over all ordered pairs including each op with itself, as the
    paper's Fig. 2 (reference code); otherwise over distinct unordered pairs.
    """
    pairs = list(product(ops, ops)) if self_pairs else list(combinations(ops, 2))
    if not pairs:
        return 1.0
    return fmean(similarity(a, b) for a, b in pairs)
