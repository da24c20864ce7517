"""What a population did to its seeds (``results.parquet``'s ``population_event``): a table of
events and the seed genealogy figure of the report.

A seed's line runs from its first to its last cycle; an arrow from seed j to seed i after
cycle c says that i took over j's state there (exploit), a cross that the seed stopped
(halve). Without population events there is nothing to draw.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from prnas.space.fates import EXPLOIT_FROM, HALVED


def population_events(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (trial, cycle) with an exploit or halve event: ``experiment``, ``space``,
    ``cycle``, ``trial_id``, ``seed``, ``event`` (exploit or halved), ``source`` (the trial
    whose state it took over, else None), ``valid_acc`` (the cycle's, before the event)."""
    rows = []
    for r in results.to_dict("records"):
        for part in str(r.get("population_event") or "").split("; "):
            if part.startswith(EXPLOIT_FROM) or part == HALVED:
                rows.append({"experiment": r["experiment"], "space": r["space"],
                             "cycle": r["cycle"], "trial_id": r["trial_id"], "seed": r["seed"],
                             "event": "exploit" if part != HALVED else HALVED,
                             "source": part.removeprefix(EXPLOIT_FROM) if part != HALVED else None,
                             "valid_acc": r["valid_acc"]})
    return pd.DataFrame(rows, columns=["experiment", "space", "cycle", "trial_id", "seed",
                                       "event", "source", "valid_acc"])


def genealogy_figure(results: pd.DataFrame) -> Figure:
    """Seeds (rows) by cycle (columns), one panel per space: who copied whom, who stopped."""
    events = population_events(results)
    spaces = list(dict.fromkeys(results["space"]))
    fig = Figure(figsize=(7, 1.2 + 1.0 * sum(results.groupby("space")["trial_id"].nunique())))
    axes = fig.subplots(len(spaces), 1, squeeze=False)[:, 0]
    for ax, space in zip(axes, spaces):
        rows = results[results["space"] == space]
        trials = rows.sort_values("seed").drop_duplicates("trial_id")
        y = {t: i for i, t in enumerate(trials["trial_id"])}
        for tid, g in rows.groupby("trial_id"):
            g = g.sort_values("cycle")
            ax.plot(g["cycle"], [y[tid]] * len(g), "-o", color="#1f77b4", markersize=4)
        for e in events[events["space"] == space].to_dict("records"):
            if e["event"] == HALVED:
                ax.plot(e["cycle"] + 0.5, y[e["trial_id"]], "x", color="#d62728",
                        markersize=10, mew=2)
            elif e["source"] in y:
                ax.annotate("", xy=(e["cycle"] + 0.5, y[e["trial_id"]]),
                            xytext=(e["cycle"], y[e["source"]]),
                            arrowprops={"arrowstyle": "->", "color": "#ff7f0e", "lw": 1.5})
        ax.set_yticks(range(len(y)), [f"seed {s} ({t})" for t, s in
                                      zip(trials["trial_id"], trials["seed"])], fontsize=8)
        ax.set_title(f"space {space}: arrows = took over that seed's state (exploit), "
                     "x = stopped (halve)", fontsize=9)
        ax.set_xlabel("cycle")
        ax.set_xticks(range(1, int(rows["cycle"].max()) + 1))
        ax.set_ylim(-0.5, len(y) - 0.5)
    fig.tight_layout()
    return fig
