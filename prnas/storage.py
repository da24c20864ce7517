"""Where an experiment lives: a local or shared folder, or a pyarrow filesystem URI.

On one machine an experiment is a folder; on a cluster it is a folder every node mounts
(NFS) or a prefix in an object store (``s3://bucket/prefix``, ``gs://...``, any URI
:func:`pyarrow.fs.FileSystem.from_uri` accepts). Ray Tune stores its checkpoints there
through the same pyarrow filesystem, and everything prnas writes itself (``cycles.jsonl``,
``genotype.json``, ``epochs.jsonl``, ``model.pt``, the parquet files) goes through
:class:`Location`, so one ``--storage`` value reaches every node and survives any of them.

Writes are whole-file and never visible half done: on a local or mounted folder a
temporary file renamed over the target (a rename is atomic on POSIX, NFS included); on an
object store a single put, which the store makes visible only once complete. File names are
fixed and every write replaces the whole file, so a retried trial rewrites rather than
appends: no duplicates.

An S3-compatible store other than AWS (MinIO, Ceph, a test server) is named in the URI's
query (``s3://bucket/prefix?endpoint_override=host:9000&scheme=http``) or by the
``AWS_ENDPOINT_URL`` environment variable; credentials come from the usual AWS variables
or files on every node, never from prnas' own files. No Ray and no torch here.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pyarrow.fs as pafs

from prnas._io import atomic_write_bytes

__all__ = ["Location", "StorageError", "as_location", "location", "on_filesystem"]

#: pyarrow filesystem types whose writes are single puts, atomic by the store's own rules.
_OBJECT_STORES = frozenset({"s3", "gcs", "abfs"})


class StorageError(ValueError):
    """A storage value that names no usable filesystem; the message says which and why."""


@dataclass(frozen=True)
class Location:
    """A folder or file on some filesystem: the filesystem, its path there, and the URI.

    ``uri`` is what a user can pass back (``--storage``) to reach the same place, query
    included; for a local folder it is the absolute path. On a local filesystem the
    location is also an :class:`os.PathLike`, so pandas, ``open`` and pathlib take it.
    """

    fs: pafs.FileSystem = field(compare=False)  # pyarrow filesystems are not hashable
    path: str
    uri: str

    # ------------------------------------------------------------------ building
    def __truediv__(self, part: str) -> Location:
        return self.join(part)

    def join(self, *parts: str) -> Location:
        base, sep, query = self.uri.partition("?")
        if self.is_local:
            path = str(Path(self.path, *parts))
            return Location(self.fs, path, path)
        return Location(self.fs, posixpath.join(self.path, *parts),
                        posixpath.join(base, *parts) + sep + query)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path.rstrip("/"))

    @property
    def parent(self) -> Location:
        if self.is_local:
            path = str(Path(self.path).parent)
            return Location(self.fs, path, path)
        base, sep, query = self.uri.partition("?")
        if "/" not in self.path.strip("/"):
            raise ValueError(f"{self.uri} is a bucket: it has no parent folder")
        return Location(self.fs, posixpath.dirname(self.path),
                        posixpath.dirname(base) + sep + query)

    # ------------------------------------------------------------------ what it is
    @property
    def is_local(self) -> bool:
        """A folder of this machine's filesystem (maybe a shared mount such as NFS)."""
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def is_object_store(self) -> bool:
        return self.fs.type_name in _OBJECT_STORES

    def __fspath__(self) -> str:
        if not self.is_local:
            raise TypeError(f"{self.uri} is not a local path; read it through Location")
        return self.path

    def __str__(self) -> str:
        return self.uri

    @property
    def ray_filesystem(self) -> pafs.FileSystem | None:
        """Tune's ``storage_filesystem`` for this location, given with :attr:`path` (no
        scheme): None for a local path, which Tune opens itself."""
        return None if self.is_local else self.fs

    # ------------------------------------------------------------------ reading
    def _info(self) -> pafs.FileInfo:
        return self.fs.get_file_info(self.path)

    def exists(self) -> bool:
        return self._info().type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self._info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        return self._info().type == pafs.FileType.Directory

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def children(self) -> list[Location]:
        """The folders and files directly in this folder, in name order ([] if none)."""
        sel = pafs.FileSelector(self.path, allow_not_found=True, recursive=False)
        names = sorted(posixpath.basename(i.path.rstrip("/"))
                       for i in self.fs.get_file_info(sel))
        return [self / n for n in names]

    # ------------------------------------------------------------------ writing
    def write_bytes(self, data: bytes) -> None:
        """Replace the file whole; a reader sees the old or the new content, never part."""
        if self.is_local:
            atomic_write_bytes(self.path, data)
            return
        if self.is_object_store:  # no folders to create: a key is the whole path
            with self.fs.open_output_stream(self.path) as f:
                f.write(data)
            return
        parent = posixpath.dirname(self.path)
        if parent:
            self.fs.create_dir(parent, recursive=True)
        # Other filesystems (HDFS, ...): write beside, then rename over the target.
        tmp = posixpath.join(parent, f".{posixpath.basename(self.path)}.{os.getpid()}.tmp")
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, self.path)

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def delete(self) -> None:
        """Remove the file, if it is there."""
        if self.is_file():
            self.fs.delete_file(self.path)


def location(value: str | os.PathLike) -> Location:
    """``--storage``'s value as a :class:`Location`: a URI with a scheme (``s3://``,
    ``gs://``, ``file://``, ...) through pyarrow, anything else as a local path made
    absolute (Ray runs trials in other working directories). StorageError names the
    value and the reason when pyarrow cannot use it."""
    text = os.fspath(value)
    if "://" not in text:
        path = str(Path(text).expanduser().resolve())
        return Location(pafs.LocalFileSystem(), path, path)
    parsed = urlsplit(text)
    secrets = {"access_key", "secret_key", "session_token"} & set(parse_qs(parsed.query))
    if parsed.username or parsed.password or secrets:
        raise StorageError(f"--storage: credentials in the URI ({parsed.scheme}://...) would be "
                           "printed and stored with the results; give them as AWS_ACCESS_KEY_ID"
                           " / AWS_SECRET_ACCESS_KEY (or the store's own variables) instead")
    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except (ValueError, OSError, TypeError) as err:  # unknown scheme, bad query, no bucket
        raise StorageError(f"--storage {text}: {err}") from None
    if isinstance(fs, pafs.LocalFileSystem):
        return Location(fs, path, path)
    base, sep, query = text.partition("?")
    return Location(fs, path.rstrip("/"), base.rstrip("/") + sep + query)


_SCHEMES = {"gcs": "gs"}


def on_filesystem(fs: pafs.FileSystem, path: str) -> Location:
    """A :class:`Location` for a path on a filesystem Ray handed over (a trial's storage).
    Its URI names the store (``s3://bucket/...``) but not an endpoint given in the
    driver's URI; readers elsewhere find that in ``AWS_ENDPOINT_URL``."""
    if isinstance(fs, pafs.LocalFileSystem):
        return Location(fs, path, path)
    return Location(fs, path, f"{_SCHEMES.get(fs.type_name, fs.type_name)}://{path}")


def as_location(value: str | os.PathLike | Location) -> Location:
    """A :class:`Location` from one, a URI or a local path (readers accept all three)."""
    return value if isinstance(value, Location) else location(value)
