"""Every random stream a run draws from, saved and restored in one place.

Search and retrain both checkpoint at epoch boundaries and promise that a
resumed run continues bit for bit; that only holds if the same streams are
saved the same way. The global streams (Python, NumPy, torch CPU, and CUDA on
every visible GPU) are handled here once; a run's own ``torch.Generator``s
(batch order, the device-resident augmentation stream ``augment``) are passed
by name so they sit in the same mapping.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture(**generators: torch.Generator) -> dict[str, Any]:
    """The state of every global stream plus the named ``generators``."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        # All devices, or None: a checkpoint written on a GPU node restores on a CPU one.
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    for name, gen in generators.items():
        state[name] = gen.get_state()
    return state


def restore(state: dict[str, Any], **generators: torch.Generator) -> None:
    """Put every stream back (the checkpoint's format version says it holds them all)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")  # None: captured without CUDA
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    for name, gen in generators.items():
        gen.set_state(state[name])
