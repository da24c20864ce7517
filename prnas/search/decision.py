"""The decision after one cycle, as a function of the config and plain values only.

Both the in-process engine and the Ray scheduler call this, so the pools a
Tune trial gets are exactly those the engine would have chosen for itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prnas.search.config import SearchConfig
from prnas.search.policy import cycle_rng, prune_and_replace
from prnas.space.fates import PolicyResult
from prnas.space.ops import Op
from prnas.space.pools import Histories, Pools


def decide_cycle(cfg: SearchConfig, cycle: int, pools: Pools,
                 alphas: Mapping[str, Sequence[Sequence[float]]], histories: Histories,
                 boost: Mapping[str, Mapping[Op, float]] | None = None) -> PolicyResult:
    """Prune and replace after ``cycle`` (0-based), seeded by (cfg.seed, cycle); ``boost``:
    population share's factors on the proposals (:mod:`prnas.search.population`)."""
    if not 0 <= cycle < len(cfg.schedule):
        raise ValueError(f"cycle {cycle} outside the schedule of {len(cfg.schedule)} cycles")
    spec = cfg.schedule[cycle]
    return prune_and_replace(
        pools, alphas, histories, candidates=spec.candidates, morphs=spec.morphs,
        constraints=cfg.resolved_constraints(), rng=cycle_rng(cfg.seed, cycle),
        final=cycle == len(cfg.schedule) - 1, boost=boost,
        reference=cfg.behaviour == "reference",
    )
