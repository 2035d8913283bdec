"""Blob stores for code bundles, task inputs and outputs.

Objects are named by URI (`file:///var/fleetflow/blobs/executions/…`), so whoever holds a URI
can read it with `read_uri` without knowing which store wrote it. A store is opened from its
root URI (`FLEETFLOW_BLOB_ROOT`); keys are relative, `/`-separated and may not escape the root.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Protocol
from urllib.parse import unquote, urlparse

from fleetflow.errors import FleetflowError


class BlobNotFoundError(FleetflowError, FileNotFoundError):
    """The object named by a URI does not exist."""


class BlobStore(Protocol):
    root_uri: str

    def uri(self, key: str) -> str: ...
    def put(self, key: str, data: bytes) -> str: ...
    def get(self, uri: str) -> bytes: ...
    def exists(self, uri: str) -> bool: ...


def _safe_key(key: str) -> PurePosixPath:
    path = PurePosixPath(key)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise FleetflowError(f"invalid blob key {key!r}: must be relative and stay under the root")
    return path


class LocalBlobStore:
    """A directory on a filesystem shared by the control plane, agents and task processes."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.root_uri = self.root.as_uri()

    def uri(self, key: str) -> str:
        return (self.root / _safe_key(key)).as_uri()

    def _path(self, uri: str) -> Path:
        path = _file_path(uri).resolve()
        if not path.is_relative_to(self.root):
            raise FleetflowError(f"{uri} is outside the blob store at {self.root_uri}")
        return path

    def put(self, key: str, data: bytes) -> str:
        path = self.root / _safe_key(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write-then-rename: readers never see a half-written object.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path.as_uri()

    def get(self, uri: str) -> bytes:
        try:
            return self._path(uri).read_bytes()
        except FileNotFoundError:
            raise BlobNotFoundError(f"blob not found: {uri}") from None

    def exists(self, uri: str) -> bool:
        return self._path(uri).is_file()


def _file_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise FleetflowError(f"not a file:// URI: {uri}")
    return Path(unquote(parsed.path))


def open_blob_store(root_uri: str) -> BlobStore:
    """Open the store rooted at `root_uri` (`file:///path` or a plain directory path)."""
    parsed = urlparse(root_uri)
    if parsed.scheme in ("", "file"):
        return LocalBlobStore(Path(unquote(parsed.path)) if parsed.scheme else Path(root_uri))
    raise FleetflowError(
        f"unsupported blob store {root_uri!r}: use a file:// URI or a directory path"
    )


def read_uri(uri: str) -> bytes:
    """Read any object by its URI."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        path = _file_path(uri)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise BlobNotFoundError(f"blob not found: {uri}") from None
    raise FleetflowError(f"unsupported blob URI scheme in {uri!r}")


def write_uri(uri: str, data: bytes) -> None:
    """Write an object by its URI (task outputs are written where the assignment says)."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise FleetflowError(f"unsupported blob URI scheme in {uri!r}")
    path = _file_path(uri)
    store = LocalBlobStore(path.parent)
    store.put(path.name, data)
