"""Pools as the parquet files store them: ``{cell_type: [[op str] per edge]}``.

The statistics are the engine's own (``prnas.space.pools``, pure Python, no
torch), applied to the persisted strings, so a results file missing a
statistic column can still be analysed and always agrees with a live search.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

from prnas.space.ops import Op
from prnas.space.pools import pool_statistics, pools_from_plain
from prnas.space.weights import softmax as softmax  # re-exported for the analysis modules

PoolsJSON = Mapping[str, Sequence[Sequence[str]]]


@lru_cache(maxsize=4096)
def parse_op(text: str) -> Op:
    return Op.parse(text)


def op_type(text: str) -> str:
    """skip, pool or conv: the coarse type the paper's op distribution counts."""
    return parse_op(text).type_name


def pool_stats(pools: PoolsJSON) -> dict[str, float]:
    """Per cell type: share of skip/pool/conv candidates, mean edge similarity, #candidates."""
    return pool_statistics(pools_from_plain(pools))
