"""`File` and `Directory`: values that live in the blob store and on disk, not in JSON.

A task takes and returns them like any other value; what travels between tasks is a small
literal naming the blob (`{"uri": ..., "name": ...}` for a file, `{"uri": <prefix>}` for a
directory). Where the bytes are depends on where the conversion happens:

- outside a task runtime (a local run, the CLI): nothing is copied; the literal is the
  `file://` URI of the local path, and converting it back gives that path;
- inside the task runtime a `BlobContext` is active: a file or directory the task returns is
  uploaded, content-addressed, next to the attempt's outputs, and one the task receives is
  downloaded into the attempt's work directory first. A value the task received and passes on
  unchanged keeps its URI, so nothing is uploaded twice; one it changed in place is uploaded as
  what it holds now (a remote result never differs from the local one).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any
from urllib.parse import unquote, urlparse

from pydantic_core import core_schema

from fleetflow.errors import FleetflowError, LiteralValidationError
from fleetflow.ir import FILE_KINDS, LiteralType, TypeKind
from fleetflow.storage import BlobStore, relative_key, store_for_uri
from fleetflow.union_literals import union_value


class _LocalPath:
    """What `File` and `Directory` share: an absolute local path, usable wherever a path is."""

    __slots__ = ("_path",)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(os.path.abspath(os.fspath(path)))

    @property
    def path(self) -> Path:
        """The absolute local path."""
        return self._path

    @property
    def name(self) -> str:
        """The base name (`data.csv`)."""
        return self._path.name

    def __fspath__(self) -> str:
        return str(self._path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self._path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, type(self)) and other._path == self._path

    def __hash__(self) -> int:
        return hash((type(self), self._path))

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        """Lets a pydantic model declare a `File` or `Directory` field (no arbitrary types
        needed): it takes one of this class or a path, and dumps as the path's text."""

        def validate(value: Any) -> _LocalPath:
            if isinstance(value, cls):
                return value
            if isinstance(value, str | os.PathLike) and not isinstance(value, _LocalPath):
                return cls(value)
            raise ValueError(f"expected {cls.__name__} or a path, got {type(value).__name__}")

        return core_schema.no_info_plain_validator_function(
            validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda value: str(value.path)
            ),
        )


class File(_LocalPath):
    """A file that travels between tasks.

    Args:
        path: a local path (`str` or path-like); relative paths are made absolute against the
            current directory now.

    `os.fspath(file)` and `open(file)` work, so a `File` can be passed wherever a path is
    expected.
    """

    __slots__ = ()

    def open(self, mode: str = "r", **kwargs: Any) -> IO[Any]:
        """`open(self.path, mode, ...)`."""
        return self._path.open(mode, **kwargs)


class Directory(_LocalPath):
    """A directory tree that travels between tasks (every file below it, recursively).

    Args:
        path: a local directory path; relative paths are made absolute against the current
            directory now.
    """

    __slots__ = ()

    def files(self) -> list[Path]:
        """Every regular file below the directory, recursively, sorted."""
        return sorted(
            Path(parent, name)
            for parent, _, names in os.walk(self._path)
            for name in names
            if Path(parent, name).is_file()
        )


@dataclass
class BlobContext:
    """Where `File`/`Directory` values go while a task runs in the task runtime.

    Attributes:
        store: the blob store uploads go to.
        prefix: the key prefix of uploads in `store` (the attempt's outputs location); `""`
            for the store's root.
        download_dir: a local directory blobs are downloaded into.
        source: the store to download a URI from; one that raises when the task may not
            download at all (its agent staged its inputs into `download_dir`).
        downloaded: absolute local path -> the URI it was downloaded from and the digest of
            its content then, so a value passed on unchanged keeps its URI, and one the task
            changed in place is uploaded as what it now holds.
    """

    store: BlobStore
    prefix: str
    download_dir: Path
    source: Callable[[str], BlobStore] = store_for_uri
    downloaded: dict[Path, tuple[str, str]] = field(default_factory=dict)

    def unchanged_uri(self, local: Path, digest: Callable[[Path], str]) -> str | None:
        """The URI `local` was downloaded from, if it still holds what it held then."""
        known = self.downloaded.get(local)
        if known is None:
            return None
        uri, then = known
        return uri if digest(local) == then else None

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))


_ACTIVE: ContextVar[BlobContext | None] = ContextVar("fleetflow_blob_context", default=None)


def active_blob_context() -> BlobContext | None:
    """The blob context of the task running now, if any (None in local runs)."""
    return _ACTIVE.get()


@contextmanager
def blob_context(
    store: BlobStore,
    prefix: str,
    download_dir: Path,
    *,
    source: Callable[[str], BlobStore] = store_for_uri,
) -> Iterator[BlobContext]:
    """Make `File`/`Directory` conversions upload to `store` and download into `download_dir`
    (from `source(uri)`)."""
    context = BlobContext(
        store=store, prefix=prefix, download_dir=Path(os.path.abspath(download_dir)), source=source
    )
    token = _ACTIVE.set(context)
    try:
        yield context
    finally:
        _ACTIVE.reset(token)


# ---------------------------------------------------------------------------- conversions


def _sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _as_path(value: Any, cls: type[File] | type[Directory], path: str) -> Path:
    if isinstance(value, cls):
        return value.path
    if isinstance(value, str | os.PathLike) and not isinstance(value, File | Directory):
        return Path(os.path.abspath(os.fspath(value)))
    got = "null" if value is None else f"{type(value).__name__} {value!r}"
    raise LiteralValidationError(path, f"expected {cls.__name__}, got {got}")


def _local_path(uri: str, path: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise LiteralValidationError(
            path,
            f"cannot use {uri} here: outside a task runtime only file:// URIs can be read",
        )
    return Path(unquote(parsed.path))


def download_target(download_dir: Path, uri: str) -> Path:
    """Where the blob `uri` is downloaded (or staged) below `download_dir`: one directory per
    URI, so names are kept and two blobs never collide. A file goes inside it by its name."""
    return download_dir / hashlib.sha256(uri.encode()).hexdigest()[:32]


def file_to_literal(value: Any, path: str = "") -> dict[str, str]:
    """A `File` (or a path) -> `{"uri", "name"}`, uploading it inside a task runtime.

    Raises:
        LiteralValidationError: not a file, or the file does not exist.
    """
    local = _as_path(value, File, path)
    if not local.is_file():
        raise LiteralValidationError(path, f"file {local} does not exist (or is not a file)")
    context = active_blob_context()
    if context is None:
        return {"uri": local.as_uri(), "name": local.name}
    uri = context.unchanged_uri(local, _sha256_of)
    if uri is None:  # made by the task, or changed by it in place: what it holds now
        key = context.key("files", _sha256_of(local), local.name)
        uri = context.store.uri(key)
        if not context.store.exists(uri):
            uri = context.store.upload(key, local)
    return {"uri": uri, "name": local.name}


def file_to_python(literal: dict[str, str], path: str = "") -> File:
    """A checked `{"uri", "name"}` literal -> `File`, downloading it inside a task runtime."""
    uri, name = literal["uri"], literal["name"]
    context = active_blob_context()
    if context is None:
        return File(_local_path(uri, path))
    local = download_target(context.download_dir, uri) / name
    if not local.is_file():
        try:
            context.source(uri).download(uri, local)
        except FleetflowError as exc:
            raise LiteralValidationError(path, str(exc)) from None
        verify_content(uri, local, path)
    context.downloaded[local] = (uri, _sha256_of(local))
    return File(local)


_CONTENT_ADDRESSED = re.compile(r"/files/(?P<digest>[0-9a-f]{64})/[^/]+$")


def verify_content(uri: str, local: Path, path: str) -> None:
    """A file stored under its sha256 (uploads and task outputs are: `.../files/<sha256>/<name>`)
    must still have it: otherwise someone who could write the blob store swapped it, and the
    task must not read their data as its input."""
    named = _CONTENT_ADDRESSED.search(urlparse(uri).path)
    if named is None:
        return
    actual = _sha256_of(local)
    if actual != named["digest"]:
        local.unlink()
        raise LiteralValidationError(
            path,
            f"{uri} has sha256 {actual}, not the digest it was stored under: it was changed "
            "after upload; refusing to use it",
        )


def _listing_digest(root: Path, files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(root).as_posix()}\0{_sha256_of(file)}\n".encode())
    return digest.hexdigest()


def directory_to_literal(value: Any, path: str = "") -> dict[str, str]:
    """A `Directory` (or a path) -> `{"uri"}`, uploading every file inside a task runtime.

    Raises:
        LiteralValidationError: not a directory, or it does not exist.
    """
    local = _as_path(value, Directory, path)
    if not local.is_dir():
        raise LiteralValidationError(path, f"directory {local} does not exist (or is not one)")
    context = active_blob_context()
    if context is None:
        return {"uri": local.as_uri()}
    uri = context.unchanged_uri(local, directory_digest)
    if uri is None:  # made by the task, or changed by it in place: what it holds now
        files = Directory(local).files()
        prefix = context.key("dirs", _listing_digest(local, files))
        for file in files:
            key = f"{prefix}/{file.relative_to(local).as_posix()}"
            if not context.store.exists(context.store.uri(key)):
                context.store.upload(key, file)
        uri = context.store.uri(prefix)
    return {"uri": uri}


def directory_to_python(literal: dict[str, str], path: str = "") -> Directory:
    """A checked `{"uri"}` literal -> `Directory`, downloading every object below it inside a
    task runtime."""
    uri = literal["uri"]
    context = active_blob_context()
    if context is None:
        return Directory(_local_path(uri, path))
    local = download_target(context.download_dir, uri)
    if not local.is_dir():
        partial = local.with_name(local.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted download
        try:
            store = context.source(uri)
        except FleetflowError as exc:
            raise LiteralValidationError(path, str(exc)) from None
        for object_uri in store.list(uri):
            try:
                relative = relative_key(object_uri, uri)
            except FleetflowError as exc:
                raise LiteralValidationError(path, str(exc)) from None
            store.download(object_uri, partial.joinpath(*PurePosixPath(relative).parts))
        partial.mkdir(parents=True, exist_ok=True)  # an empty directory has no objects
        partial.rename(local)
    context.downloaded[local] = (uri, directory_digest(local))
    return Directory(local)


# ------------------------------------------------------------------------ walking literals


def map_blob_literals(
    literal: Any,
    literal_type: LiteralType,
    convert: Callable[[TypeKind, dict[str, Any]], Any],
) -> Any:
    """A copy of `literal` with every File and Directory literal inside it (at any depth:
    optionals, lists, dicts, struct fields, union variants) replaced by
    `convert(kind, blob_literal)`. `kind` is how the blob is stored, FILE or DIRECTORY: an
    ndarray's or a DataFrame's literal is a file's (`ir.FILE_KINDS`), and converted as one.

    Used wherever blobs need a different name than the one a local run gives them: uploaded
    before a remote run, keyed by content in the local cache, copied into it.
    """
    if literal is None:
        return None
    kind = literal_type.kind
    item = literal_type.item
    if kind in FILE_KINDS:
        return convert(TypeKind.FILE, literal)
    if kind is TypeKind.DIRECTORY:
        return convert(kind, literal)
    if kind is TypeKind.OPTIONAL and item is not None:
        return map_blob_literals(literal, item, convert)
    if kind is TypeKind.LIST and item is not None and isinstance(literal, list):
        return [map_blob_literals(value, item, convert) for value in literal]
    if kind is TypeKind.DICT and item is not None and isinstance(literal, dict):
        return {key: map_blob_literals(value, item, convert) for key, value in literal.items()}
    if kind is TypeKind.STRUCT and isinstance(literal, dict):
        fields = literal_type.fields or {}
        return {
            name: map_blob_literals(value, fields[name], convert) if name in fields else value
            for name, value in literal.items()
        }
    if kind is TypeKind.UNION:
        try:
            variant, value = union_value(literal_type, literal)
        except ValueError:
            return literal  # not a value of the union: left for validation to refuse
        if not has_blobs(variant):
            return literal
        return {"variant": variant.describe(), "value": map_blob_literals(value, variant, convert)}
    return literal


def blob_literals(
    literal: Any, literal_type: LiteralType, path: str
) -> Iterator[tuple[str, TypeKind, Any]]:
    """Every (path, kind, literal) of a blob inside `literal`, at any depth, in value order:
    `kind` is the declared one (FILE, DIRECTORY, or NDARRAY and DATAFRAME, whose literals name
    the file they are stored as: test `kind in FILE_KINDS`).

    Shapes are checked as it goes, not trusted: a value that does not have its type's shape
    (a task's output is the task's word) holds no blobs below that point; the blob literals
    themselves are yielded as found, for the caller to check.
    """
    kind = literal_type.kind
    item = literal_type.item
    if literal is None:
        return
    if kind in FILE_KINDS or kind is TypeKind.DIRECTORY:
        yield path, kind, literal
    elif kind is TypeKind.OPTIONAL and item is not None:
        yield from blob_literals(literal, item, path)
    elif kind is TypeKind.LIST and item is not None and isinstance(literal, list):
        for i, element in enumerate(literal):
            yield from blob_literals(element, item, f"{path}[{i}]")
    elif kind is TypeKind.DICT and item is not None and isinstance(literal, dict):
        for key, element in literal.items():
            yield from blob_literals(element, item, f"{path}.{key}")
    elif kind is TypeKind.STRUCT and isinstance(literal, dict):
        for name, field_type in (literal_type.fields or {}).items():
            yield from blob_literals(literal.get(name), field_type, f"{path}.{name}")
    elif kind is TypeKind.UNION:
        try:
            variant, value = union_value(literal_type, literal)
        except ValueError:
            return
        yield from blob_literals(value, variant, path)


def has_blobs(literal_type: LiteralType) -> bool:
    """Whether values of this type can hold a File or Directory (or an ndarray or DataFrame,
    stored as a file)."""
    if literal_type.kind in FILE_KINDS or literal_type.kind is TypeKind.DIRECTORY:
        return True
    if literal_type.item is not None and has_blobs(literal_type.item):
        return True
    if any(has_blobs(variant) for variant in literal_type.variants or []):
        return True
    return any(has_blobs(field) for field in (literal_type.fields or {}).values())


def local_blob_path(uri: str) -> Path | None:
    """The local path of a `file://` URI, None for any other scheme."""
    parsed = urlparse(uri)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else None


def file_digest(path: Path) -> str:
    """sha256 of a file's content, hex."""
    return _sha256_of(path)


def directory_digest(path: Path) -> str:
    """sha256 over a directory's relative file names and their contents, hex."""
    return _listing_digest(path, Directory(path).files())
