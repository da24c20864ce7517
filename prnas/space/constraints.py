"""Morph constraints (paper Table II) as a validated, immutable value.

A pydantic model so the same object validates YAML configs and CLI flags and
names the offending field and the allowed values when it refuses them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from prnas.space.ops import START_OP, Op


class Constraints(BaseModel):
    """Bounds on what a conv may be morphed into; ``None`` depth/width means unlimited."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kernel_min: int = Field(3, ge=1, description="smallest kernel size (odd)")
    kernel_max: int = Field(7, ge=1, description="largest kernel size (odd)")
    dilation_min: int = Field(1, ge=1)
    dilation_max: int = Field(2, ge=1)
    max_depth: int | None = Field(1, ge=0, description="most expansion blocks; null = unlimited")
    max_width: int | None = Field(1, ge=1, description="largest expansion factor; null = unlimited")

    @model_validator(mode="after")
    def _check(self) -> Constraints:
        for name in ("kernel_min", "kernel_max"):
            value = getattr(self, name)
            if value % 2 == 0:
                raise ValueError(f"{name} must be odd (kernels are centred), got {value}")
        if self.kernel_min > self.kernel_max:
            raise ValueError(
                f"kernel_min ({self.kernel_min}) must be <= kernel_max ({self.kernel_max})"
            )
        if self.dilation_min > self.dilation_max:
            raise ValueError(
                f"dilation_min ({self.dilation_min}) must be <= dilation_max ({self.dilation_max})"
            )
        # Every search starts from START_OP, so the bounds must contain it; name
        # the bound that excludes it rather than the range as a whole.
        for name, ok, bound in (
            ("kernel_min", self.kernel_min <= START_OP.kernel, "<="),
            ("kernel_max", self.kernel_max >= START_OP.kernel, ">="),
            ("dilation_min", self.dilation_min <= START_OP.dilation, "<="),
        ):
            if not ok:
                want = START_OP.kernel if name.startswith("kernel") else START_OP.dilation
                raise ValueError(
                    f"{name} ({getattr(self, name)}) must be {bound} {want} "
                    f"so that the start op {START_OP} is admitted"
                )
        return self

    def admits(self, op: Op) -> bool:
        """Whether ``op`` lies inside the constraints; skip and pools always do.

        A 1x1 kernel ignores dilation, so the dilation bounds do not apply to it.
        """
        if not op.is_conv:
            return True
        if not self.kernel_min <= op.kernel <= self.kernel_max:
            return False
        if op.kernel != 1 and not self.dilation_min <= op.dilation <= self.dilation_max:
            return False
        if self.max_depth is not None and op.depth > self.max_depth:
            return False
        return self.max_width is None or op.width <= self.max_width

    def with_overrides(self, **overrides: Any) -> Constraints:
        """A copy with some fields replaced, validated again (a preset plus CLI flags)."""
        return Constraints.model_validate({**self.model_dump(), **overrides})


PRESETS: dict[str, Constraints] = {
    # darts-like: every kernel/dilation combination at depth 0 or 1, width 1.
    "DL": Constraints(kernel_min=3, kernel_max=7, dilation_min=1, dilation_max=2,
                      max_depth=1, max_width=1),
    # depth-restricted: adds 1x1 kernels and lifts the width limit.
    "DR": Constraints(kernel_min=1, kernel_max=7, dilation_min=1, dilation_max=2,
                      max_depth=1, max_width=5),
    # unrestricted depth and width.
    "UR": Constraints(kernel_min=1, kernel_max=7, dilation_min=1, dilation_max=2,
                      max_depth=None, max_width=None),
}


def preset(name: str) -> Constraints:
    try:
        return PRESETS[name.upper()]
    except KeyError:
        raise ValueError(
            f"unknown constraint preset {name!r}; allowed: {', '.join(PRESETS)}"
        ) from None
