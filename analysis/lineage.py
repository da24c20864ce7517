"""Where each candidate of one edge came from, and when it left (the prune-and-replace story).

Built from the results file alone: each cycle's trained ``pools`` and
``alphas`` say who was there and how strong, each cycle's ``decisions`` say
which new op was morphed from which parent. An op that is dropped and later
rediscovered gets one row per stay ("stint"), so nothing is merged away.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from analysis.pools import op_type, softmax

LINEAGE_COLUMNS = [
    "op", "type", "entered_cycle", "parent", "morphism", "rediscovered", "last_cycle",
    "dropped_after", "first_weight", "last_weight", "final",
]
TYPE_COLORS = {"skip": "#7f7f7f", "pool": "#2ca02c", "conv": "#1f77b4"}


def _decision(decisions, cell_type: str, edge: int) -> dict:
    for d in decisions or []:
        if d.get("cell_type") == cell_type and int(d.get("edge", -1)) == edge:
            return d
    return {}


def edge_lineage(rows: pd.DataFrame, cell_type: str = "normal", edge: int = 0) -> pd.DataFrame:
    """One row per stay of an op in the pool of (``cell_type``, ``edge``) of one trial.

    Columns: ``op``, ``type`` (skip/pool/conv), ``entered_cycle`` (first cycle it
    was trained in), ``parent`` and ``morphism`` (NA for the initial ops),
    ``rediscovered`` (it had been in this edge's pool before), ``last_cycle``
    (last cycle trained), ``dropped_after`` (the cycle whose decision removed
    it; NA while it stays), ``first_weight``/``last_weight`` (softmax weight in
    those cycles), ``final`` (in the pool after the trial's last decision).
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
    stints: list[dict] = []
    open_: dict[str, dict] = {}
    origin: dict[str, dict] = {}  # op -> how it was added by the previous decision
    for row in rows.itertuples(index=False):
        pool = list((row.pools or {}).get(cell_type, [[]] * n_edges)[edge])
        alphas = (row.alphas or {}).get(cell_type)
        weights = softmax(alphas[edge]) if alphas and len(alphas[edge]) == len(pool) else \
            [float("nan")] * len(pool)
        for op, w in zip(pool, weights):
            if op in open_:
                open_[op]["last_cycle"], open_[op]["last_weight"] = row.cycle, w
                continue
            how = origin.get(op, {})
            stint = {"op": op, "type": op_type(op), "entered_cycle": row.cycle,
                     "parent": how.get("parent"), "morphism": how.get("morphism"),
                     "rediscovered": bool(how.get("rediscovered", False)),
                     "last_cycle": row.cycle, "dropped_after": None,
                     "first_weight": w, "last_weight": w, "final": False}
            stints.append(stint)
            open_[op] = stint
        nxt = (row.pools_next or {}).get(cell_type) if row.pools_next else None
        decision = _decision(row.decisions, cell_type, edge)
        if nxt is not None:
            survivors = set(nxt[edge])
        elif decision:
            survivors = {op for op, _ in decision.get("kept", [])} | \
                {a["op"] for a in decision.get("added", [])}
        else:
            survivors = set(pool)  # no decision recorded (yet): nobody was dropped
        # A dropped op can be re-added by the same decision (a rediscovery when the edge's
        # space is exhausted): it restarts from its parent's weights, so it is a new stay.
        dropped = {op for op, _ in decision.get("dropped", [])}
        for op in list(open_):
            if op not in survivors or op in dropped:
                open_.pop(op)["dropped_after"] = row.cycle
        origin = {a["op"]: a for a in decision.get("added", [])}
        for op, how in origin.items():  # added by the last decision, never trained
            if op in survivors and op not in open_ and row.cycle == rows["cycle"].iloc[-1]:
                stints.append({"op": op, "type": op_type(op), "entered_cycle": row.cycle + 1,
                               "parent": how.get("parent"), "morphism": how.get("morphism"),
                               "rediscovered": bool(how.get("rediscovered", False)),
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
