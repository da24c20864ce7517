"""One run per output folder: an advisory lock that names its holder.

Two runs started into the same folder would interleave their checkpoints and
metrics, so the second one is refused before it writes anything. The lock is an
``flock`` on a small file, which the kernel drops when the holding process dies,
however it dies: a SIGKILLed run leaves no stale lock, only a file whose recorded
pid no longer runs, and the next run takes it over. A clean exit removes the
file. The file records the holder's pid, host and start time for the refusal
message.

Note: ``flock`` is local to one machine; two hosts sharing a folder over NFS are
not guaranteed to see each other's locks.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

LOCK_NAME = ".prnas.lock"


class FolderLocked(RuntimeError):
    """Another live process holds the lock; the message names it."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info.get("pid"):
        return "another process"
    started = info.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return f"pid {info['pid']} on {info.get('host', '?')} (started {when})"


class FolderLock:
    """``with FolderLock(folder / LOCK_NAME):``; :class:`FolderLocked` if another run holds it."""

    def __init__(self, path: str | os.PathLike, what: str | None = None) -> None:
        self.path = Path(path)
        self.what = what or str(self.path.parent)
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise FolderLocked(f"{self.what} is in use by {_holder(self.path)}; wait for "
                                   "it to finish or stop it first (one run per folder)") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder released and removed it meanwhile: lock the new file
        # Ours now: any pid recorded before belonged to a process that has died.
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                "argv": sys.argv}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            # Removed while still locked; a newcomer that opened the old file checks
            # the inode after locking and starts over on a fresh one.
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> FolderLock:
        return self if self.held else self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def folder_entries(folder: Path) -> list[Path]:
    """The folder's contents without the lock file: what "not empty" is about."""
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.name != LOCK_NAME]
