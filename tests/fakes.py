"""Test doubles for prnas' small protocols, shared by the tests."""

from __future__ import annotations

from collections.abc import Callable

import torch


class FakeProbe:
    """Test double: memory is ``model(batch_size)`` bytes for a chosen batch size.

    ``batch_size`` is an int the test sets, or a callable read on every query (e.g.
    ``lambda: controller.batch_size``). :meth:`simulate` plays a training step: it raises
    ``torch.cuda.OutOfMemoryError`` when the model exceeds ``oom_above_bytes`` (default: the
    total), otherwise it records that step's size for :meth:`peak_bytes`.
    """

    def __init__(
        self,
        total: int | None,
        model: Callable[[int], int],
        *,
        batch_size: int | Callable[[], int] = 0,
        oom_above_bytes: int | None = None,
    ) -> None:
        self.total = total
        self.model = model
        self.batch_size = batch_size
        self.oom_above_bytes = oom_above_bytes if oom_above_bytes is not None else total
        self.resets = 0

    def current_batch_size(self) -> int:
        return self.batch_size() if callable(self.batch_size) else int(self.batch_size)

    def simulate(self, batch_size: int) -> None:
        need = self.model(batch_size)
        if self.oom_above_bytes is not None and need > self.oom_above_bytes:
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory (fake): batch {batch_size} needs {need} bytes"
            )
        if not callable(self.batch_size):
            self.batch_size = batch_size

    def total_bytes(self) -> int | None:
        return self.total

    def peak_bytes(self) -> int:
        return int(self.model(self.current_batch_size()))

    def reset_peak(self) -> None:
        self.resets += 1

    def floor_bytes(self) -> int:
        return 0

    @property
    def process_wide(self) -> bool:
        return False
