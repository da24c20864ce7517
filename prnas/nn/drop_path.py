"""Drop-path (FractalNet / NASNet): drop a whole op output per sample while training.

DARTS' version divides by ``keep_prob`` in place and so turns ``p = 1`` into
NaNs; here ``p = 1`` drops everything cleanly, which also makes the rule
"never on identity" directly testable.
"""

from __future__ import annotations

import torch


def drop_path(x: torch.Tensor, p: float) -> torch.Tensor:
    """Zero each sample's ``x`` with probability ``p``, rescale survivors by ``1 / (1 - p)``."""
    if p <= 0.0:
        return x
    if p >= 1.0:
        return torch.zeros_like(x)
    keep = 1.0 - p
    mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device, dtype=x.dtype)
    return x * mask.bernoulli_(keep) / keep
