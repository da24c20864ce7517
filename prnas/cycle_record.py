"""The one record of a trained cycle, and its one plain-JSON form.

Made by the engine, closed by the cycle's decision, given the trial's identity by
the Tune layer; :meth:`CycleRecord.to_json` is what the checkpoint's cycle log,
``cycles.jsonl`` (of a trial or an in-process search) and the Tune result hold, and (with its nested
values as JSON text) a row of ``results.parquet`` (:mod:`prnas.records`). Pure
Python on the space's values: the in-process engine imports it without pandas.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from prnas.space.fates import EdgeDecision, PolicyResult
from prnas.space.pools import (
    Histories,
    Pools,
    histories_from_plain,
    histories_plain,
    pools_from_plain,
    pools_plain,
)

#: The nested values of a record (objects in JSON, JSON text in a parquet cell).
NESTED = ("epoch_metrics", "pools", "pools_next", "alphas", "decisions", "histories")


@dataclass(frozen=True)
class CycleRecord:
    """One cycle of one search, made by the engine (``Search.cycle_metrics``), closed by its
    decision (:meth:`decided`) and given the trial's identity by the Tune layer
    (:meth:`with_columns`).

    Its one plain-JSON form (:meth:`to_json`, a flat object) is the checkpoint's cycle log,
    a line of ``cycles.jsonl``, the Tune result and, with nested values
    as JSON text, a row of ``results.parquet``. ``columns`` holds every scalar column.
    """

    cycle: int
    pools: Pools
    alphas: dict[str, list[list[float]]]
    histories: Histories
    epoch_metrics: list[dict[str, Any]] = field(default_factory=list)
    columns: dict[str, Any] = field(default_factory=dict)
    decisions: tuple[EdgeDecision, ...] | None = None  # None: not decided (yet)
    pools_next: Pools | None = None

    def __getitem__(self, column: str) -> Any:
        """A scalar column (``record["valid_acc"]``), as in the record's row."""
        return self.cycle if column == "cycle" else self.columns[column]

    def get(self, column: str, default: Any = None) -> Any:
        return self.cycle if column == "cycle" else self.columns.get(column, default)

    def with_columns(self, **columns: Any) -> CycleRecord:
        return replace(self, columns={**self.columns, **columns})

    def decided(self, result: PolicyResult) -> CycleRecord:
        """This cycle closed by ``result``: its fates and the pools after it."""
        return replace(self, decisions=result.decisions, pools_next=result.pools)

    def decision(self, cell_type: str, edge: int) -> EdgeDecision | None:
        for d in self.decisions or ():
            if d.cell_type == cell_type and d.edge == edge:
                return d
        return None

    def to_json(self) -> dict[str, Any]:
        return {"cycle": self.cycle, **self.columns,
                "pools": pools_plain(self.pools), "alphas": self.alphas,
                "histories": histories_plain(self.histories),
                "epoch_metrics": self.epoch_metrics,
                "decisions": (None if self.decisions is None
                              else [d.to_plain() for d in self.decisions]),
                "pools_next": None if self.pools_next is None else pools_plain(self.pools_next)}

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> CycleRecord:
        """The inverse of :meth:`to_json`; a nested value left out of a row reads as empty."""
        nested = {k: row.get(k) for k in NESTED}
        return cls(
            cycle=int(row["cycle"]), pools=pools_from_plain(nested["pools"] or {}),
            alphas=nested["alphas"] or {},
            histories=histories_from_plain(nested["histories"] or {}),
            epoch_metrics=nested["epoch_metrics"] or [],
            columns={k: v for k, v in row.items() if k != "cycle" and k not in NESTED},
            decisions=(None if nested["decisions"] is None
                       else tuple(EdgeDecision.from_plain(d) for d in nested["decisions"])),
            pools_next=(None if nested["pools_next"] is None
                        else pools_from_plain(nested["pools_next"])))
