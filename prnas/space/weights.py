"""Architecture weights: the softmax of an edge's alphas, in pure Python.

Here, not in the search, because the on-disk records (candidates' weights) and the
analysis read it without importing the search engine or torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def softmax(xs: Sequence[float]) -> list[float]:
    if not xs:
        return []
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    s = sum(e)
    return [v / s for v in e]
