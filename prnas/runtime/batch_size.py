"""The variable batch size of paper III-C: b = b_min + n*b_mult <= b_max. Every ``grow_every``
steps a linear model of peak memory vs batch size picks the n that maximises the batch under
``threshold`` of the memory we may use, and the batch grows straight to it.

Two things the reference code lacked: the memory readings are this process's own (see
:mod:`prnas.runtime.memory`), and an out-of-memory error backs off to a smaller size and
remembers it as a ceiling instead of killing the search. (The reference also grew differently:
proportionally to whole-device usage, at most doubling per decision.)

The decisions are pure functions (:func:`predict_peak`, :func:`next_size`); the controller only
keeps the observations and talks to the probe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from prnas.runtime.device import release_cached_memory
from prnas.runtime.memory import MemoryProbe, is_oom

__all__ = [
    "AdaptiveBatchSampler",
    "BatchSizeConfig",
    "BatchSizeController",
    "next_size",
    "predict_peak",
    "proportional_size",
    "run_step_with_backoff",
]

T = TypeVar("T")

_STATE_VERSION = 1


class BatchSizeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    b_min: int = Field(24, ge=1, description="starting and smallest batch size")
    b_mult: int = Field(8, ge=1, description="step between allowed sizes: b_min + n*b_mult")
    b_max: int = Field(128, ge=1, description="largest allowed batch size, >= b_min")
    grow_every: int = Field(5, ge=1, description="training steps between growth decisions")
    threshold: float = Field(
        0.95, gt=0.0, le=1.0, description="fraction of usable memory the prediction must fit in"
    )
    growth: Literal["fit", "proportional"] = Field(
        "fit", description="fit: the largest size a linear memory model predicts to fit, "
        "backing off on out-of-memory (paper III-C); proportional: the reference code's "
        "rule, size x threshold / usage, at most doubling, never shrinking, no back-off "
        "(set by behaviour: reference)")
    memory_budget_bytes: int | None = Field(
        None,
        ge=1,
        description="CPU: grow against this RSS budget (None keeps b_min); CUDA: caps the total",
    )

    @field_validator("b_max")
    @classmethod
    def _b_max_at_least_b_min(cls, v: int, info: ValidationInfo) -> int:
        b_min = info.data.get("b_min")
        if b_min is not None and v < b_min:
            raise ValueError(f"b_max must be >= b_min ({b_min}), got {v}")
        return v

    def largest_size(self) -> int:
        """The largest grid size b_min + n*b_mult that is <= b_max."""
        return self.b_min + (self.b_max - self.b_min) // self.b_mult * self.b_mult


def _linear_model(points: dict[int, int], floor: int) -> tuple[int, int, float]:
    """(anchor size, its peak, bytes per sample) of the model :func:`predict_peak` describes."""
    anchor = max(points)
    anchor_peak = points[anchor]
    slope = _ls_slope(points) if len(points) >= 2 else 0.0
    if slope <= 0.0:
        slope = (anchor_peak - min(max(floor, 0), anchor_peak - 1)) / anchor
    return anchor, anchor_peak, slope


def predict_peak(points: dict[int, int], size: int, floor: int = 0) -> float | None:
    """Peak memory predicted at ``size`` from observed {batch size: peak bytes}; None if no data.

    Linear in the batch size, anchored at the largest observed size (extrapolation is what we
    need, and the anchor is the most relevant measurement). The slope is the least-squares one
    over all sizes. With one size, or a fit whose slope is not positive (noise, or a high-water
    mark that did not move), the fixed part is estimated as ``floor``, the usage measured
    before the steps (0 when unknown): the true fixed part is at least that (weights, optimiser
    state, plus the step's own fixed workspace), so the per-sample cost is overestimated and
    the error is on the cautious side. Without the floor a process-wide reading (CPU RSS,
    mostly interpreter and libraries) would never let the size grow past b_min.
    """
    if not points:
        return None
    anchor, anchor_peak, slope = _linear_model(points, floor)
    return anchor_peak + slope * (size - anchor)


def _ls_slope(points: dict[int, int]) -> float:
    n = len(points)
    mx = sum(points) / n
    my = sum(points.values()) / n
    sxx = sum((x - mx) ** 2 for x in points)
    sxy = sum((x - mx) * (y - my) for x, y in points.items())
    return sxy / sxx


def next_size(
    cfg: BatchSizeConfig,
    current: int,
    points: dict[int, int],
    total: int | None,
    ceiling: int | None,
    floor: int = 0,
    process_wide: bool = False,
) -> int:
    """The batch size after a decision: the largest grid size ``b_min + n*b_mult`` (``<= b_max``,
    below the OOM ceiling) that the model predicts to fit under ``threshold * total``.

    Paper III-C: find the n that maximises the batch under the threshold, and go there in one
    decision rather than one b_mult per decision. Two guards keep a noisy fit from overshooting:

    * a least-squares fit is trusted only as far beyond its largest measured size as the range
      of sizes it was measured over (each decision adds a measurement and so widens it); a
      single measurement uses the cautious proportional model (see :func:`predict_peak`) with
      no such bound, since it overestimates;
    * if the size in use measured above the threshold (a prediction that fell short, without
      running out of memory), the decision moves down to the largest size predicted to fit.

    ``process_wide`` readings (CPU RSS) get a third guard: a single measured size grows by one
    b_mult only. After a warm-up step the resident memory already holds the pages the
    allocator kept, so the usage before a step (the floor) is close to its peak and the
    proportional model sees almost no per-sample cost; at the paper's network on a 2-core CPU
    it predicted that batch 208 fits where 24 -> 208 then peaked at 465 % of the threshold.
    The second size's extra memory is the first real per-sample reading, after which the fit
    and its range bound above take over (the range, and so the step, doubles per decision).

    An unknown total (None) means no memory limit is known: the size then goes straight to
    b_max (or below the OOM ceiling). Without any measurement the size stays.
    """
    top = cfg.largest_size()
    if ceiling is not None:
        # The largest grid size strictly below the ceiling.
        top = min(top, cfg.b_min + max(0, ceiling - 1 - cfg.b_min) // cfg.b_mult * cfg.b_mult)
    if total is None:
        return max(current, top)
    if not points:
        return current
    budget = cfg.threshold * total
    over = points.get(current, 0) > budget
    anchor, anchor_peak, slope = _linear_model(points, floor)
    if len(points) >= 2:
        top = min(top, max(anchor, 2 * anchor - min(points)))
    elif process_wide:
        top = min(top, anchor + cfg.b_mult)
    # Solve the linear model for the budget, snap down to the grid, then confirm with the same
    # prediction (float rounding at the boundary).
    fits = anchor + (budget - anchor_peak) / slope
    size = min(top, cfg.b_min + max(0, int((fits - cfg.b_min) // cfg.b_mult)) * cfg.b_mult)
    while size > cfg.b_min and predict_peak(points, size, floor) > budget:
        size -= cfg.b_mult
    if over:
        return min(size, current)
    return max(size, current)


def proportional_size(cfg: BatchSizeConfig, current: int, peak: int | None,
                      total: int | None) -> int:
    """The reference code's decision (``growth: proportional``): ``current x threshold /
    usage`` for the highest usage (peak / total) since the last decision, snapped down to
    the grid, at most twice ``current`` and ``b_max``, and never below ``current``. Its
    usage is whole-device memory, which is not reproducible on a shared device; this is
    the process's own peak. Without a reading (no total or no peak) the size stays, as the
    reference's would without a usage above 0."""
    if total is None or not peak:
        return current
    top = min(cfg.largest_size(), 2 * current)
    want = int(cfg.threshold * current * total // peak)
    size = cfg.b_min + max(0, (min(want, top) - cfg.b_min) // cfg.b_mult) * cfg.b_mult
    return max(size, current)


class BatchSizeController:
    """Owns the current batch size of one training loop.

    Every observation is the probe's peak over one training step (the probe is reset after
    each reading), stored as the maximum per batch size. :meth:`history` is the batch size of
    every successful step since construction, kept run-length encoded so checkpoints stay
    small; it survives :meth:`reset` because it is a record for metrics, not model state
    (slice ``history()[start:]`` for a cycle).
    """

    def __init__(self, cfg: BatchSizeConfig, probe: MemoryProbe | None) -> None:
        self.cfg = cfg
        self.probe = probe
        self.batch_size = cfg.b_min
        self._points: dict[int, int] = {}
        self._floor: int | None = None  # lowest usage seen before a measured step
        self._ceiling: int | None = None
        self._since_decision = 0
        self._recent = 0  # highest peak since the last decision (growth: proportional)
        self._runs: list[list[int]] = []  # [[size, count], ...]
        self._reset_probe()

    @property
    def ceiling(self) -> int | None:
        """Smallest batch size that ran out of memory since the last reset (never reused)."""
        return self._ceiling

    def step_done(self, batch_size: int | None = None) -> None:
        """Record a successful step; every ``grow_every`` steps decide whether to grow.

        ``batch_size`` is the number of samples the step really used when that differs from
        :attr:`batch_size` (the short last batch of an epoch, or batches that DataLoader
        workers drew before a change); it keeps the memory model honest.
        """
        used = self.batch_size if batch_size is None else int(batch_size)
        if self._runs and self._runs[-1][0] == used:
            self._runs[-1][1] += 1
        else:
            self._runs.append([used, 1])
        if self.probe is None:
            return
        peak = int(self.probe.peak_bytes())
        self._points[used] = max(peak, self._points.get(used, 0))
        self._recent = max(self._recent, peak)
        floor = int(getattr(self.probe, "floor_bytes", lambda: 0)())
        self._floor = floor if self._floor is None else min(self._floor, floor)
        self._reset_probe()
        self._since_decision += 1
        if self._since_decision < self.cfg.grow_every:
            return
        self._since_decision = 0
        if self.cfg.growth == "proportional":
            self.batch_size = proportional_size(self.cfg, self.batch_size, self._recent,
                                                self.probe.total_bytes())
            self._recent = 0
            return
        self.batch_size = next_size(
            self.cfg, self.batch_size, self._points, self.probe.total_bytes(), self._ceiling,
            self._floor or 0, bool(getattr(self.probe, "process_wide", False)),
        )

    def on_oom(self) -> int:
        """The step at the current size ran out of memory: never use this size again (until
        :meth:`reset`) and fall back one b_mult. Raises at b_min, where nothing is left to try,
        and under ``growth: proportional``, which never backs off (as the reference)."""
        if self.cfg.growth == "proportional":
            raise RuntimeError(
                f"out of memory at batch size {self.batch_size}; batch.growth: proportional "
                "(the reference code's rule) never backs off: lower b_max or use growth: fit")
        if self.batch_size <= self.cfg.b_min:
            raise RuntimeError(
                f"out of memory at the minimum batch size b_min={self.cfg.b_min}; "
                "cannot back off further: lower b_min, shrink the network, or free memory"
            )
        self._ceiling = (
            self.batch_size if self._ceiling is None else min(self._ceiling, self.batch_size)
        )
        self.batch_size = max(self.cfg.b_min, self.batch_size - self.cfg.b_mult)
        self._since_decision = 0
        self._reset_probe()
        return self.batch_size

    def reset(self) -> None:
        """The network changed (pools replaced): what we learned about memory no longer holds."""
        self.batch_size = self.cfg.b_min
        self._points.clear()
        self._floor = None
        self._ceiling = None
        self._since_decision = 0
        self._recent = 0
        self._reset_probe()

    def history(self) -> list[int]:
        return [size for size, count in self._runs for _ in range(count)]

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-safe values (pairs instead of int-keyed dicts, which JSON would stringify)."""
        return {
            "version": _STATE_VERSION,
            "batch_size": self.batch_size,
            "points": [[size, peak] for size, peak in sorted(self._points.items())],
            "floor": self._floor,
            "ceiling": self._ceiling,
            "since_decision": self._since_decision,
            "recent": self._recent,
            "history": [list(run) for run in self._runs],
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        if d.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported batch size state version {d.get('version')!r}")
        size = int(d["batch_size"])
        cfg = self.cfg
        if not (cfg.b_min <= size <= cfg.b_max and (size - cfg.b_min) % cfg.b_mult == 0):
            raise ValueError(
                f"checkpointed batch_size {size} is not on the configured grid "
                f"{cfg.b_min} + n*{cfg.b_mult} <= {cfg.b_max}"
            )
        self.batch_size = size
        self._points = {int(s): int(p) for s, p in d["points"]}
        self._floor = None if d.get("floor") is None else int(d["floor"])
        self._ceiling = None if d["ceiling"] is None else int(d["ceiling"])
        self._since_decision = int(d["since_decision"])
        self._recent = int(d.get("recent", 0))
        self._runs = [[int(s), int(c)] for s, c in d["history"]]
        self._reset_probe()

    def _reset_probe(self) -> None:
        if self.probe is not None:
            self.probe.reset_peak()


class AdaptiveBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of a fresh random permutation per epoch, each as large as the controller says
    at the moment it is drawn.

    With ``DataLoader(num_workers=0)`` a batch is drawn when the loop asks for it, so a change
    applies to the very next step. With workers the loader draws up to
    ``num_workers * prefetch_factor`` batches ahead, so a change takes effect that many steps
    later; pass the real size to :meth:`BatchSizeController.step_done` then.
    """

    def __init__(
        self,
        n: int,
        controller: BatchSizeController,
        generator: torch.Generator,
        drop_last: bool = False,
    ) -> None:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.n = n
        self.controller = controller
        self.generator = generator
        self.drop_last = drop_last

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.n, generator=self.generator).tolist()
        start = 0
        while start < self.n:
            size = self.controller.batch_size
            if self.drop_last and self.n - start < size:
                return
            yield order[start : start + size]
            start += size

    def __len__(self) -> int:
        """Batches per epoch at the *current* size: an estimate, since the size may change."""
        size = self.controller.batch_size
        return self.n // size if self.drop_last else -(-self.n // size)


def run_step_with_backoff(
    step: Callable[[int], T],
    controller: BatchSizeController,
    on_retry: Callable[[int], None] | None = None,
    used_size: Callable[[T], int] | None = None,
    record: bool = True,
) -> T:
    """Run ``step(batch_size)``; on out-of-memory shrink the batch and retry until it fits.

    ``step`` must be safe to repeat (zero gradients first; a step that already updated the
    alphas before failing would update them again) and use at most the size it is given, e.g.
    by slicing its already-drawn batch (the cut samples are skipped this epoch). Errors that are
    not OOM propagate unchanged; OOM at b_min raises RuntimeError chained to the OOM.
    ``used_size(result)`` tells how many samples the step really used (a short last batch),
    so the memory model records the peak under the right size. ``record=False`` is for a
    sub-step of a training step (the alpha half of a DARTS step): it backs off the same
    way but leaves counting the step, and reading its peak, to the sub-step that follows.
    """
    while True:
        try:
            result = step(controller.batch_size)
        except Exception as err:
            if not is_oom(err):
                raise
            new_size = controller.on_oom()
        else:
            if record:
                controller.step_done(None if used_size is None else used_size(result))
            return result
        # Outside the except block: the traceback, and the activations its frames hold, are gone.
        release_cached_memory()
        if on_retry is not None:
            on_retry(new_size)
