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

# Enough for every space the paper counts (80 at 5 steps); an unbounded space grows
# without limit with the steps, and enumerating it would never return.
MAX_STATES = 50_000


def state_str(state: ConvState) -> str:
    k, d, e = state
    return f"conv_k{k}_d{d}" + ("_e" + "-".join(map(str, e)) if e else "")


def reachable(
    constraints: Constraints, steps: int, paper_counting: bool = False,
    max_states: int = MAX_STATES,
) -> list[str]:
    """Canonical strings of the convs reachable from conv_k3_d1 within ``steps`` morphisms.

    Breadth-first over admitted states only: a path never leaves the
    constraints, exactly as a search never proposes an inadmissible child.
    Stops early once nothing new is reachable; refuses (ValueError) to enumerate
    more than ``max_states`` configurations.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    start: ConvState = (START_OP.kernel, START_OP.dilation, START_OP.expansions)
    seen = {start}
    frontier = [start]
    for step in range(steps):
        if not frontier:
            break  # saturated: more steps reach nothing new
        nxt = []
        for state in frontier:
            for _, child in state_moves(state, functional=not paper_counting):
                if child not in seen and state_admitted(child, constraints):
                    seen.add(child)
                    nxt.append(child)
            if len(seen) > max_states:
                raise ValueError(
                    f"steps: more than {max_states} configurations within {step + 1} of "
                    f"{steps} steps; lower --steps or bound the space (--max-depth, "
                    "--max-width, --kernel-max, --dilation-max)")
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
    if nodes > 1000 or ops > 10**6:  # the product's digits would grow past any use
        raise ValueError(f"ops must be <= 1000000 and nodes <= 1000, got ops={ops}, "
                         f"nodes={nodes}")
    size = 1
    for n in range(2, nodes + 2):
        size *= comb(n, 2) * ops**2
    return size
