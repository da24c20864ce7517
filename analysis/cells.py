"""Cell diagrams (paper Fig. 3) from any ``prnas-genotype/1`` genotype.

Graphviz lays cells out best, so its ``dot`` binary is used when installed;
without it a matplotlib drawing needs nothing beyond the project's own
dependencies, so a report can always be produced (CI machines rarely have
Graphviz). Both draw the same graph: the two cell inputs, the intermediate
nodes (which sum their inputs), each edge labelled with its op, and the
output joining the nodes in the genotype's concat list.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch

from analysis.figures import save_figure
from prnas.space.genotype import Genotype

INPUT_COLOR = "#b4eeb4"  # darkseagreen2, as DARTS' plots
NODE_COLOR = "#9ecae1"  # the paper's blue B_j
OUTPUT_COLOR = "#fdae6b"  # the paper's orange output
ENGINES = ("auto", "dot", "matplotlib")


@dataclass(frozen=True)
class CellGraph:
    """A cell as plain graph data: node names and labelled edges (src, dst, op)."""

    inputs: tuple[str, str]
    nodes: tuple[str, ...]
    output: str
    edges: tuple[tuple[str, str, str], ...]
    concat: tuple[str, ...]


def cell_graph(genotype: Genotype, cell_type: str = "normal") -> CellGraph:
    if cell_type not in ("normal", "reduce"):
        raise ValueError(f"cell_type must be 'normal' or 'reduce', got {cell_type!r}")
    spec = getattr(genotype, cell_type)
    concat = getattr(genotype, f"{cell_type}_concat")
    n = len(spec) // 2
    inputs = ("c_{k-2}", "c_{k-1}")
    nodes = tuple(f"B_{j}" for j in range(n))

    def name(i: int) -> str:
        return inputs[i] if i < 2 else nodes[i - 2]

    edges = tuple((name(src), nodes[i // 2], str(op)) for i, (op, src) in enumerate(spec))
    return CellGraph(inputs, nodes, "c_{k}", edges, tuple(name(i) for i in concat))


def cell_dot(genotype: Genotype, cell_type: str = "normal") -> str:
    """Graphviz DOT source for one cell, left to right like DARTS' cell plots."""
    g = cell_graph(genotype, cell_type)

    def q(s: str) -> str:
        return '"' + s.replace('"', '\\"') + '"'

    lines = [
        f"digraph {q(cell_type)} {{",
        '  rankdir=LR; bgcolor="white";',
        '  node [style="filled,rounded", shape=rect, fontname="Helvetica", fontsize=16, '
        'penwidth=2, height=0.5, width=0.5];',
        '  edge [fontname="Helvetica", fontsize=12];',
    ]
    colors = {**dict.fromkeys(g.inputs, INPUT_COLOR), **dict.fromkeys(g.nodes, NODE_COLOR),
              g.output: OUTPUT_COLOR}
    for n, color in colors.items():
        lines.append(f"  {q(n)} [label={_html_label(n)}, fillcolor={q(color)}];")
    for src, dst, op in g.edges:
        lines.append(f"  {q(src)} -> {q(dst)} [label={q(op)}, fillcolor=gray];")
    for n in g.concat:
        lines.append(f"  {q(n)} -> {q(g.output)} [color=gray];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _html_label(name: str) -> str:
    """``c_{k-2}`` -> Graphviz HTML label c<sub>k-2</sub> (dot has no TeX)."""
    base, _, sub = name.partition("_")
    return f"<{base}<sub>{sub.strip('{}')}</sub>>" if sub else f"<{base}>"


def _layout(g: CellGraph) -> dict[str, tuple[float, float]]:
    """Every node on one upper half-ellipse, in data-flow order from left to right.

    Points in convex position: a straight edge between two nodes never passes
    through a third, which is what makes a fixed layout readable without a
    graph-layout engine.
    """
    order = [*g.inputs, *g.nodes, g.output]
    a, b = 1.15 * len(order), 0.62 * len(order)
    pos = {}
    for i, n in enumerate(order):
        t = math.pi * (1 - i / (len(order) - 1))
        pos[n] = (a * math.cos(t), b * math.sin(t))
    return pos


def cell_figure(genotype: Genotype, cell_type: str = "normal") -> Figure:
    """The matplotlib drawing of one cell; needs no Graphviz."""
    g = cell_graph(genotype, cell_type)
    pos = _layout(g)
    xs = [x for x, _ in pos.values()]
    ys = [y for _, y in pos.values()]
    radius = 0.55
    width = max(xs) - min(xs) + 2.4
    height = max(ys) - min(ys) + 2.0
    scale = (2.0 + 1.2 * len(pos)) / width  # inches per data unit
    fig = Figure(figsize=(width * scale, height * scale + 0.4), layout="constrained")
    ax = fig.add_subplot()
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_xlim(min(xs) - 1.2, max(xs) + 1.2)
    ax.set_ylim(min(ys) - 1.0, max(ys) + 1.0)
    circles = {}
    colors = {**dict.fromkeys(g.inputs, INPUT_COLOR), **dict.fromkeys(g.nodes, NODE_COLOR),
              g.output: OUTPUT_COLOR}
    for n, (x, y) in pos.items():
        c = Circle((x, y), radius, facecolor=colors[n], edgecolor="black", lw=1.5, zorder=3)
        ax.add_patch(c)
        circles[n] = c
        ax.text(x, y, f"${n}$", ha="center", va="center", fontsize=12, zorder=4)

    def arrow(src: str, dst: str, color: str, lw: float) -> None:
        ax.add_patch(FancyArrowPatch(pos[src], pos[dst], arrowstyle="-|>", mutation_scale=14,
                                     color=color, lw=lw, patchA=circles[src],
                                     patchB=circles[dst], zorder=2))

    for n in g.concat:
        arrow(n, g.output, "#aaaaaa", 1.0)
    for src, dst, op in g.edges:
        arrow(src, dst, "#333333", 1.3)
        (x0, y0), (x1, y1) = pos[src], pos[dst]
        angle = math.degrees(math.atan2(y1 - y0, x1 - x0))
        if angle > 90 or angle < -90:  # keep the text upright
            angle -= 180 if angle > 0 else -180
        # Labels sit at 55 % of the edge, nearer the node they feed, along the edge.
        ax.text(x0 + 0.55 * (x1 - x0), y0 + 0.55 * (y1 - y0), op, ha="center", va="center",
                rotation=angle, rotation_mode="anchor", fontsize=8, zorder=5,
                bbox={"boxstyle": "round,pad=0.12", "fc": "white", "ec": "none", "alpha": 0.9})
    ax.set_title(f"{genotype.name}: {'reduction' if cell_type == 'reduce' else 'normal'} cell",
                 fontsize=11)
    return fig


def dot_available() -> bool:
    return shutil.which("dot") is not None


def render_cell(genotype: Genotype, cell_type: str, stem: str | os.PathLike,
                engine: str = "auto", formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Write ``stem.png`` / ``stem.svg`` for one cell; returns the paths written.

    ``engine``: ``dot`` (Graphviz, error if missing), ``matplotlib`` or ``auto``
    (dot when installed). With dot, ``stem.dot`` holds the source as well.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    use_dot = engine == "dot" or (engine == "auto" and dot_available())
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    if not use_dot:
        return save_figure(cell_figure(genotype, cell_type), stem, formats)
    dot = shutil.which("dot")
    if dot is None:
        raise RuntimeError("engine='dot' but Graphviz's dot binary is not on PATH; "
                           "install graphviz or use engine='matplotlib'")
    source = cell_dot(genotype, cell_type)
    src_path = stem.with_name(stem.name + ".dot")
    src_path.write_text(source)
    paths = []
    for fmt in formats:
        out = stem.with_name(f"{stem.name}.{fmt}")
        extra = ["-Gdpi=110"] if fmt == "png" else []
        proc = subprocess.run([dot, f"-T{fmt}", *extra, "-o", str(out), str(src_path)],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"dot failed on {src_path}: {proc.stderr.strip()}")
        paths.append(out)
    return paths
