"""Atomic torch checkpoints, loaded without running code.

Written to a temp file in the same folder, then renamed, so a crash never leaves
half a checkpoint. Loaded with ``weights_only=True``: run folders are shared
between colleagues, and a full unpickle of a crafted ``checkpoint.pt`` would run
whatever code it names. Only tensors, plain containers and the NumPy arrays of
``np.random.get_state()`` are admitted; anything else is refused, with one line.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prnas._io import atomic_write_bytes


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, unsafe, or of another kind of run.

    ``incomplete`` is true for a missing, empty or truncated file (what a crash while
    one was being copied leaves), false for one that is whole but must not be used.
    """

    def __init__(self, message: str, *, incomplete: bool = False) -> None:
        super().__init__(message)
        self.incomplete = incomplete


def to_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    atomic_write_bytes(path, to_bytes(obj))


def _numpy_globals() -> list[Any]:
    """What ``np.random.get_state()`` needs to unpickle: an array of uint32 and its dtype."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import _reconstruct
    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def kind_of(state: Any) -> str | None:
    """``search`` or ``retrain`` (in-process or Tune trial), from the keys each one writes."""
    if not isinstance(state, dict):
        return None
    if "pools" in state or isinstance(state.get("search"), dict):
        return "search"
    if "model" in state and "genotype" in state:
        return "retrain"
    return None


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu",
         kind: str | None = None, data: bytes | None = None) -> Any:
    """The checkpoint at ``path``; :class:`CheckpointError` (one line) for anything unusable.

    ``kind`` (``search``/``retrain``) refuses a checkpoint of the other kind of run,
    e.g. ``--resume`` of a search pointed at a retrain folder. ``data``: its bytes, read
    already (from an object store); ``path`` then only names it.
    """
    path = Path(path) if data is None else path
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            state = torch.load(path if data is None else io.BytesIO(data),
                               map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist", incomplete=True) from None
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        if "weights only" in first.lower() or "unsupported global" in str(err).lower():
            raise CheckpointError(
                f"checkpoint {path} refused: it holds objects other than tensors and plain "
                "data (a crafted or foreign file?); nothing in it was run") from None
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({first})",
                              incomplete=True) from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, OSError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"checkpoint {path} is corrupt, truncated or empty "
                              f"({first[:120]})", incomplete=True) from None
    found = kind_of(state)
    if found is None:
        raise CheckpointError(f"checkpoint {path} is not a prnas checkpoint")
    if kind is not None and found != kind:
        raise CheckpointError(f"checkpoint {path} is of a {found} run, not a {kind}; "
                              f"resume it with the {found} command")
    return state
