"""Learning-rate schedules shared by the search (a restart per cycle) and the retrain."""

from __future__ import annotations

import math


def cosine_lr(epoch: int, epochs: int, lr: float, lr_min: float = 0.0) -> float:
    """The rate torch's CosineAnnealingLR(T_max=epochs, eta_min=lr_min) uses in 0-indexed
    ``epoch``; a closed form, so resuming needs no scheduler state."""
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2
