"""Blob stores for code bundles, task inputs and outputs, and `File`/`Directory` values.

Objects are named by URI (`file:///var/fleetflow/blobs/executions/…`), so whoever holds a URI
can read it with `read_uri` (or `store_for_uri(uri)`) without knowing which store wrote it. A
store is opened from its root URI (`FLEETFLOW_BLOB_ROOT`); keys are relative, `/`-separated and
may not escape the root. A "prefix" URI names every object below it, like a directory.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol
from urllib.parse import unquote, urlparse

from fleetflow.errors import FleetflowError


class BlobNotFoundError(FleetflowError, FileNotFoundError):
    """The object named by a URI does not exist."""


class BlobStore(Protocol):
    """What Fleetflow needs from a blob store; `uri`, `put` and `upload` return object URIs."""

    root_uri: str

    def uri(self, key: str) -> str: ...
    def put(self, key: str, data: bytes) -> str: ...
    def upload(self, key: str, source: Path) -> str:
        """Copy the local file `source` to `key`, streaming it; the object's URI."""
        ...

    def get(self, uri: str) -> bytes: ...
    def download(self, uri: str, dest: Path) -> None:
        """Copy the object `uri` to the local file `dest` (parents created), streaming it."""
        ...

    def exists(self, uri: str) -> bool: ...
    def list(self, prefix_uri: str) -> list[str]:
        """URIs of every object below `prefix_uri` (a "directory"), sorted; [] if none."""
        ...


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
        _write_atomically(path, lambda f: f.write(data))
        return path.as_uri()

    def upload(self, key: str, source: Path) -> str:
        path = self.root / _safe_key(key)
        with source.open("rb") as src:
            _write_atomically(path, lambda f: shutil.copyfileobj(src, f))
        return path.as_uri()

    def get(self, uri: str) -> bytes:
        try:
            return self._path(uri).read_bytes()
        except FileNotFoundError:
            raise BlobNotFoundError(f"blob not found: {uri}") from None

    def download(self, uri: str, dest: Path) -> None:
        _copy_out(self._path(uri), uri, dest)

    def exists(self, uri: str) -> bool:
        return self._path(uri).is_file()

    def list(self, prefix_uri: str) -> list[str]:
        self._path(prefix_uri)  # inside the root
        # Listed through the path as given, so each URI starts with `prefix_uri` even when
        # the root is reached through a symlink.
        return _list_below(_file_path(prefix_uri))


def _write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write-then-rename: readers never see a half-written object."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _copy_out(path: Path, uri: str, dest: Path) -> None:
    try:
        with path.open("rb") as src:
            _write_atomically(dest, lambda f: shutil.copyfileobj(src, f))
    except (FileNotFoundError, IsADirectoryError):
        raise BlobNotFoundError(f"blob not found: {uri}") from None


def _list_below(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    found = [
        Path(parent, name)
        for parent, _, names in os.walk(directory)
        for name in names
        if not name.startswith(".tmp-")  # an upload in progress
    ]
    return sorted(path.as_uri() for path in found)


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


def store_for_uri(uri: str) -> BlobStore:
    """A store that can read, download and list `uri`, whichever store wrote it.

    For `file://` that is the local filesystem as a whole; a remote store (S3) would be opened
    for the URI's bucket here.
    """
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return LocalBlobStore(Path("/"))
    raise FleetflowError(f"unsupported blob URI scheme in {uri!r}")


def parent_uri(uri: str) -> str:
    """The prefix URI an object lives under (`file:///a/b/outputs.json` -> `file:///a/b`)."""
    parsed = urlparse(uri)
    return parsed._replace(path=posixpath.dirname(parsed.path.rstrip("/"))).geturl()


def relative_key(uri: str, prefix_uri: str) -> str:
    """The `/`-separated name of the object `uri` below `prefix_uri` (as listed by `list`).

    Raises:
        FleetflowError: `uri` is not below the prefix, or its name would escape it.
    """
    object_url, prefix_url = urlparse(uri), urlparse(prefix_uri)
    prefix_path = unquote(prefix_url.path).rstrip("/") + "/"
    object_path = unquote(object_url.path)
    if (object_url.scheme, object_url.netloc) != (prefix_url.scheme, prefix_url.netloc) or (
        not object_path.startswith(prefix_path)
    ):
        raise FleetflowError(f"{uri} is not below {prefix_uri}")
    key = object_path[len(prefix_path) :]
    _safe_key(key)
    return key


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
