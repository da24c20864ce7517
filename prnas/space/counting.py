"""How big the space is: reachable conv configurations and cell-space size.

Two ways of counting reachable configurations exist and both are offered:

* functional (default): a 1x1 kernel is the same function at any dilation, so
  it exists only with dilation 1 and is counted once;
* paper (``paper_counting=True``): 1x1 kernels with dilation 2 are distinct
  configurations, reached by the dilation moves like any other kernel. This is
  the only way to obtain the paper's Table II totals (12 / 36 / 80 for
  DL / DR / UR at 5 steps); DL has no 1x1 kernel, so both give 12 there,
  while DR and UR give 32 and 73 functionally.
"""

from __future__ import annotations

from math import comb

from prnas.space.constraints import Constraints
from prnas.space.morphisms import ConvState, state_admitted, state_moves
from prnas.space.ops import START_OP


def state_str(state: ConvState) -> str:
    k, d, e = state
    return f"conv_k{k}_d{d}" + ("_e" + "-".join(map(str, e)) if e else "")


def reachable(
    constraints: Constraints, steps: int, paper_counting: bool = False
) -> list[str]:
    """Canonical strings of the convs reachable from conv_k3_d1 within ``steps`` morphisms.

    Breadth-first over admitted states only: a path never leaves the
    constraints, exactly as a search never proposes an inadmissible child.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    start: ConvState = (START_OP.kernel, START_OP.dilation, START_OP.expansions)
    seen = {start}
    frontier = [start]
    for _ in range(steps):
        nxt = []
        for state in frontier:
            for _, child in state_moves(state, functional=not paper_counting):
                if child not in seen and state_admitted(child, constraints):
                    seen.add(child)
                    nxt.append(child)
        frontier = nxt
    return sorted(state_str(s) for s in seen)


def search_space_size(ops: int, nodes: int = 4) -> int:
    """Distinct cells with ``ops`` candidates per edge: prod_{n=2}^{M+1} C(n,2) * K^2.

    Node n (counting the two cell inputs) picks 2 of its n predecessors and an
    op for each of the two edges. DARTS' 8 ops vs DL's 15 gives the paper's
    "about 150 times".
    """
    if ops < 1 or nodes < 1:
        raise ValueError(f"ops and nodes must be >= 1, got ops={ops}, nodes={nodes}")
    size = 1
    for n in range(2, nodes + 2):
        size *= comb(n, 2) * ops**2
    return size
