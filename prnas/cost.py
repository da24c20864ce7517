"""What a network costs at inference: multiply-accumulates, latency and throughput.

**MACs** are counted by PyTorch's ``torch.utils.flop_counter.FlopCounterMode``
over one forward pass of a single image at the dataset's input size, in eval
mode (no auxiliary head, no drop-path). The counter sees convolutions and
matrix products (the linear classifier) only, and counts a multiply-add as two
FLOPs, so ``MACs = FLOPs / 2``: BatchNorm, ReLU, pooling, the additions of a
cell's nodes and biases are not counted. This is the convention of the DARTS
line of papers ("multiply-adds"), e.g. 528,359,040 (528M) for DARTS V2 at C=36,
20 cells, 32x32.

**Latency** is the median wall time of a batch-1 forward pass, **throughput**
the images per second of a batch-64 forward pass (64 / median time), both
after warm-up passes, in fp32 inference mode on the device given, in the
memory layout the retrain uses there (``performance.channels_last``). Timings
depend on the machine and its load; the device and torch's CPU thread count
are recorded beside them.
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["Timing", "count_macs", "device_name", "measure_timing"]

LATENCY_BATCH, THROUGHPUT_BATCH = 1, 64


def count_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one forward pass of one ``C x H x W`` image (eval mode).

    Runs on meta tensors when the model's parameters are on the meta device,
    otherwise on the model's device; the model's train/eval mode is restored.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


@dataclass(frozen=True)
class Timing:
    """Median batch-1 latency (ms) and batch-64 throughput (images/s), where and how measured."""

    latency_ms_b1: float
    throughput_b64: float
    cost_device: str
    cost_threads: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def device_name(device: torch.device) -> str:
    """``cuda: NVIDIA H200`` or ``cpu: <processor model>``: enough to compare timings."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"{device.type}: {_cpu_model()}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(model: nn.Module, x: torch.Tensor, warmup: int, repeats: int,
                    budget_s: float) -> float:
    """Median of ``repeats`` timed passes (at least 3 once ``budget_s`` is spent)."""
    device = x.device
    for _ in range(warmup):
        model(x)
    _sync(device)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() - started < budget_s):
        t0 = time.perf_counter()
        model(x)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_timing(model: nn.Module, input_shape: tuple[int, int, int],
                   device: torch.device | str = "cpu", *, channels_last: bool | None = None,
                   repeats: int = 20, budget_s: float = 5.0) -> Timing:
    """Latency at batch 1 and throughput at batch 64 of ``model`` on ``device``.

    ``channels_last`` None: as the retrain's ``auto`` (on for CPU, off for CUDA).
    Each batch size gets warm-up passes, then up to ``repeats`` timed passes
    within about ``budget_s`` seconds (never fewer than 3). The model's
    device, layout and train/eval mode are restored afterwards.
    """
    device = torch.device(device)
    if channels_last is None:
        channels_last = device.type == "cpu"
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    param = next(model.parameters(), None)
    home = param.device if param is not None else device
    home_cl = param is not None and param.dim() == 4 and param.is_contiguous(
        memory_format=torch.channels_last) and not param.is_contiguous()
    was_training = model.training
    model.to(device, memory_format=fmt).eval()
    try:
        with torch.inference_mode():
            seconds = {}
            for batch, warmup in ((LATENCY_BATCH, 5), (THROUGHPUT_BATCH, 2)):
                # A private generator: measuring must not move the caller's random stream.
                x = torch.randn((batch, *input_shape), generator=torch.Generator().manual_seed(0))
                x = x.to(device).contiguous(memory_format=fmt)
                seconds[batch] = _median_seconds(model, x, warmup, repeats, budget_s)
    finally:
        model.to(home, memory_format=torch.channels_last if home_cl
                 else torch.contiguous_format).train(was_training)
    return Timing(latency_ms_b1=seconds[LATENCY_BATCH] * 1e3,
                  throughput_b64=THROUGHPUT_BATCH / seconds[THROUGHPUT_BATCH],
                  cost_device=device_name(device), cost_threads=torch.get_num_threads())
