"""Drop-path (FractalNet / NASNet): drop a whole op output per sample while training.

DARTS' version divides by ``keep_prob`` in place and so turns ``p = 1`` into
NaNs; here ``p = 1`` drops everything cleanly, which also makes the rule
"never on identity" directly testable.

Under data-parallel training each worker holds one contiguous shard of a
global batch; :func:`global_batch_masks` makes every worker draw the masks of
the *whole* global batch (the workers' RNG streams are identical) and keep its
own rows, so the samples are dropped exactly as one process would drop them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

_SHARD: tuple[int, int] | None = None  # (rank, world size) while global_batch_masks is active


@contextmanager
def global_batch_masks(rank: int, world_size: int) -> Iterator[None]:
    """Within this block, masks are drawn for ``world_size`` equal shards and sliced."""
    global _SHARD
    previous, _SHARD = _SHARD, (rank, world_size)
    try:
        yield
    finally:
        _SHARD = previous


def drop_path(x: torch.Tensor, p: float) -> torch.Tensor:
    """Zero each sample's ``x`` with probability ``p``, rescale survivors by ``1 / (1 - p)``."""
    if p <= 0.0:
        return x
    if p >= 1.0:
        return torch.zeros_like(x)
    keep = 1.0 - p
    n = x.shape[0]
    rank, world = _SHARD or (0, 1)
    mask = torch.empty((n * world,) + (1,) * (x.dim() - 1), device=x.device, dtype=x.dtype)
    mask = mask.bernoulli_(keep)[rank * n:(rank + 1) * n]
    return x * mask / keep
