"""Atomic torch checkpoints: written to a temp file in the same folder, then renamed."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from prnas._io import atomic_write_bytes


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    # weights_only=False: the state holds RNG states and plain Python containers we wrote ourselves.
    return torch.load(Path(path), map_location=map_location, weights_only=False)
