"""Cross-seed agreement: does a search find the same cell, and the same ops, twice?

Found cells. Two genotypes of one space are compared node by node: node j of
each keeps two (op, input) edges, and the two edges of one cell are matched to
those of the other in the way that makes the most pairs identical, then the
most inputs equal, then the highest op similarity (two ways to try per node).
Per cell type this gives

- ``similarity``: the mean :func:`prnas.space.similarity` of the matched ops
  (the paper's operation similarity, whatever its exact definition), and
- ``identical``: the share of matched edges with the same op *and* input.

Candidate pools. The search cells share their edges, so the pools of two seeds
are compared edge by edge, per cycle: ``similarity`` is the symmetric best-match
similarity of the two pools (each op's highest similarity to the other pool,
averaged over both pools; 1 for equal pools), ``shared`` the Jaccard share of
ops in both. The stage after the last decision (what the genotype was taken
from) is the extra cycle ``num_cycles + 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from statistics import fmean

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.loaders import TRIAL_KEY, trial_genotype_path
from analysis.pools import parse_op
from prnas.space.genotype import CellSpec, Genotype
from prnas.space.ops import Op
from prnas.space.similarity import similarity

CELL_TYPES = ("normal", "reduce")
PAIR_COLUMNS = ["space", "cell_type", "trial_a", "seed_a", "trial_b", "seed_b", "similarity",
                "identical"]


def _node_match(a: Sequence[tuple[Op, int]], b: Sequence[tuple[Op, int]]
                ) -> list[tuple[tuple[Op, int], tuple[Op, int]]]:
    """The pairing of a node's two edges that is best: identical, then same input, then similar."""
    def score(pairs):
        return (sum(x == y for x, y in pairs), sum(x[1] == y[1] for x, y in pairs),
                sum(similarity(x[0], y[0]) for x, y in pairs))

    straight = list(zip(a, b))
    crossed = list(zip(a, reversed(b)))
    return max((straight, crossed), key=score)


def cell_agreement(a: CellSpec, b: CellSpec) -> tuple[float, float]:
    """(mean op similarity of matched edges, share of identical (op, input) pairs)."""
    if len(a) != len(b):
        raise ValueError(f"cells with {len(a) // 2} and {len(b) // 2} nodes cannot be matched")
    matched = [m for j in range(0, len(a), 2) for m in _node_match(a[j:j + 2], b[j:j + 2])]
    return (fmean(similarity(x[0], y[0]) for x, y in matched),
            sum(x == y for x, y in matched) / len(matched))


def found_cells(results: pd.DataFrame) -> pd.DataFrame:
    """One row per search trial with a genotype.json: experiment, trial_id, seed, space,
    genotype."""
    rows = []
    for (exp, tid), g in results.groupby(TRIAL_KEY, sort=False):
        path = trial_genotype_path(g)
        if path and Path(path).is_file():
            rows.append({"experiment": exp, "trial_id": tid, "seed": g["seed"].iloc[0],
                         "space": str(g["space"].iloc[0]), "genotype": Genotype.load(path)})
    return pd.DataFrame(rows, columns=["experiment", "trial_id", "seed", "space", "genotype"])


def _label(row) -> str:
    return f"{row.experiment}/{row.trial_id}"


def cell_pairs(cells: pd.DataFrame) -> pd.DataFrame:
    """Every unordered pair of trials of one space, per cell type."""
    rows = []
    for space, g in cells.groupby("space", sort=True):
        for a, b in combinations(list(g.itertuples(index=False)), 2):
            for cell in CELL_TYPES:
                sa, sb = getattr(a.genotype, cell), getattr(b.genotype, cell)
                if len(sa) != len(sb):
                    continue
                sim, same = cell_agreement(sa, sb)
                rows.append({"space": space, "cell_type": cell, "trial_a": _label(a),
                             "seed_a": a.seed, "trial_b": _label(b), "seed_b": b.seed,
                             "similarity": sim, "identical": same})
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def cell_summary(cells: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """Per space and cell type: trials, pairs, similarity mean/std/min, identical share mean."""
    rows = []
    for (space, cell), g in pairs.groupby(["space", "cell_type"], sort=True):
        rows.append({"space": space, "cell_type": cell,
                     "trials": int((cells["space"] == space).sum()), "pairs": len(g),
                     "similarity_mean": g["similarity"].mean(),
                     "similarity_std": g["similarity"].std(ddof=1),
                     "similarity_min": g["similarity"].min(),
                     "identical_mean": g["identical"].mean()})
    return pd.DataFrame(rows, columns=["space", "cell_type", "trials", "pairs",
                                       "similarity_mean", "similarity_std", "similarity_min",
                                       "identical_mean"])


def _seed_name(seed, trial: str, duplicated: bool) -> str:
    return f"seed {seed}" + (f" ({trial.rsplit('/', 1)[-1]})" if duplicated else "")


def heatmap_figure(cells: pd.DataFrame, pairs: pd.DataFrame) -> Figure:
    """Seed x seed matrices per space (rows) and cell type (columns): op similarity, colour;
    identical-pair share, second line of each label."""
    spaces = sorted(pairs["space"].unique())
    fig = Figure(figsize=(9, 3.9 * max(1, len(spaces))), layout="constrained")
    axes = fig.subplots(max(1, len(spaces)), 2, squeeze=False)
    image = None
    for r, space in enumerate(spaces):
        trials = cells[cells["space"] == space]
        labels = [_label(t) for t in trials.itertuples(index=False)]
        dup = trials["seed"].duplicated(keep=False).any()
        names = [_seed_name(t.seed, _label(t), dup) for t in trials.itertuples(index=False)]
        for c, cell in enumerate(CELL_TYPES):
            ax = axes[r][c]
            n = len(labels)
            sim, same = np.eye(n), np.eye(n)
            for p in pairs[(pairs["space"] == space) & (pairs["cell_type"] == cell)].itertuples():
                i, j = labels.index(p.trial_a), labels.index(p.trial_b)
                sim[i, j] = sim[j, i] = p.similarity
                same[i, j] = same[j, i] = p.identical
            image = ax.imshow(sim, vmin=0, vmax=1, cmap="viridis")
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, f"{sim[i, j]:.2f}\n{same[i, j]:.0%}", ha="center",
                            va="center", fontsize=8, color="white" if sim[i, j] < 0.6 else "black")
            ax.set_xticks(range(n), names, rotation=30, ha="right", fontsize=8)
            ax.set_yticks(range(n), names, fontsize=8)
            ax.set_title(f"{space}, {cell} cell", fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8,
                     label="mean op similarity of matched edges")
    fig.suptitle("Cross-seed agreement of the found cells (second line: identical (op, input) "
                 "pairs)", fontsize=10)
    return fig


# ----------------------------------------------------------------------------- pools


def pool_match_similarity(a: Sequence[str], b: Sequence[str]) -> float:
    """Symmetric best match: each op's highest similarity to the other pool, averaged."""
    ops_a, ops_b = [parse_op(x) for x in a], [parse_op(x) for x in b]
    if not ops_a or not ops_b:
        return float("nan")
    best_a = [max(similarity(x, y) for y in ops_b) for x in ops_a]
    best_b = [max(similarity(x, y) for x in ops_a) for y in ops_b]
    return (fmean(best_a) + fmean(best_b)) / 2


def _jaccard(a: Sequence[str], b: Sequence[str]) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else float("nan")


def _stages(g: pd.DataFrame) -> dict[int, dict]:
    """cycle -> pools trained in it; the pools after the last decision as cycle last + 1."""
    g = g.sort_values("cycle")
    stages = {int(c): p for c, p in zip(g["cycle"], g["pools"]) if p}
    last = g.iloc[-1]
    if last["pools_next"] and last["pools_next"] != last["pools"]:
        stages[int(last["cycle"]) + 1] = last["pools_next"]
    return stages


def pool_agreement(results: pd.DataFrame) -> pd.DataFrame:
    """Per space, cell type and cycle: mean over trial pairs and edges of pool similarity and
    shared-op share; ``final`` marks the stage after the last decision."""
    rows = []
    for space, sg in results.groupby("space", sort=True):
        trials = [(k, _stages(g)) for k, g in sg.groupby(TRIAL_KEY, sort=False)]
        if len(trials) < 2:
            continue
        trained = int(sg["cycle"].max())
        cycles = sorted({c for _, st in trials for c in st})
        for cell in CELL_TYPES:
            for cycle in cycles:
                sims, shared, pairs = [], [], 0
                for (_, sa), (_, sb) in combinations(trials, 2):
                    pa, pb = sa.get(cycle, {}).get(cell), sb.get(cycle, {}).get(cell)
                    if not pa or not pb or len(pa) != len(pb):
                        continue
                    pairs += 1
                    sims += [pool_match_similarity(x, y) for x, y in zip(pa, pb)]
                    shared += [_jaccard(x, y) for x, y in zip(pa, pb)]
                if pairs:
                    rows.append({"space": space, "cell_type": cell, "cycle": cycle,
                                 "final": cycle > trained, "pairs": pairs,
                                 "similarity_mean": float(np.nanmean(sims)),
                                 "shared_mean": float(np.nanmean(shared))})
    return pd.DataFrame(rows, columns=["space", "cell_type", "cycle", "final", "pairs",
                                       "similarity_mean", "shared_mean"])


def pool_figure(pools: pd.DataFrame) -> Figure:
    """Per space: pool similarity (solid) and shared-op share (dashed) over cycles, per cell."""
    spaces = sorted(pools["space"].unique())
    fig = Figure(figsize=(5 * max(1, len(spaces)), 3.6), layout="constrained")
    axes = fig.subplots(1, max(1, len(spaces)), squeeze=False)[0]
    colors = {"normal": "#1f77b4", "reduce": "#d62728"}
    for ax, space in zip(axes, spaces):
        g = pools[pools["space"] == space]
        for cell in CELL_TYPES:
            h = g[g["cell_type"] == cell].sort_values("cycle")
            ax.plot(h["cycle"], h["similarity_mean"], color=colors[cell], marker="o",
                    label=f"{cell}: similarity")
            ax.plot(h["cycle"], h["shared_mean"], color=colors[cell], marker="s", ls="--",
                    label=f"{cell}: shared ops")
        finals = g.loc[g["final"], "cycle"]
        if len(finals):
            ax.axvline(finals.min() - 0.5, color="black", lw=0.8, ls=":")
        stages = sorted(g["cycle"].unique())
        ax.set_xticks(stages, [str(c) if c not in set(finals) else "final" for c in stages])
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("cycle (final: the pools the last decision left)")
        ax.set_ylabel("mean over seed pairs and edges")
        ax.set_title(f"{space}: candidate pools across seeds", fontsize=10)
        ax.legend(fontsize=7)
    return fig
