"""Atomic file writes: a reader never sees half a file, a crash never leaves one; and the
jsonl form of the run files (plain Python: the in-process engine writes it without pandas)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        plain_permissions(tmp)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def plain_permissions(path: str | os.PathLike) -> None:
    """mkstemp creates 0600; give the file the permissions a plain open() would."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def check_output_dir(path: str | os.PathLike, flag: str = "--out") -> None:
    """ValueError (one line, naming ``flag``) unless ``path`` can be a folder we write in.

    Called before any compute: finding out after an hour of training, or after Ray
    started, that ``--out`` is a file or read-only loses that hour.
    """
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ValueError(f"{flag} {p} is a file, not a folder")
    anc = p.absolute()
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir():
        raise ValueError(f"{flag} {p}: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {p}: {anc} is not writable")
    # os.access says yes to root everywhere, /proc and read-only mounts included: try it.
    try:
        os.rmdir(tempfile.mkdtemp(dir=anc, prefix=".prnas-write-check-"))
    except OSError as err:
        raise ValueError(f"{flag} {p}: cannot create a folder in {anc} "
                         f"({err.strerror or err})") from None


def jsonl_text(rows: Iterable[Mapping[str, Any]]) -> str:
    """Plain JSON objects, one a line (the form of ``cycles.jsonl`` and ``epochs.jsonl``)."""
    return "".join(json.dumps(dict(r)) + "\n" for r in rows)
