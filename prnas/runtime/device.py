"""Device choice and reproducibility switches, in one place."""

from __future__ import annotations

import gc
import os
import random

import numpy as np
import torch


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` takes CUDA when present; asking for CUDA without one is a clear error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(requested)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} requested but CUDA is not available here")
    return dev


def configure_threads(num_threads: int | None = None) -> None:
    """Pin torch's intra-op threads (Ray trials otherwise oversubscribe the node's cores)."""
    n = num_threads or int(os.environ.get("PRNAS_NUM_THREADS", "0")) or (os.cpu_count() or 1)
    torch.set_num_threads(max(1, n))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # The reference code set cudnn.benchmark=True, which makes runs irreproducible.
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def release_cached_memory() -> None:
    """Collect garbage, then hand CUDA's cached blocks back (after an OOM, between models)."""
    gc.collect()  # tensors of a failed step may sit in reference cycles
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
