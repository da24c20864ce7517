"""Which images a search or retrain sees, as a validated, immutable value.

A pydantic model so a YAML config or CLI flag that names an unknown field or an
out-of-range value fails before any file is read, with the field named.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DATA_DIR_ENV = "PRNAS_DATA_DIR"
DEFAULT_DATA_DIR = "./data"


class DataConfig(BaseModel):
    """Dataset choice and the seeded splits drawn from it; see ``prnas.data.datasets``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    dataset: Literal["cifar10", "cifar100", "demo", "imagefolder", "imagenet"] = "cifar10"
    data_dir: str | None = Field(
        None, description=f"CIFAR root (imagenet: the folder holding train/ and val/); "
        f"null -> ${DATA_DIR_ENV} -> {DEFAULT_DATA_DIR}"
    )
    download: bool = Field(False, description="let torchvision download CIFAR (needs internet)")
    train_dir: str | None = Field(None, description="imagefolder: one subfolder per class")
    test_dir: str | None = Field(None, description="imagefolder: optional separate test tree")
    holdout_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="demo/imagefolder without test tree: test share"
    )
    input_size: int | None = Field(
        None, ge=4, description="square side in pixels; null -> 32 (16 for demo, 224 for "
        "imagenet)"
    )
    split_seed: int = Field(
        0, ge=0, le=2**63 - 1, description="seeds the weights/alphas split and hold-outs"
    )
    split: Literal["random", "in_order"] = Field(
        "random", description="search halves: a random half each, seeded by split_seed "
        "(random), or the first and second half in file order (in_order, the reference "
        "code's; set by behaviour: reference)")
    statistics: Literal["prnas", "reference"] = Field(
        "prnas", description="CIFAR normalisation: mean/std computed from the training set "
        "to 4 decimals (prnas), or the reference code's constants (reference; set by "
        "behaviour: reference)")
    subset: int | None = Field(None, ge=2, description="use at most N training images")
    test_subset: int | None = Field(None, ge=1, description="use at most N test images")
    augment: bool = Field(True, description="random crop (+ flip for natural images)")
    num_workers: int | Literal["auto"] = Field(
        "auto",
        description="DataLoader workers of the CPU-side pipeline; auto: 0 on a CPU or with "
        "device-resident data, else min(8, available CPUs - 1) (prnas.data.loading)",
    )
    device_resident: bool | Literal["auto"] = Field(
        "auto",
        description="hold the images on the device and augment whole batches there; "
        "auto: on CUDA when the data takes <= 25 % of usable device memory",
    )

    @model_validator(mode="after")
    def _dirs_fit_dataset(self) -> DataConfig:
        if self.dataset == "imagefolder":
            if not self.train_dir:
                raise ValueError("train_dir is required when dataset='imagefolder'")
        else:
            # Silently ignoring them would let a config train on CIFAR while its
            # author believes it trains on their own images.
            for name in ("train_dir", "test_dir"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{name} only applies to dataset='imagefolder' "
                        f"(dataset is {self.dataset!r})"
                    )
        return self

    @field_validator("num_workers")
    @classmethod
    def _workers_not_negative(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 0:
            raise ValueError(f"num_workers must be >= 0 or 'auto', got {v}")
        return v

    @property
    def explicit_workers(self) -> int:
        """``num_workers`` when set as a number, else 0: what a CPU reservation must add."""
        return self.num_workers if isinstance(self.num_workers, int) else 0

    @property
    def resolved_input_size(self) -> int:
        """Digits are 8x8, so the demo's default is smaller than CIFAR's native 32."""
        if self.input_size is not None:
            return self.input_size
        return {"demo": 16, "imagenet": 224}.get(self.dataset, 32)

    def with_absolute_paths(self) -> DataConfig:
        """Pin every path to the current directory and environment.

        Ray runs each trial in its own working directory and possibly another
        environment, so the driver should call this before handing the config over.
        """
        updates: dict[str, str] = {"data_dir": str(resolve_data_dir(self))}
        for name in ("train_dir", "test_dir"):
            value = getattr(self, name)
            if value is not None:
                updates[name] = str(Path(value).expanduser().resolve())
        return self.model_copy(update=updates)


def resolve_data_dir(cfg: DataConfig) -> Path:
    """CIFAR root: ``cfg.data_dir``, else ``$PRNAS_DATA_DIR``, else ``./data`` (made absolute)."""
    raw = cfg.data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return Path(raw).expanduser().resolve()
