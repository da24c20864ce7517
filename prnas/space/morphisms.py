"""The six morphisms of a conv, as data.

Only *which* child a morphism yields is decided here; how the weights follow
lives in ``prnas.nn.transfer``. The state-level helpers are shared with the
counting code so the paper's way of counting (1x1 kernels with distinct
dilations) walks exactly the same moves.
"""

from __future__ import annotations

from enum import StrEnum

from prnas.space.constraints import Constraints
from prnas.space.ops import Op

# (kernel, dilation, expansions): a conv configuration that may be a 1x1 kernel
# with dilation > 1, which only the paper-counting mode distinguishes.
ConvState = tuple[int, int, tuple[int, ...]]


class Morphism(StrEnum):
    KERNEL_UP = "kernel_up"  # +2, zero-padded: function-preserving
    KERNEL_DOWN = "kernel_down"  # -2, centre kept: lossy
    DILATION_UP = "dilation_up"  # +1, weights copied: not preserving
    DILATION_DOWN = "dilation_down"  # -1, weights copied: not preserving
    INSERT = "insert"  # a width-1 expansion block at the back, near-identity
    WIDEN = "widen"  # +1 on the smallest factor (leading on ties): preserving

    def __str__(self) -> str:
        return self.value


def widen(expansions: tuple[int, ...]) -> tuple[int, ...]:
    """+1 on the smallest factor, the leading one on ties (keeps the list non-increasing)."""
    i = expansions.index(min(expansions))
    return expansions[:i] + (expansions[i] + 1,) + expansions[i + 1 :]


def state_moves(state: ConvState, functional: bool = True) -> list[tuple[Morphism, ConvState]]:
    """Every morphism of a conv state, unconstrained.

    ``functional`` is the search's rule, the reference implementation's: 1x1
    kernels exist only with dilation 1, so dilation moves are not offered on
    them, and kernel -2 is not offered where it would make a 1x1 of a dilated
    kernel (the reference skips that move rather than dropping the dilation).
    The child sets are the same either way (conv_k1_d1 stays one kernel -2 away
    from conv_k3_d1), only the proposal distribution differs. ``functional=False``
    is the paper's way of counting, where a 1x1 with dilation 2 is a state of its own.
    """
    k, d, e = state
    moves: list[tuple[Morphism, ConvState]] = [(Morphism.KERNEL_UP, (k + 2, d, e))]
    if k > 1 and not (functional and k == 3 and d > 1):
        moves.append((Morphism.KERNEL_DOWN, (k - 2, d, e)))
    if not (functional and k == 1):
        moves.append((Morphism.DILATION_UP, (k, d + 1, e)))
        if d > 1:
            moves.append((Morphism.DILATION_DOWN, (k, d - 1, e)))
    moves.append((Morphism.INSERT, (k, d, e + (1,))))
    if e:
        moves.append((Morphism.WIDEN, (k, d, widen(e))))
    return moves


def state_admitted(state: ConvState, c: Constraints) -> bool:
    k, d, e = state
    return (
        c.kernel_min <= k <= c.kernel_max
        and (c.dilation_min <= d <= c.dilation_max or (k == 1 and d == 1))
        and (c.max_depth is None or len(e) <= c.max_depth)
        and (c.max_width is None or max(e, default=0) <= c.max_width)
    )


def available_morphisms(op: Op, constraints: Constraints) -> list[tuple[Morphism, Op]]:
    """The (morphism, child) pairs the constraints allow; pools and skip have none."""
    if not op.is_conv:
        return []
    return [
        (m, Op.conv(*child))
        for m, child in state_moves((op.kernel, op.dilation, op.expansions))
        if state_admitted(child, constraints)
    ]


def apply_morphism(op: Op, morphism: Morphism | str) -> Op:
    """The child of ``op`` under ``morphism``, ignoring constraints; ValueError if impossible."""
    morphism = Morphism(morphism)
    if op.is_conv:
        for m, child in state_moves((op.kernel, op.dilation, op.expansions)):
            if m is morphism:
                return Op.conv(*child)
    raise ValueError(f"morphism {morphism} is not applicable to {op}")
