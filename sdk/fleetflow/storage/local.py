"""`file://` blob stores: a directory on a filesystem that the control plane, agents and task
processes all mount (the embedded default, and single-machine deployments)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from fleetflow.storage._base import BlobAccessError, BlobNotFoundError, safe_key

logger = logging.getLogger(__name__)


class LocalBlobStore:
    """A directory on a filesystem shared by the control plane, agents and task processes."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.root_uri = self.root.as_uri()

    def uri(self, key: str) -> str:
        return (self.root / safe_key(key)).as_uri()

    def _path(self, uri: str) -> Path:
        path = file_path(uri).resolve()
        if not path.is_relative_to(self.root):
            raise BlobAccessError(f"{uri} is outside the blob store at {self.root_uri}")
        return path

    def _target(self, key: str) -> Path:
        path = self.root / safe_key(key)
        if not path.parent.resolve().is_relative_to(self.root):  # through a symlink
            raise BlobAccessError(f"blob key {key!r} leads outside the blob store {self.root_uri}")
        return path

    def put(self, key: str, data: bytes) -> str:
        path = self._target(key)
        write_atomically(path, lambda f: f.write(data))
        return path.as_uri()

    def upload(self, key: str, source: Path) -> str:
        path = self._target(key)
        with source.open("rb") as src:
            write_atomically(path, lambda f: shutil.copyfileobj(src, f))
        return path.as_uri()

    def get(self, uri: str) -> bytes:
        try:
            return self._path(uri).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise BlobNotFoundError(f"blob not found: {uri}") from None

    def download(self, uri: str, dest: Path) -> None:
        path = self._path(uri)
        try:
            with path.open("rb") as src:
                write_atomically(dest, lambda f: shutil.copyfileobj(src, f))
        except (FileNotFoundError, IsADirectoryError):
            raise BlobNotFoundError(f"blob not found: {uri}") from None

    def exists(self, uri: str) -> bool:
        return self._path(uri).is_file()

    def list(self, prefix_uri: str) -> list[str]:
        self._path(prefix_uri)  # inside the root
        # Listed through the path as given, so each URI starts with `prefix_uri` even when
        # the root is reached through a symlink.
        return _list_below(file_path(prefix_uri))

    def scoped(self, prefix: str) -> LocalBlobStore:
        root = (self.root / safe_key(prefix)).resolve()
        if not root.is_relative_to(self.root):  # through a symlink
            raise BlobAccessError(f"prefix {prefix!r} leads outside the blob store {self.root_uri}")
        return LocalBlobStore(root)


TEMPORARY_PREFIX = ".tmp-"
TEMPORARY_SUFFIX = ".tmp"
"""Names of files `write_atomically` has not finished: `.tmp-<random>.tmp`."""


def write_atomically(
    path: Path, write: Callable[[BinaryIO], object], *, durable: bool = False
) -> None:
    """Write-then-rename: readers never see a half-written file.

    The temporary file is created owner-only (0600), exclusively and never through a link, in
    `path`'s directory. `durable`: the file and its name are on disk when this returns (fsync
    of the file, then of the directory; a file system that cannot sync directories is logged,
    not an error: the file is in place already).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMPORARY_PREFIX, suffix=TEMPORARY_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        try:
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as exc:
            logger.debug("could not fsync %s: %s", path.parent, exc)


def _list_below(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    found = [
        Path(parent, name)
        for parent, _, names in os.walk(directory)
        for name in names
        if not name.startswith(TEMPORARY_PREFIX)  # an upload in progress
    ]
    return sorted(path.as_uri() for path in found)


def file_path(uri: str) -> Path:
    """The local path a `file://` URI names."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise BlobAccessError(f"not a file:// URI: {uri}")
    return Path(unquote(parsed.path))
