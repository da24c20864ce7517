"""Where each candidate of one edge came from, and when it left (the prune-and-replace story).

Built from ``candidates.parquet``: each candidate row says who was in the pool
in a cycle and how strong, whether it was ``new`` (and from which ``parent``,
by which ``morphism``) and whether the cycle's decision left it ``survived``
or ``dropped``. Those fates are worked out once, by
:func:`prnas.records.candidate_fates` (the writer's function; given results
rows only, the same function derives them). An op that is dropped and later
rediscovered gets one row per stay ("stint"), so nothing is merged away.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from analysis.pools import op_type
from prnas.cycle_record import CycleRecord
from prnas.records import DROPPED, candidate_fates

LINEAGE_COLUMNS = [
    "op", "type", "entered_cycle", "parent", "morphism", "rediscovered", "last_cycle",
    "dropped_after", "first_weight", "last_weight", "final",
]
TYPE_COLORS = {"skip": "#7f7f7f", "pool": "#2ca02c", "conv": "#1f77b4"}


def trial_candidates(rows: pd.DataFrame) -> pd.DataFrame:
    """candidates.parquet rows of one trial from its results rows, by the writer's function."""
    return pd.DataFrame(candidate_fates(CycleRecord.from_json(r)
                                        for r in rows.to_dict("records")))


def edge_lineage(rows: pd.DataFrame, cell_type: str = "normal", edge: int = 0,
                 candidates: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per stay of an op in the pool of (``cell_type``, ``edge``) of one trial.

    ``rows`` are the trial's results rows; ``candidates`` its rows of
    ``candidates.parquet`` (:func:`analysis.loaders.load_candidates`), derived from
    ``rows`` when not given. Columns: ``op``, ``type`` (skip/pool/conv),
    ``entered_cycle`` (first cycle it was trained in), ``parent`` and ``morphism``
    (NA for the initial ops), ``rediscovered`` (it had been in this edge's pool
    before), ``last_cycle`` (last cycle trained), ``dropped_after`` (the cycle whose
    decision removed it; NA while it stays), ``first_weight``/``last_weight``
    (softmax weight in those cycles), ``final`` (in the pool after the trial's last
    decision).
    """
    rows = rows.sort_values("cycle")
    if rows.empty:
        raise ValueError("no rows for this trial")
    first_pools = rows["pools"].iloc[0] or {}
    if cell_type not in first_pools:
        raise ValueError(f"cell type {cell_type!r} not in the pools "
                         f"(has {', '.join(first_pools) or 'none'})")
    n_edges = len(first_pools[cell_type])
    if not 0 <= edge < n_edges:
        raise ValueError(f"edge {edge} out of range: {cell_type} cells have {n_edges} edges")
    cands = trial_candidates(rows) if candidates is None else candidates
    cands = cands[(cands["cell_type"] == cell_type) & (cands["edge"] == edge)]
    stints: list[dict] = []
    open_: dict[str, dict] = {}
    for cycle, group in cands.sort_values(["cycle", "position"]).groupby("cycle", sort=True):
        for c in group.itertuples(index=False):
            w = float(c.weight)
            new = bool(pd.notna(c.new) and c.new)
            if c.op in open_ and not new:
                open_[c.op]["last_cycle"], open_[c.op]["last_weight"] = int(cycle), w
                continue
            stint = {"op": c.op, "type": op_type(c.op), "entered_cycle": int(cycle),
                     "parent": c.parent if new else None,
                     "morphism": c.morphism if new else None,
                     "rediscovered": bool(new and pd.notna(c.rediscovered) and c.rediscovered),
                     "last_cycle": int(cycle), "dropped_after": None,
                     "first_weight": w, "last_weight": w, "final": False}
            stints.append(stint)
            open_[c.op] = stint
        for c in group.itertuples(index=False):
            if pd.notna(c.status) and c.status == DROPPED and c.op in open_:
                open_.pop(c.op)["dropped_after"] = int(cycle)
    # New ops of the trial's last decision that were never trained (an interrupted trial):
    # not in candidates.parquet, which holds trained candidates only.
    last = CycleRecord.from_json(rows.iloc[-1].to_dict())
    decision = last.decision(cell_type, edge)
    survivors = set((last.pools_next or {}).get(cell_type, [()] * n_edges)[edge])
    for how in decision.new if decision else ():
        if how.op in survivors and str(how.op) not in open_:
            stints.append({"op": str(how.op), "type": how.op.type_name,
                           "entered_cycle": last.cycle + 1, "parent": str(how.parent),
                           "morphism": str(how.morphism), "rediscovered": how.rediscovered,
                           "last_cycle": None, "dropped_after": None,
                           "first_weight": float("nan"), "last_weight": float("nan"),
                           "final": True})
    for stint in open_.values():
        stint["final"] = True
    df = pd.DataFrame.from_records(stints, columns=LINEAGE_COLUMNS)
    return df.astype({"op": "string", "type": "string", "entered_cycle": "int64",
                      "parent": "string", "morphism": "string", "rediscovered": "bool",
                      "last_cycle": "Int64", "dropped_after": "Int64",
                      "first_weight": "float64", "last_weight": "float64", "final": "bool"})


def busiest_edge(rows: pd.DataFrame, cell_type: str = "normal") -> int:
    """The edge whose pool saw the most distinct ops: the most telling lineage by default."""
    counts: dict[int, set[str]] = {}
    for pools in list(rows["pools"]) + list(rows["pools_next"]):
        for e, edge in enumerate((pools or {}).get(cell_type, [])):
            counts.setdefault(e, set()).update(edge)
    if not counts:
        return 0
    return max(sorted(counts), key=lambda e: len(counts[e]))


def lineage_figure(lineage: pd.DataFrame, title: str = "") -> Figure:
    """A timeline: one bar per stay across the cycles it was trained, an arrow from its parent.

    A cross marks the decision that dropped it; the arrow is labelled with the morphism.
    """
    n = max(1, len(lineage))
    fig = Figure(figsize=(8, 1.2 + 0.38 * n), layout="constrained")
    ax = fig.add_subplot()
    y_of: dict[str, float] = {}
    last = int(lineage["last_cycle"].max()) if lineage["last_cycle"].notna().any() else 1
    last = max([last, *lineage["entered_cycle"]])
    labels = []
    for i, r in enumerate(lineage.itertuples(index=False)):
        y = n - 1 - i
        start = r.entered_cycle - 0.4
        end = (r.last_cycle if pd.notna(r.last_cycle) else r.entered_cycle) + 0.4
        color = TYPE_COLORS.get(r.type, "black")
        ax.barh(y, end - start, left=start, height=0.5, color=color, alpha=0.85,
                hatch="//" if pd.isna(r.last_cycle) else None)
        labels.append((y, r.op + (" (again)" if r.rediscovered else "")))
        if pd.notna(r.dropped_after):
            ax.plot(r.dropped_after + 0.5, y, marker="x", color="#d62728", markersize=8, mew=2)
        if r.final:
            ax.plot(end + 0.1, y, marker="*", color="#ff7f0e", markersize=12)
        if pd.notna(r.parent) and r.parent in y_of:
            py = y_of[r.parent]
            ax.annotate("", xy=(start, y), xytext=(r.entered_cycle - 0.6, py),
                        arrowprops={"arrowstyle": "->", "color": "#444444", "lw": 0.9})
            ax.text(start + 0.05, y + 0.3, str(r.morphism), fontsize=6.5, ha="left",
                    va="bottom", color="#222222")
        y_of[r.op] = y
    ax.set_xlim(0.4, last + 0.9)
    ax.set_xticks(range(1, last + 1))
    ax.set_xlabel("cycle (bar: trained in that cycle; x: dropped by its decision)")
    ax.set_yticks([y for y, _ in labels], [t for _, t in labels], fontsize=8)
    ax.set_ylim(-0.8, n - 0.2)
    handles = [Patch(color=c, label=k) for k, c in TYPE_COLORS.items()]
    handles += [Line2D([], [], ls="", marker="x", color="#d62728", mew=2, label="dropped"),
                Line2D([], [], ls="", marker="*", color="#ff7f0e", markersize=10,
                       label="in the final pool")]
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=7,
              ncols=len(handles), frameon=False)
    ax.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
