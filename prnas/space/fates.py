"""What a cycle's decision did to each edge, as values: survived, dropped, new.

The vocabulary every layer uses (the policy that makes decisions, the engine
that applies them, the records and the analysis that read them back), so it
lives below all of them. ``to_plain``/``from_plain`` are the one JSON form.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prnas.space.morphisms import Morphism
from prnas.space.ops import Op
from prnas.space.pools import (
    Histories,
    Pools,
    histories_from_plain,
    histories_plain,
    pools_from_plain,
    pools_plain,
)

# What a population did to a trial after a cycle (``results.parquet``'s
# ``population_event``, parts joined by "; "): written by prnas.search.population,
# read back by analysis.population.
HALVED = "halved"
EXPLOIT_FROM = "exploit from "  # + the trial whose state it took over
SHARE = "share"


@dataclass(frozen=True)
class NewOp:
    op: Op
    parent: Op
    morphism: Morphism
    rediscovered: bool  # accepted although it had been in this edge's pool before
    # With population share (prnas.search.population): the chosen proposal's probability
    # under the paper's rule and under the shared one; None without share.
    p_paper: float | None = None
    p_shared: float | None = None

    def to_plain(self) -> dict:
        d = {"op": str(self.op), "parent": str(self.parent), "morphism": str(self.morphism),
             "rediscovered": self.rediscovered}
        if self.p_shared is not None:
            d.update(p_paper=self.p_paper, p_shared=self.p_shared)
        return d

    @classmethod
    def from_plain(cls, n: Mapping) -> NewOp:
        return cls(Op.parse(n["op"]), Op.parse(n["parent"]), Morphism(n["morphism"]),
                   bool(n["rediscovered"]), n.get("p_paper"), n.get("p_shared"))


@dataclass(frozen=True)
class EdgeDecision:
    """One edge's fate after a cycle."""

    cell_type: str
    edge: int
    survived: tuple[tuple[Op, float], ...]
    dropped: tuple[tuple[Op, float], ...]
    new: tuple[NewOp, ...]

    def to_plain(self) -> dict:
        return {
            "cell_type": self.cell_type,
            "edge": self.edge,
            "survived": [[str(op), w] for op, w in self.survived],
            "dropped": [[str(op), w] for op, w in self.dropped],
            "new": [n.to_plain() for n in self.new],
        }

    @classmethod
    def from_plain(cls, x: Mapping) -> EdgeDecision:
        return cls(x["cell_type"], int(x["edge"]),
                   tuple((Op.parse(s), float(w)) for s, w in x["survived"]),
                   tuple((Op.parse(s), float(w)) for s, w in x["dropped"]),
                   tuple(NewOp.from_plain(n) for n in x["new"]))


def lineage(decisions: Iterable[Iterable[EdgeDecision]]) -> dict[tuple[str, int], dict[Op, NewOp]]:
    """Per (cell type, edge), each op ever added and the addition that last made it (a
    rediscovery names its new parent), over the decisions of a search's cycles in order:
    what the reference code re-initialises children from (``behaviour: reference``)."""
    out: dict[tuple[str, int], dict[Op, NewOp]] = {}
    for cycle in decisions:
        for d in cycle:
            for n in d.new:
                out.setdefault((d.cell_type, d.edge), {})[n.op] = n
    return out


@dataclass(frozen=True)
class PolicyResult:
    """A whole decision: the pools and histories after it and each edge's fate."""

    pools: Pools
    histories: Histories
    decisions: tuple[EdgeDecision, ...]

    def new_ops(self) -> list[tuple[str, int, NewOp]]:
        return [(d.cell_type, d.edge, n) for d in self.decisions for n in d.new]

    def to_plain(self) -> dict:
        return {"pools": pools_plain(self.pools), "histories": histories_plain(self.histories),
                "decisions": [d.to_plain() for d in self.decisions]}

    @classmethod
    def from_plain(cls, d: Mapping) -> PolicyResult:
        return cls(pools_from_plain(d["pools"]), histories_from_plain(d["histories"]),
                   tuple(EdgeDecision.from_plain(x) for x in d["decisions"]))
