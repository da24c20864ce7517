"""Speed switches shared by the search and the retrain, resolved once per device.

Each switch changes how fast a step runs, never what it computes beyond
floating-point noise (bf16 autocast being the one opt-in exception, hence off
by default). ``auto`` picks what was measured to help on that device; see
``benchmarks/README.md`` for the figures behind each default.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["PerformanceConfig", "Resolved", "autocast", "compiled", "resolve",
           "to_memory_format"]


class PerformanceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    fast_path: bool = Field(
        True,
        description="search only: the optimised step (no alpha graph in grace epochs or in the "
        "weight step, alpha-only gradients in the alpha step, shared work per edge); false runs "
        "the straightforward reference step, which computes the same values more slowly",
    )
    fuse: bool = Field(
        False,
        description="search only, with fast_path: in training, every candidate of every edge "
        "that reads one cell state computed together (prnas.nn.fused_cell): one kernel per "
        "pool, conv structure and BN instead of one chain per candidate",
    )
    channels_last: bool | Literal["auto"] = Field(
        "auto", description="NHWC activations and weights; auto: on for CPU, on CUDA with amp"
    )
    amp: Literal["off", "bf16"] = Field(
        "off", description="bf16 autocast of the forward passes (meant for GPUs)"
    )
    compile: bool = Field(
        False, description="torch.compile the network (recompiles per search cycle)"
    )


@dataclass(frozen=True)
class Resolved:
    """The switches as they apply on one device."""

    fast_path: bool
    channels_last: bool
    amp_dtype: torch.dtype | None
    compile: bool
    fuse: bool = False

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


def resolve(cfg: PerformanceConfig, device: torch.device) -> Resolved:
    """``auto`` channels_last: 2-2.5x on CPU (max/avg pool and depthwise kernels are NHWC-fast
    there); on CUDA only together with bf16, where the tensor-core kernels want NHWC."""
    amp = torch.bfloat16 if cfg.amp == "bf16" else None
    cl = cfg.channels_last
    if cl == "auto":
        cl = device.type == "cpu" or amp is not None
    return Resolved(fast_path=cfg.fast_path, channels_last=bool(cl), amp_dtype=amp,
                    compile=cfg.compile, fuse=cfg.fast_path and cfg.fuse)


def to_memory_format(x: torch.Tensor, perf: Resolved) -> torch.Tensor:
    """A 4-d batch in the network's layout (a no-op when it already is)."""
    if perf.channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def autocast(device: torch.device, perf: Resolved) -> contextlib.AbstractContextManager:
    if perf.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=perf.amp_dtype)


def compiled(module: torch.nn.Module, perf: Resolved) -> torch.nn.Module:
    """``module`` itself, or its ``torch.compile`` wrapper (sharing its parameters).

    ``dynamic=True``: the adaptive batch size changes the batch dimension every few
    steps, which would otherwise recompile at each new size.
    """
    return torch.compile(module, dynamic=True) if perf.compile else module
