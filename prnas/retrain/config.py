"""The retraining protocol as a validated value; the defaults are the paper's (= DARTS').

Loaded from YAML and validated before anything is built, so a typo or an
out-of-range value fails with the field's dotted name and what is allowed.
Overrides (CLI flags, Tune fan-out) are applied to the raw mapping *before*
validation, so they are checked exactly like the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from prnas import config_io
from prnas.config_io import ConfigError as ConfigError  # re-exported for callers
from prnas.data.config import DataConfig
from prnas.runtime.batch_size import BatchSizeConfig
from prnas.runtime.performance import PerformanceConfig


class RetrainBatchSizeConfig(BatchSizeConfig):
    """The reference code's retrain range, 32..128 (the search uses 24..128).

    A subclass rather than a default instance so that a config setting only
    ``batch.b_max`` still starts at 32.
    """

    b_min: int = Field(32, ge=1, description="starting and smallest batch size")


_STRICT = config_io.STRICT


class RetrainNetworkConfig(BaseModel):
    """The evaluation network (DARTS' CIFAR network: 20 cells of 36 channels)."""

    model_config = _STRICT
    channels: int = Field(36, ge=2, description="initial channels C (even)")
    layers: int = Field(20, ge=3, description="cells; reductions at layers//3 and 2*layers//3")
    kind: Literal["cifar", "imagenet"] = Field(
        "cifar", description="cifar: DARTS' NetworkCIFAR; imagenet: its NetworkImageNet "
        "(stride-8 stem, mobile setting; prnas.nn.eval_net_imagenet)")
    auxiliary: bool = Field(True, description="auxiliary head after the 2/3 cell")
    auxiliary_weight: float = Field(0.4, ge=0.0, description="weight of the auxiliary loss")

    @field_validator("channels")
    @classmethod
    def _even_channels(cls, v: int) -> int:
        if v % 2:
            raise ValueError(f"channels must be even (FactorizedReduce halves it), got {v}")
        return v


class RetrainOptimConfig(BaseModel):
    """SGD with momentum: cosine from ``lr`` to ``lr_min`` over all epochs, or exponential."""

    model_config = _STRICT
    lr: float = Field(0.025, gt=0.0, description="initial SGD learning rate")
    lr_min: float = Field(0.0, ge=0.0, description="cosine annealing floor")
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(3e-4, ge=0.0)
    grad_clip: float | None = Field(5.0, gt=0.0, description="gradient-norm clip; null = off")
    lr_schedule: Literal["cosine", "exponential"] = Field(
        "cosine", description="cosine to lr_min over all epochs, or lr * lr_gamma^epoch "
        "(DARTS' ImageNet schedule)")
    lr_gamma: float = Field(0.97, gt=0.0, le=1.0,
                            description="per-epoch decay of lr_schedule=exponential")


#: What ``behaviour: reference`` sets, unless set explicitly: the batch-size rule of the
#: reference's ``train_cifar.py`` (a decision every 10 steps) and its CIFAR statistics.
REFERENCE_FIELDS = {"batch.grow_every": 10, "batch.growth": "proportional",
                    "data.statistics": "reference"}


class RetrainConfig(BaseModel):
    """Everything that decides a retrain's outcome except the genotype."""

    # allow_inf_nan=False: an ``lr: .inf`` would otherwise pass and train on NaNs.
    model_config = _STRICT

    data: DataConfig = Field(default_factory=DataConfig)
    network: RetrainNetworkConfig = Field(default_factory=RetrainNetworkConfig)
    optim: RetrainOptimConfig = Field(default_factory=RetrainOptimConfig)
    batch: RetrainBatchSizeConfig = Field(default_factory=RetrainBatchSizeConfig)
    eval_batch_size: int = Field(128, ge=1, description="fixed batch size for evaluation")
    drop_path_prob: float = Field(
        0.3, ge=0.0, lt=1.0, description="drop-path probability reached (linearly) at the end"
    )
    epochs: int = Field(600, ge=1)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0,
                                   description="of the training loss (ImageNet: 0.1)")
    cutout: int = Field(16, ge=0, description="Cutout square side in pixels; 0 = off")
    report_last: int = Field(5, ge=1, description="reported error = mean over the last N "
                             "epochs (a run of at most N epochs: its last epoch)")
    seed: int = Field(0, ge=0, le=config_io.MAX_SEED,
                      description="weights, drop-path, augmentation and batch order")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    performance: PerformanceConfig = Field(default_factory=PerformanceConfig)
    behaviour: config_io.Behaviour = Field(
        "paper", description=config_io.BEHAVIOUR_HELP + "; with network.kind imagenet, "
        "reference also trains with its linear learning-rate decay and a BN in the "
        "auxiliary head")

    _known_device = field_validator("device")(config_io.check_device)

    @model_validator(mode="before")
    @classmethod
    def _behaviour(cls, raw: Any) -> Any:
        return config_io.fill_behaviour(raw, REFERENCE_FIELDS)

    @property
    def auxiliary_bn(self) -> bool:
        """The reference code's ImageNet auxiliary head has a BN after its 2x2 conv."""
        return self.behaviour == "reference" and self.network.kind == "imagenet"


def build_config(raw: Mapping[str, Any] | None = None,
                 overrides: Mapping[str, Any] | None = None) -> RetrainConfig:
    """Validate ``raw`` (a YAML mapping) with dotted-key ``overrides`` applied first."""
    return config_io.validate(RetrainConfig, raw, overrides)


def load_config(path: str | os.PathLike | None = None,
                overrides: Mapping[str, Any] | None = None) -> RetrainConfig:
    """The config in the YAML file ``path`` (None: the paper's defaults) plus ``overrides``."""
    return config_io.load(RetrainConfig, path, overrides)


def dump_config(cfg: RetrainConfig) -> str:
    return config_io.dump(cfg)


# Fields that may differ between runs of one comparison without changing the protocol:
# the seed, where data and compute are, and how fast it runs (the memory budget follows
# the GPU model and --gpus-per-trial).
_NOT_PROTOCOL = {"seed", "device", "performance"}
_NOT_PROTOCOL_DATA = {"data_dir", "train_dir", "test_dir", "num_workers", "download",
                      "device_resident"}


def protocol_json(cfg: RetrainConfig) -> str:
    """The config as the rows carry it (``protocol`` column of ``retrain.parquet``): all of
    it but the seed, device, data paths and speed settings, as sorted JSON, so that a
    report compares runs by their own records."""
    raw = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in _NOT_PROTOCOL}
    raw["data"] = {k: v for k, v in raw["data"].items() if k not in _NOT_PROTOCOL_DATA}
    raw["batch"] = {k: v for k, v in raw["batch"].items() if k != "memory_budget_bytes"}
    # The behaviour switch's fields only when they differ from the paper's: runs recorded
    # before the switch existed carry the same protocol as runs after it.
    for section, key, paper in _SWITCH_DEFAULTS:
        part = raw if section is None else raw[section]
        if part.get(key) == paper:
            del part[key]
    return json.dumps(raw, sort_keys=True)


_SWITCH_DEFAULTS = ((None, "behaviour", "paper"), ("data", "split", "random"),
                    ("data", "statistics", "prnas"), ("batch", "growth", "fit"))
