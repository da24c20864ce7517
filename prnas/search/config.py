"""The search configuration: YAML validated into typed objects before any compute.

Defaults reproduce the paper's search (Table I schedule, DL constraints,
CIFAR-10, DARTS proxy network), so an empty YAML file is the paper.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from prnas import config_io
from prnas.config_io import ConfigError as ConfigError  # re-exported for callers
from prnas.data.config import DataConfig
from prnas.runtime.batch_size import BatchSizeConfig
from prnas.runtime.performance import PerformanceConfig
from prnas.space.constraints import PRESETS, Constraints, preset
from prnas.space.ops import INITIAL_POOL, Op

_STRICT = config_io.STRICT


class CycleConfig(BaseModel):
    """One column of the paper's Table I."""

    model_config = _STRICT
    epochs: int = Field(ge=1)
    grace_epochs: int = Field(ge=0, description="leading epochs with frozen alphas")
    morphs: int = Field(ge=0, description="new candidates per edge after the cycle")
    candidates: int = Field(ge=1, description="candidates per edge after the cycle")

    @model_validator(mode="after")
    def _check(self) -> CycleConfig:
        if self.grace_epochs >= self.epochs:
            raise ValueError(
                f"grace_epochs ({self.grace_epochs}) must be < epochs ({self.epochs}): "
                "the alphas train only after the grace epochs"
            )
        if self.morphs >= self.candidates:
            raise ValueError(
                f"morphs ({self.morphs}) must be < candidates ({self.candidates}): "
                "at least one candidate has to survive to be a parent"
            )
        return self


def _table_i() -> list[CycleConfig]:
    epochs = [15, 15, 10, 10, 10, 10, 10, 10, 10]
    grace = [5, 5, 3, 3, 3, 3, 3, 3, 3]
    morphs = [3, 3, 3, 3, 3, 0, 0, 0, 0]
    cands = [6, 6, 6, 6, 6, 4, 3, 2, 1]
    return [CycleConfig(epochs=e, grace_epochs=g, morphs=m, candidates=c)
            for e, g, m, c in zip(epochs, grace, morphs, cands)]


class NetworkConfig(BaseModel):
    model_config = _STRICT
    channels: int = Field(16, ge=2, multiple_of=2,
                          description="C of the first cells (even: FactorizedReduce halves it)")
    layers: int = Field(8, ge=1, description="number of cells")
    nodes: int = Field(4, ge=1, description="intermediate nodes per cell")
    stem_multiplier: int = Field(3, ge=1)
    cell_output: Literal["concat", "mean"] = "concat"


class OptimConfig(BaseModel):
    model_config = _STRICT
    lr: float = Field(0.025, gt=0)
    lr_min: float = Field(0.01, ge=0, description="cosine floor within each cycle")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(3e-4, ge=0)
    grad_clip: float = Field(5.0, gt=0)
    alpha_grad_clip: float | None = Field(
        5.0, gt=0, description="norm clip of the alpha gradients (reference: 5); null = off"
    )
    alpha_lr: float = Field(6e-4, gt=0)
    alpha_betas: tuple[float, float] = (0.5, 0.999)
    alpha_weight_decay: float = Field(1e-3, ge=0)
    alpha_init_scale: float = Field(1e-3, ge=0)

    @field_validator("alpha_betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError(f"alpha_betas must both be in [0, 1), got {list(v)}")
        return v

    @model_validator(mode="after")
    def _check(self) -> OptimConfig:
        if self.lr_min > self.lr:
            raise ValueError(f"lr_min ({self.lr_min}) must be <= lr ({self.lr})")
        return self


class ShareConfig(BaseModel):
    """Weigh a trial's proposals by how strong each child op is in the other seeds."""

    model_config = _STRICT
    temperature: float = Field(
        4.0, ge=0, description="a child's proposal weight is multiplied by "
        "exp(temperature x its mean softmax weight in the other seeds' cells of the same "
        "type); 0 = the paper's rule")


class ExploitConfig(BaseModel):
    """After chosen cycles the worst seeds take over a better seed's whole state."""

    model_config = _STRICT
    after: list[int] | None = Field(
        None, description="1-based cycles after which to exploit (before the last); "
        "null = every second cycle")
    fraction: float = Field(0.25, gt=0, le=0.5, description="share of seeds that copy, and "
                            "of the best seeds they copy from (at least one each)")


class HalveConfig(BaseModel):
    """After chosen cycles the worst seeds stop (successive halving)."""

    model_config = _STRICT
    after: list[int] | None = Field(
        None, description="1-based cycles after which to halve (before the last); "
        "null = the middle cycle")
    fraction: float = Field(0.5, gt=0, lt=1, description="share of the live seeds stopped "
                            "(rounded down; at least one seed goes on)")


class PopulationConfig(BaseModel):
    """The seeds of one space as a population (the Tune job only); every mechanism off by
    default, which is independent seeds exactly (docs/search.md, Population)."""

    model_config = _STRICT
    share: ShareConfig | None = None
    exploit: ExploitConfig | None = None
    halve: HalveConfig | None = None

    @property
    def enabled(self) -> bool:
        return any(m is not None for m in (self.share, self.exploit, self.halve))

    def exploit_after(self, num_cycles: int) -> tuple[int, ...]:
        if self.exploit is None:
            return ()
        if self.exploit.after is not None:
            return tuple(self.exploit.after)
        return tuple(range(2, num_cycles, 2))

    def halve_after(self, num_cycles: int) -> tuple[int, ...]:
        if self.halve is None:
            return ()
        if self.halve.after is not None:
            return tuple(self.halve.after)
        return (num_cycles // 2,) if num_cycles >= 2 else ()


#: What ``behaviour: reference`` sets in the lower layers' sections, unless set explicitly.
REFERENCE_FIELDS = {"data.split": "in_order", "data.statistics": "reference",
                    "batch.growth": "proportional"}


class SearchConfig(BaseModel):
    model_config = _STRICT
    name: str = "prdarts"
    seed: int = Field(0, ge=0, le=config_io.MAX_SEED)
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    num_threads: int | None = Field(None, ge=1, description="torch intra-op threads")
    space: str = Field("DL", description="constraint preset name (DL, DR, UR) or 'custom'")
    constraints: Constraints | None = Field(
        None, description="custom morph constraints; overrides the preset"
    )
    initial_pool: tuple[str, ...] = Field(
        default_factory=lambda: tuple(str(op) for op in INITIAL_POOL), min_length=1,
        description="op strings every edge starts with; default the paper's four",
    )
    data: DataConfig = DataConfig()
    network: NetworkConfig = NetworkConfig()
    schedule: list[CycleConfig] = Field(default_factory=_table_i, min_length=1)
    optim: OptimConfig = OptimConfig()
    batch: BatchSizeConfig = BatchSizeConfig(b_min=24, b_mult=8, b_max=128)
    steps_per_epoch: int | None = Field(
        None, ge=1, description="cap on training steps per epoch (tiny runs); null = full epoch"
    )
    eval_batch_size: int = Field(256, ge=1)
    evaluate_test: bool = Field(False, description="also evaluate on the test set each cycle")
    performance: PerformanceConfig = PerformanceConfig()
    population: PopulationConfig = PopulationConfig()
    behaviour: config_io.Behaviour = Field("paper", description=config_io.BEHAVIOUR_HELP)

    _known_device = field_validator("device")(config_io.check_device)

    @model_validator(mode="before")
    @classmethod
    def _behaviour(cls, raw: Any) -> Any:
        return config_io.fill_behaviour(raw, REFERENCE_FIELDS)

    @field_validator("space")
    @classmethod
    def _space(cls, v: str) -> str:
        if v.upper() not in PRESETS and v != "custom":
            raise ValueError(f"unknown space {v!r}; allowed: {', '.join(PRESETS)}, custom")
        return v.upper() if v != "custom" else v

    @field_validator("initial_pool")
    @classmethod
    def _initial_pool(cls, v: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        """Each op parses, appears once and lies inside the constraints it will be morphed
        under (``space`` and ``constraints`` are validated before this field)."""
        ops = [Op.parse(text) for text in v]  # ValueError names the string and the grammar
        twice = sorted({str(op) for op in ops if ops.count(op) > 1})
        if twice:
            raise ValueError(f"ops listed more than once: {', '.join(twice)}")
        space = info.data.get("space")
        constraints = info.data.get("constraints")
        if constraints is None and space in PRESETS:
            constraints = PRESETS[space]
        if constraints is not None:
            outside = [str(op) for op in ops if not constraints.admits(op)]
            if outside:
                raise ValueError(
                    f"{', '.join(outside)} outside the {space} constraints "
                    f"{constraints.model_dump()}; allowed: skip, max_pool_3x3, avg_pool_3x3 "
                    "and convs inside the constraints"
                )
        return tuple(str(op) for op in ops)

    @model_validator(mode="after")
    def _check(self) -> SearchConfig:
        if self.space == "custom" and self.constraints is None:
            raise ValueError("space 'custom' needs a constraints section")
        if self.behaviour == "reference" and self.population.enabled:
            raise ValueError("population needs behaviour: paper (the reference code has no "
                             "population; allowed with reference: no population section)")
        n = len(self.schedule)
        for name, after in (("exploit", self.population.exploit_after(n)),
                            ("halve", self.population.halve_after(n))):
            outside = [c for c in after if not 1 <= c < n]
            if outside:
                raise ValueError(f"population.{name}.after: cycles {outside} outside 1..{n - 1} "
                                 f"(a population acts between cycles of the {n}-cycle schedule)")
        return self

    def resolved_constraints(self) -> Constraints:
        return self.constraints if self.constraints is not None else preset(self.space)

    def initial_ops(self) -> tuple[Op, ...]:
        return tuple(Op.parse(text) for text in self.initial_pool)


def build_config(raw: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None,
                 source: str | None = None) -> SearchConfig:
    return config_io.validate(SearchConfig, raw, overrides, source)


def load_config(path: str | os.PathLike | None, overrides: dict[str, Any] | None = None
                ) -> SearchConfig:
    """Read YAML (None = the paper's defaults) and validate; ConfigError on any bad field."""
    return config_io.load(SearchConfig, path, overrides)
