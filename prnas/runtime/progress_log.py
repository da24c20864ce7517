"""The console log of a long training job: epoch lines, and a line within an epoch that
runs long, so that no stretch of training is silent for more than ``every_s`` seconds.

A paper-scale search epoch on a CPU (or a retrain epoch of a real image folder) lasts
minutes; the per-cycle and per-epoch lines alone left a new user's console silent for
2.5 minutes. A Tune job prints one line per trial and cycle (or epoch) from its driver;
with several trials a line per epoch of each would flood it, so there epoch lines are
printed only when the trial has been quiet for ``every_s`` seconds. Within an epoch the
loop asks :meth:`ProgressLog.due` once per step and builds its line only then.
"""

from __future__ import annotations

import time
from collections.abc import Callable

EVERY_S = 30.0  # the longest silence during training, by default


class ProgressLog:
    """Lines through ``emit``: every epoch line when ``every_epoch``, else one when
    ``every_s`` seconds passed since the last line; within an epoch, the loop's own line
    when :meth:`due`. ``clock`` is injectable for tests."""

    def __init__(self, emit: Callable[[str], None], *, every_s: float = EVERY_S,
                 every_epoch: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not every_s > 0:
            raise ValueError(f"every_s must be > 0, got {every_s}")
        self.emit, self.every_s, self.every_epoch, self.clock = emit, every_s, every_epoch, clock
        self.last = clock()

    def due(self) -> bool:
        return self.clock() - self.last >= self.every_s

    def epoch(self, text: str) -> None:
        """An epoch's line."""
        if self.every_epoch or self.due():
            self.say(text)

    def say(self, text: str) -> None:
        self.emit(text)
        self.mark()

    def mark(self) -> None:
        """Something else printed a line for this job (the driver's per-cycle line)."""
        self.last = self.clock()
