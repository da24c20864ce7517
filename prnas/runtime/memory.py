"""How much memory a training step takes and how much we may use: the inputs of the batch size
controller (paper III-C), kept behind one small protocol so the controller is testable without a
GPU and works the same against a CUDA device, a CPU memory budget or a fake.

Nothing here imports ``pynvml`` at module level: the NVML library is only loaded on the rare
fallback path, and a machine without NVIDIA drivers reads as "no GPU", never as an error.
"""

from __future__ import annotations

import contextlib
import resource
import sys
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch

__all__ = [
    "BudgetProbe",
    "CudaMemoryProbe",
    "MemoryProbe",
    "is_oom",
    "probe_for",
]


@runtime_checkable
class MemoryProbe(Protocol):
    def total_bytes(self) -> int | None:
        """Memory this process may use in all; None means unknown (treated as unlimited)."""
        ...

    def peak_bytes(self) -> int:
        """This process's peak usage since the last :meth:`reset_peak`."""
        ...

    def reset_peak(self) -> None: ...

    def floor_bytes(self) -> int:
        """Usage when :meth:`reset_peak` was last called, i.e. before the step measured since:
        weights, optimiser state and (for a process-wide reading) the interpreter."""
        ...

    @property
    def process_wide(self) -> bool:
        """True when a reading is the whole process's resident memory (CPU RSS) rather than the
        step's own allocations: pages the allocator kept from earlier steps hide the per-sample
        cost, so one measured batch size says little about a larger one."""
        ...


# Substrings of allocation failures that torch raises as plain RuntimeError (older CUDA paths,
# cuDNN/cuBLAS workspaces, the CPU allocator) rather than as torch.cuda.OutOfMemoryError.
_OOM_MARKERS = (
    "out of memory",
    "can't allocate memory",
    "cudnn_status_alloc_failed",
    "cublas_status_alloc_failed",
)


def is_oom(err: BaseException) -> bool:
    """True for failures that a smaller batch can cure; everything else must propagate."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    if isinstance(err, RuntimeError):
        msg = str(err).lower()
        return any(marker in msg for marker in _OOM_MARKERS)
    return False


class _Floored:
    """What both probes share: the usage at the last reset, and a step-only reading."""

    _floor = 0
    process_wide = False  # see MemoryProbe.process_wide

    def floor_bytes(self) -> int:
        return self._floor


class CudaMemoryProbe(_Floored):
    """Peak from torch's caching allocator, total = free device memory + what we already hold.

    The reference code compared whole-device usage against the device size, so memory held by
    other processes (or other Ray trials sharing the GPU) was taken for our own and our own
    cache for someone else's. Here the peak is only what this process allocated, and the total
    is what this process could still get: memory nobody holds plus the memory our allocator
    has reserved already. Both are read fresh on every call because other tenants come and go.

    ``budget_bytes`` optionally caps the total, e.g. when several trials share one GPU.
    """

    def __init__(self, device: torch.device, budget_bytes: int | None = None) -> None:
        if device.type != "cuda":
            raise ValueError(f"CudaMemoryProbe needs a cuda device, got {device}")
        index = device.index if device.index is not None else torch.cuda.current_device()
        self._device = torch.device("cuda", index)
        self._budget = budget_bytes

    def total_bytes(self) -> int | None:
        free = _cuda_free_bytes(self._device)
        if free is None:
            return self._budget
        usable = free + torch.cuda.memory_reserved(self._device)
        return usable if self._budget is None else min(usable, self._budget)

    def peak_bytes(self) -> int:
        return int(torch.cuda.max_memory_allocated(self._device))

    def reset_peak(self) -> None:
        torch.cuda.reset_peak_memory_stats(self._device)
        self._floor = int(torch.cuda.memory_allocated(self._device))


def _cuda_free_bytes(device: torch.device) -> int | None:
    try:
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    except RuntimeError:
        pass
    try:
        uuid = str(torch.cuda.get_device_properties(device).uuid)
    except (RuntimeError, AttributeError, AssertionError):
        return None
    return _nvml_free_bytes(uuid)


def _nvml_free_bytes(uuid: str) -> int | None:
    """Free bytes of the GPU with this UUID via NVML, or None when NVML is unusable.

    Looked up by UUID, not index: NVML numbers all devices, torch only the visible ones
    (CUDA_VISIBLE_DEVICES), so indices disagree exactly on shared multi-GPU nodes.
    """
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        name = uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"
        handle = pynvml.nvmlDeviceGetHandleByUUID(name)
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).free)
    except pynvml.NVMLError:
        return None
    finally:
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()


class BudgetProbe(_Floored):
    """A fixed budget as the total, and a peak that callers measure or report.

    The peak is the larger of what was passed to :meth:`record` since the last reset and what
    ``measure`` returns (if given); ``reset`` is called on :meth:`reset_peak` so a measuring
    function with its own high-water mark can restart it. ``process_wide`` (the default when
    there is a ``measure``, i.e. resident memory) makes the controller grow one b_mult until
    it has measured two sizes; pass False when the measure is the step's own allocations.
    """

    def __init__(
        self,
        budget_bytes: int,
        measure: Callable[[], int] | None = None,
        reset: Callable[[], None] | None = None,
        *,
        process_wide: bool | None = None,
    ) -> None:
        if budget_bytes < 1:
            raise ValueError(f"budget_bytes must be >= 1, got {budget_bytes}")
        self._budget = int(budget_bytes)
        self._measure = measure
        self._reset = reset
        self._recorded = 0
        # Default: a measuring function is a process-wide reading (RSS); recorded values
        # are a step's own allocations.
        self.process_wide = measure is not None if process_wide is None else process_wide

    def record(self, nbytes: int) -> None:
        self._recorded = max(self._recorded, int(nbytes))

    def total_bytes(self) -> int | None:
        return self._budget

    def peak_bytes(self) -> int:
        measured = self._measure() if self._measure is not None else 0
        return max(self._recorded, int(measured))

    def reset_peak(self) -> None:
        self._recorded = 0
        if self._reset is not None:
            self._reset()
        # A freshly reset high-water mark reads the current usage.
        self._floor = int(self._measure()) if self._measure is not None else 0


def rss_peak_bytes() -> int:
    """The process's resident-set high-water mark (Linux VmHWM; getrusage elsewhere).

    Approximate by nature: it counts the interpreter, libraries and the dataset, and pages the
    allocator keeps after freeing. So a CPU budget is a cap on the whole process's RSS, and the
    reading errs high, which only makes the batch size grow more cautiously.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss) if sys.platform == "darwin" else int(maxrss) * 1024


def reset_rss_peak() -> None:
    """Restart VmHWM at the current RSS (Linux >= 4.0); elsewhere the peak stays lifelong,
    i.e. an upper bound that only slows growth."""
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")


def probe_for(device: torch.device, memory_budget_bytes: int | None) -> MemoryProbe | None:
    """The probe a training loop should use; None means "no memory signal: keep b_min".

    Without a budget a CPU run has no meaningful total (swap, overcommit, other tenants), so
    it keeps the fixed minimum batch size rather than grow into the OOM killer, which cannot
    be caught and backed off from.
    """
    if device.type == "cuda":
        return CudaMemoryProbe(device, budget_bytes=memory_budget_bytes)
    if memory_budget_bytes is None:
        return None
    return BudgetProbe(memory_budget_bytes, measure=rss_peak_bytes, reset=reset_rss_peak)
