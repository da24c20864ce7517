"""Population prune-and-replace: the seeds of one space decide a cycle together.

The paper's search is one seed; a fan-out runs several, and each seed's cell is
a lottery. Here the seeds of one space are a population that the Tune scheduler
decides for once every live member has reported the cycle (a synchronous
barrier, as in Population Based Training's synchronous mode), with three
mechanisms, each off unless configured (``SearchConfig.population``):

- **share**: trial i's replace step multiplies each child's proposal
  probability by ``exp(temperature * s)``, ``s`` the child op's mean softmax
  weight over the edges of the same cell type in the *other* members (0 where
  an edge lacks it), and renormalises; temperature 0 is the paper's rule. The
  child still inherits its weights from its own trial's parent.
- **exploit**: after chosen cycles the worst ``fraction`` of the members by
  supernet validation accuracy each take over the state of one of the best
  ``fraction`` (drawn uniformly), as PBT copies a checkpoint: its network
  weights, pools and histories, and its alphas, from which they decide the next
  pools (alphas, optimisers and batch size restart every cycle anyway). They
  keep their own random streams and decide with their own decision RNG, so they
  explore other morph branches from the best state found.
- **halve**: after chosen cycles the worst ``fraction`` of the members stop
  (successive halving); at least one goes on.

Everything here is a pure function of the members' cycle records, configs and
trial ids, so a driver restarted at the barrier decides the very same way.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from prnas.cycle_record import CycleRecord
from prnas.search.config import PopulationConfig, SearchConfig
from prnas.search.decision import decide_cycle
from prnas.space.fates import EXPLOIT_FROM, HALVED, SHARE, PolicyResult
from prnas.space.ops import Op
from prnas.space.weights import softmax


@dataclass(frozen=True)
class Member:
    """One live seed at the barrier: its trial id, config and the cycle it just trained."""

    trial_id: str
    cfg: SearchConfig
    record: CycleRecord


@dataclass(frozen=True)
class Outcome:
    """What the population decided for one member after a cycle.

    ``decision``: its prune-and-replace (None when halved); ``source``: the trial whose
    state it takes over first (exploit), else None; ``event``: what happened to it, for
    ``results.parquet``'s ``population_event`` and the console (None: nothing).
    """

    decision: PolicyResult | None
    source: str | None = None
    event: str | None = None


def op_strengths(records: Sequence[CycleRecord]) -> dict[str, dict[Op, float]]:
    """Per cell type, each op's mean softmax weight over the records' edges of that type
    (an edge without the op counts 0)."""
    totals: dict[str, dict[Op, float]] = {}
    edges: dict[str, int] = {}
    for r in records:
        for t, pools in r.pools.items():
            for edge, a in zip(pools, r.alphas[t]):
                edges[t] = edges.get(t, 0) + 1
                for op, w in zip(edge, softmax(a)):
                    totals.setdefault(t, {})[op] = totals.get(t, {}).get(op, 0.0) + w
    return {t: {op: v / edges[t] for op, v in ops.items()} for t, ops in totals.items()}


def share_boost(others: Sequence[CycleRecord], temperature: float
                ) -> dict[str, dict[Op, float]]:
    """The proposal factors share gives one member: ``exp(temperature * strength)``."""
    return {t: {op: math.exp(temperature * s) for op, s in ops.items()}
            for t, ops in op_strengths(others).items()}


def _finite(value: object) -> float:
    v = float(value)  # type: ignore[arg-type]
    return v if math.isfinite(v) else -math.inf


def _count(n: int, fraction: float) -> int:
    return int(math.floor(n * fraction + 1e-9))


def decide_population(members: Sequence[Member], cycle: int, population: PopulationConfig
                      ) -> dict[str, Outcome]:
    """Every member's outcome after ``cycle`` (0-based; never the last cycle)."""
    if not members:
        return {}
    # By trial id first: nothing (not even a float sum's rounding) depends on arrival order.
    members = sorted(members, key=lambda m: m.trial_id)
    n_cycles = len(members[0].cfg.schedule)
    # Best first (an accuracy that is not a number ranks last); ties by trial id.
    ranked = sorted(members, key=lambda m: (-_finite(m.record["valid_acc"]), m.trial_id))
    rng = random.Random("prnas-population-" + ",".join(sorted(m.trial_id for m in members))
                        + f"-{cycle}")
    out: dict[str, Outcome] = {}
    live = list(ranked)
    if cycle + 1 in population.halve_after(n_cycles):
        stop = min(_count(len(live), population.halve.fraction), len(live) - 1)
        for m in live[len(live) - stop:]:
            out[m.trial_id] = Outcome(None, event=HALVED)
        live = live[:len(live) - stop]
    sources: dict[str, Member] = {}
    if cycle + 1 in population.exploit_after(n_cycles) and len(live) >= 2:
        k = min(max(1, _count(len(live), population.exploit.fraction)), len(live) // 2)
        best = live[:k]
        for m in live[len(live) - k:]:
            sources[m.trial_id] = best[rng.randrange(k)]
    by_id = {m.trial_id: m for m in members}
    for m in live:
        src = sources.get(m.trial_id, m)
        events = [EXPLOIT_FROM + src.trial_id] if src is not m else []
        boost = None
        if population.share is not None:
            boost = share_boost([o.record for o in members if o.trial_id != m.trial_id],
                                population.share.temperature)
            events.append(SHARE)
        r = by_id[src.trial_id].record
        decision = decide_cycle(m.cfg, cycle, r.pools, r.alphas, r.histories, boost)
        out[m.trial_id] = Outcome(decision, None if src is m else src.trial_id,
                                  "; ".join(events) or None)
    return out


def population_key(cfg: SearchConfig) -> str:
    """The population a trial belongs to: the seeds of one space."""
    return cfg.space
