"""How many operations a search discovered, against how many it could have (Table III, #ops).

The paper lists, per normal cell, "discovered / discoverable" operations:
DL 15/15, DR 26/39, UR 45/83. *Discovered* is the number of distinct ops that
ever entered any pool of the normal cell (the four initial ops included).
*Discoverable* is skip + the two poolings + every conv configuration
reachable from ``conv_k3_d1`` within the search's morph budget, i.e. as many
morphing steps as there were cycles that added morphisms (5 in Table I: a
child added after cycle c can be morphed again after cycle c + 1, no sooner).

With the paper's way of counting reachable convs (``paper_counting=True``:
1x1 kernels with dilation 2 count as configurations of their own, see
``prnas.space.counting``), 5 steps give 12 / 36 / 80 convs (Table II), hence
15 / 39 / 83 (Table III). Functional counting (a 1x1 kernel is the same
function at any dilation) gives 15 / 35 / 76; since a search can only ever
discover functionally distinct ops, that is the honest upper bound, but it
does not reproduce the paper's numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import pandas as pd

from prnas.space import preset, reachable
from prnas.space.constraints import PRESETS

NON_CONV_OPS = 3  # skip, max_pool_3x3, avg_pool_3x3: never morphed, always discoverable


def discovered_ops(pool_history: Iterable[Mapping[str, Sequence[Sequence[str]]] | None],
                   cell_type: str = "normal") -> set[str]:
    """Distinct ops that were in any edge's pool of ``cell_type`` in any of the given pools."""
    seen: set[str] = set()
    for pools in pool_history:
        if pools:
            for edge in pools.get(cell_type, ()):
                seen.update(edge)
    return seen


def trial_pool_history(rows: pd.DataFrame) -> list[Mapping | None]:
    """Every pool a trial had, in order: each cycle's trained pools, then what the decision left."""
    rows = rows.sort_values("cycle")
    history: list[Mapping | None] = []
    for pools, after in zip(rows["pools"], rows["pools_next"]):
        history += [pools, after]
    return history


def morph_rounds(rows: pd.DataFrame) -> int:
    """Cycles after which morphisms were added: the depth budget of a child's lineage.

    Taken from a ``morphs`` column when the writer stores the schedule, else
    counted from the decisions (cycles where some edge got a new op). An
    unfinished trial counts the rounds so far.
    """
    if "morphs" in rows.columns and rows["morphs"].notna().any():
        return int((pd.to_numeric(rows["morphs"], errors="coerce").fillna(0) > 0).sum())
    return sum(any(d.get("new") for d in (decisions or [])) for decisions in rows["decisions"])


def discoverable_ops(space: str, steps: int, paper_counting: bool = True) -> int | None:
    """skip + 2 pools + convs reachable within ``steps`` morphisms; None for a non-preset space."""
    if not isinstance(space, str) or space.upper() not in PRESETS:
        return None
    return len(reachable(preset(space), steps, paper_counting=paper_counting)) + NON_CONV_OPS
