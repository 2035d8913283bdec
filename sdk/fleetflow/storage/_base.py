"""What every blob store shares: the protocol, its errors, and the rules for keys.

Keys are relative, `/`-separated names below a store's root. They are normalised the way a
path is (`a//b/./c` is `a/b/c`) and may never climb out of the root (`..`, a leading `/`), so a
store scoped to a prefix (`store.scoped("tenants/acme")`) is a boundary, not a convention.
"""

from __future__ import annotations

import posixpath
from pathlib import Path, PurePosixPath
from typing import Protocol
from urllib.parse import unquote, urlparse

from fleetflow.errors import FleetflowError


class BlobNotFoundError(FleetflowError, FileNotFoundError):
    """The object named by a URI does not exist."""


class BlobAccessError(FleetflowError):
    """A key or URI that a store must not touch: one that escapes its root, or names an object
    of another store."""


class BlobIntegrityError(FleetflowError):
    """An object's content does not match the checksum recorded when it was written."""


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

    def scoped(self, prefix: str) -> BlobStore:
        """The same store rooted at `prefix` (a key): its keys and the URIs it reads, lists and
        downloads all stay below that prefix (e.g. `store.scoped(f"tenants/{tenant}")`)."""
        ...


def safe_key(key: str) -> PurePosixPath:
    """`key` as a normalised relative path.

    Raises:
        BlobAccessError: the key is empty, absolute, or has a `..` part.
    """
    path = PurePosixPath(key)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise BlobAccessError(f"invalid blob key {key!r}: must be relative and stay under the root")
    return path


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
        raise BlobAccessError(f"{uri} is not below {prefix_uri}")
    key = object_path[len(prefix_path) :]
    safe_key(key)
    return key
