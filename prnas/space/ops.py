"""The candidate-operation value type and its canonical string form.

Ops are frozen and hashable so pools, histories and module names can be keyed
by them, and their string form is the only thing that is ever persisted
(checkpoints, parquet, genotype JSON): it parses back losslessly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

OpKind = Literal["skip", "max_pool_3x3", "avg_pool_3x3", "conv"]
POOL_KINDS: tuple[str, ...] = ("max_pool_3x3", "avg_pool_3x3")
GRAMMAR = (
    "skip | max_pool_3x3 | avg_pool_3x3 | conv_k{K}_d{D}[_e{m1}-{m2}-...] "
    "with odd K >= 1, D >= 1 (D = 1 when K = 1) and every m >= 1"
)
_CONV_RE = re.compile(r"conv_k(\d+)_d(\d+)(?:_e(\d+(?:-\d+)*))?")


@dataclass(frozen=True, slots=True)
class Op:
    """One candidate operation.

    ``expansions`` lists the width factors of the inner separable blocks, so a
    conv is ``len(expansions) + 1`` blocks deep; DARTS' sep_conv_3x3 is
    ``Op.conv(3, 1, (1,))`` and dil_conv_3x3 is ``Op.conv(3, 2)``.
    """

    kind: OpKind
    kernel: int = 0
    dilation: int = 0
    expansions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind == "conv":
            _check_conv(self.kernel, self.dilation, self.expansions)
        elif self.kind in ("skip", *POOL_KINDS):
            if self.kernel or self.dilation or self.expansions:
                raise ValueError(f"{self.kind} takes no kernel, dilation or expansions")
        else:
            raise ValueError(f"unknown op kind {self.kind!r}; expected {GRAMMAR}")

    @staticmethod
    def skip() -> Op:
        return Op("skip")

    @staticmethod
    def max_pool() -> Op:
        return Op("max_pool_3x3")

    @staticmethod
    def avg_pool() -> Op:
        return Op("avg_pool_3x3")

    @staticmethod
    def conv(kernel: int, dilation: int = 1, expansions: tuple[int, ...] | list[int] = ()) -> Op:
        return Op("conv", kernel, dilation, tuple(expansions))

    @staticmethod
    def parse(text: str) -> Op:
        """Inverse of ``str(op)``; raises ValueError naming the string and the grammar."""
        if not isinstance(text, str):
            raise ValueError(f"op must be a string, got {text!r}; expected {GRAMMAR}")
        if text in ("skip", *POOL_KINDS):
            return Op(text)  # type: ignore[arg-type]
        m = _CONV_RE.fullmatch(text)
        if m is None:
            raise ValueError(f"malformed op string {text!r}; expected {GRAMMAR}")
        k, d, e = m.groups()
        exps = tuple(int(x) for x in e.split("-")) if e else ()
        if str(int(k)) != k or str(int(d)) != d or (e and "-".join(map(str, exps)) != e):
            raise ValueError(f"malformed op string {text!r} (leading zeros); expected {GRAMMAR}")
        try:
            return Op.conv(int(k), int(d), exps)
        except ValueError as err:
            raise ValueError(f"invalid op string {text!r}: {err}; expected {GRAMMAR}") from None

    def __str__(self) -> str:
        if self.kind != "conv":
            return self.kind
        s = f"conv_k{self.kernel}_d{self.dilation}"
        if self.expansions:
            s += "_e" + "-".join(str(m) for m in self.expansions)
        return s

    @property
    def is_conv(self) -> bool:
        return self.kind == "conv"

    @property
    def is_pool(self) -> bool:
        return self.kind in POOL_KINDS

    @property
    def type_name(self) -> str:
        """Coarse type used by similarity and the op-type distribution: skip, pool or conv."""
        return "conv" if self.is_conv else "pool" if self.is_pool else "skip"

    @property
    def depth(self) -> int:
        return len(self.expansions)

    @property
    def width(self) -> int:
        return max(self.expansions, default=0)


def _check_conv(kernel: int, dilation: int, expansions: tuple[int, ...]) -> None:
    if not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"conv kernel must be an odd integer >= 1, got {kernel!r}")
    if not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f"conv dilation must be an integer >= 1, got {dilation!r}")
    if kernel == 1 and dilation != 1:
        raise ValueError(
            f"a 1x1 kernel with dilation {dilation} is the same function as dilation 1; "
            "write it with dilation 1"
        )
    if any(not isinstance(m, int) or m < 1 for m in expansions):
        raise ValueError(f"expansion factors must be integers >= 1, got {list(expansions)}")


START_OP = Op.conv(3, 1)
INITIAL_POOL: tuple[Op, ...] = (Op.max_pool(), Op.avg_pool(), Op.skip(), START_OP)
