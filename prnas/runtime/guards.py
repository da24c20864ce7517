"""Stopping a run that diverged, instead of training on NaNs until something crashes.

A non-finite loss (an ``lr`` far too large, a corrupt batch) poisons every
weight within a step or two; everything computed afterwards is noise, and the
decision taken on it would be garbage. The step that sees it raises, before the
epoch's checkpoint is written, so the last good checkpoint survives.
"""

from __future__ import annotations


class TrainingDiverged(FloatingPointError):
    """A non-finite loss; the message says where and what to change."""

    @classmethod
    def at(cls, loss: float, where: str) -> TrainingDiverged:
        return cls(f"training diverged: loss is {loss} at {where}; the last good checkpoint "
                   "is kept. Lower the learning rate (or check the data) and start again")
