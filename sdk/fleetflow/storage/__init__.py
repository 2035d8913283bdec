"""Blob stores for code bundles, task inputs and outputs, and `File`/`Directory` values.

Objects are named by URI (`file:///var/fleetflow/blobs/executions/…`,
`s3://fleetflow/executions/…`), so whoever holds a URI can read it with `read_uri` (or
`store_for_uri(uri)`) without knowing which store wrote it. A store is opened from its root URI
(`FLEETFLOW_BLOB_ROOT`, `open_blob_store`); keys are relative, `/`-separated and may not escape
the root. A "prefix" URI names every object below it, like a directory. `store.scoped(prefix)`
is the same store confined to a prefix (one tenant's objects).

Backends: `file://` (`LocalBlobStore`, `local.py`) and `s3://` (`S3BlobStore`, `s3.py`, on the
`minio` client, configured by `FLEETFLOW_S3_*`; imported only when an `s3://` URI is used, so
the SDK works without `minio` installed).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from fleetflow.errors import FleetflowError
from fleetflow.storage._base import (
    BlobAccessError,
    BlobIntegrityError,
    BlobNotFoundError,
    BlobStore,
    parent_uri,
    relative_key,
)
from fleetflow.storage.local import LocalBlobStore, file_path

if TYPE_CHECKING:
    from fleetflow.storage.s3 import S3BlobStore, S3Settings

__all__ = [
    "BlobAccessError",
    "BlobIntegrityError",
    "BlobNotFoundError",
    "BlobStore",
    "LocalBlobStore",
    "S3BlobStore",
    "S3Settings",
    "open_blob_store",
    "parent_uri",
    "read_uri",
    "relative_key",
    "store_for_uri",
    "write_uri",
]


def __getattr__(name: str) -> Any:
    # The S3 backend needs `minio`, an extra of the server and agent installs.
    if name in ("S3BlobStore", "S3Settings"):
        from fleetflow.storage import s3

        return getattr(s3, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _s3_store(uri: str, *, whole_bucket: bool) -> BlobStore:
    try:
        from fleetflow.storage.s3 import S3BlobStore
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise FleetflowError(
            f"{uri} is in S3, which needs the `minio` package (pip install 'minio>=7.2,<8')"
        ) from exc
    return S3BlobStore.from_uri(f"s3://{urlparse(uri).netloc}" if whole_bucket else uri)


def open_blob_store(root_uri: str) -> BlobStore:
    """Open the store rooted at `root_uri`: `file:///path`, a plain directory path, or
    `s3://bucket[/prefix]`."""
    parsed = urlparse(root_uri)
    if parsed.scheme in ("", "file"):
        return LocalBlobStore(Path(unquote(parsed.path)) if parsed.scheme else Path(root_uri))
    if parsed.scheme == "s3":
        return _s3_store(root_uri, whole_bucket=False)
    raise FleetflowError(
        f"unsupported blob store {root_uri!r}: use a file:// URI, a directory path or "
        "s3://bucket/prefix"
    )


def store_for_uri(uri: str) -> BlobStore:
    """A store that can read, download and list `uri`, whichever store wrote it: for
    `file://` the local filesystem as a whole, for `s3://` the URI's bucket."""
    scheme = urlparse(uri).scheme
    if scheme == "file":
        return LocalBlobStore(Path("/"))
    if scheme == "s3":
        return _s3_store(uri, whole_bucket=True)
    raise FleetflowError(f"unsupported blob URI scheme in {uri!r}")


def read_uri(uri: str) -> bytes:
    """Read any object by its URI."""
    scheme = urlparse(uri).scheme
    if scheme == "file":
        try:
            return file_path(uri).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise BlobNotFoundError(f"blob not found: {uri}") from None
    if scheme == "s3":
        return store_for_uri(uri).get(uri)
    raise FleetflowError(f"unsupported blob URI scheme in {uri!r}")


def write_uri(uri: str, data: bytes) -> None:
    """Write an object by its URI (task outputs are written where the assignment says)."""
    scheme = urlparse(uri).scheme
    if scheme == "file":
        path = file_path(uri)
        LocalBlobStore(path.parent).put(path.name, data)
        return
    if scheme == "s3":
        parent = open_blob_store(parent_uri(uri))
        parent.put(relative_key(uri, parent.root_uri), data)
        return
    raise FleetflowError(f"unsupported blob URI scheme in {uri!r}")


ATTEMPT_LOG = "log.txt"


def attempt_log_uri(inputs_uri: str) -> str:
    """Where an attempt's output is kept: beside its inputs, in the attempt's own prefix
    (the agent writes it, `fleetflow executions logs` reads it)."""
    return inputs_uri.rsplit("/", 1)[0] + "/" + ATTEMPT_LOG
