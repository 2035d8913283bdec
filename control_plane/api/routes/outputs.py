"""`GET /api/v1/executions/{id}/{outputs|inputs}/{name}[/files/{file}]`: an execution's outputs
and inputs, and the bytes of the `File` and `Directory` values inside them, read with the
caller's rights.

An output's value names its blobs by URI; the engineer's machine usually cannot read the blob
store (a bucket it has no credentials for, a directory on another host), so the control plane
serves them. Each blob gets a place below a directory of the output's own, derived from where it
sits in the value: a `File` output `model` is `<name of the file>`, element 2 of a
`list[File]` is `2/<name>`, a `Directory` output is the directory itself (`.`), field `text` of a
dataclass is `text/<name>`. `fleetflow executions outputs ID --download DIR` and
`Client.download_outputs` write them there.

Inputs are served alike, at the same paths below `.../inputs/{name}/files/`, whatever the
execution's status (an input `File` is usually an upload of the tenant's).

Only blobs of the caller's tenant are served: its uploads, and the prefixes of its own
executions. A value that names anything else (a task-cache hit recorded by another tenant's
execution, an input literal naming another tenant's blob or climbing out with `..`) is refused
rather than read on the caller's behalf.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from control_plane.api.auth import ExecutionsRead
from control_plane.api.deps import BlobStoreDep, SessionDep
from control_plane.api.errors import ApiError
from control_plane.db.models import Execution, Tenant
from control_plane.db.repositories.executions import get_execution
from control_plane.large_values import load_values
from control_plane.schemas.common import ErrorResponse
from control_plane.schemas.executions import ExecutionInput, ExecutionOutput, OutputBlob
from control_plane.services.tenant_blobs import Refused, TenantBlobs
from fleetflow.ir import FILE_KINDS, LiteralType, TypedInterface, TypeKind
from fleetflow.states import ExecutionState
from fleetflow.storage import BlobNotFoundError, BlobStore, LocalBlobStore, relative_key
from fleetflow.storage.local import file_path
from fleetflow.union_literals import union_value

# Mounted by `executions.router`, whose prefix (`/executions`) these paths extend.
router = APIRouter(tags=["executions"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorResponse, "description": "the output names another tenant's blob"},
    404: {"model": ErrorResponse},
    409: {"model": ErrorResponse, "description": "the execution has not succeeded"},
}
_INPUT_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorResponse, "description": "the input names another tenant's blob"},
    404: {"model": ErrorResponse},
}


@dataclass(frozen=True)
class _Blob:
    kind: str  # "file" | "directory"
    at: str
    uri: str
    parts: tuple[str, ...]  # where it lands below the output's directory


def _segment(text: str) -> str:
    """`text` as one safe path segment: never empty, `.`, `..`, nor containing a separator."""
    cleaned = "".join("_" if c in "/\\\0" else c for c in text)
    return cleaned if cleaned and cleaned not in (".", "..") else "_"


def _segments(key: str) -> list[str]:
    return [_segment(part) for part in key.split("/")]


def _walk(value: Any, kind: LiteralType, at: str, parts: tuple[str, ...]) -> Iterator[_Blob]:
    """Every File and Directory inside a validated literal, in value order (an ndarray or a
    DataFrame is the file it is stored as)."""
    if value is None:
        return
    item = kind.item
    if kind.kind in FILE_KINDS:
        name = _segment(str(value.get("name") or PurePosixPath(str(value["uri"])).name))
        yield _Blob("file", at, str(value["uri"]), (*parts, name))
    elif kind.kind is TypeKind.DIRECTORY:
        yield _Blob("directory", at, str(value["uri"]), parts)
    elif kind.kind is TypeKind.OPTIONAL and item is not None:
        yield from _walk(value, item, at, parts)
    elif kind.kind is TypeKind.LIST and item is not None and isinstance(value, list):
        for index, element in enumerate(value):
            yield from _walk(element, item, f"{at}[{index}]", (*parts, str(index)))
    elif kind.kind is TypeKind.DICT and item is not None and isinstance(value, dict):
        for key, element in value.items():
            yield from _walk(element, item, f"{at}[{json.dumps(key)}]", (*parts, _segment(key)))
    elif kind.kind is TypeKind.STRUCT and isinstance(value, dict):
        for field, field_type in (kind.fields or {}).items():
            if field in value:
                yield from _walk(value[field], field_type, f"{at}.{field}", (*parts, field))
    elif kind.kind is TypeKind.UNION:
        try:
            variant, inner = union_value(kind, value)
        except ValueError:
            return
        yield from _walk(inner, variant, at, parts)


def _unique(path: str, taken: set[str]) -> str:
    """`path`, or `path~2`, `path~3`... when two blobs would land on the same file."""
    candidate, n = path, 1
    while candidate in taken:
        n += 1
        candidate = f"{path}~{n}"
    taken.add(candidate)
    return candidate


@dataclass(frozen=True)
class _Output:
    public: ExecutionOutput
    files: dict[str, str]  # relative path -> object URI


Side = Literal["input", "output"]


def _output_value(
    session: Session,
    tenant: Tenant,
    execution_id: str,
    name: str,
    blobs: BlobStore,
    side: Side = "output",
) -> tuple[Any, LiteralType]:
    """The value and declared type of output `name` of a succeeded execution of the tenant
    (or of input `name` of any execution of the tenant)."""
    execution: Execution | None = get_execution(session, tenant.id, execution_id)
    if execution is None:
        raise ApiError(404, f"execution {execution_id} not found")
    interface = TypedInterface.model_validate(execution.workflow.spec["interface"])
    if side == "input":
        declared = {variable.name: variable.type for variable in interface.inputs}
        values = load_values(execution.inputs, blobs) or {}
    else:
        status = ExecutionState(execution.status)
        if status is not ExecutionState.SUCCEEDED:
            later = "" if status.terminal else " yet"
            raise ApiError(
                409, f"execution {execution_id} is {status.value}; it has no outputs{later}"
            )
        declared = {variable.name: variable.type for variable in interface.outputs}
        values = load_values(execution.outputs, blobs) or {}
    if name not in declared or name not in values:
        names = ", ".join(sorted(values)) or "none"
        raise ApiError(
            404, f"execution {execution_id} has no {side} {name!r} (its {side}s: {names})"
        )
    return values[name], declared[name]


def _readable_blobs(
    session: Session,
    tenant: Tenant,
    execution_id: str,
    name: str,
    value: Any,
    kind: LiteralType,
    blobs: BlobStore,
    side: Side = "output",
) -> Iterator[_Blob]:
    """The File and Directory values inside the value, each checked readable by the tenant
    (403 for the first that is not)."""
    readable = TenantBlobs(session, tenant, blobs)
    for blob in _walk(value, kind, name, ()):
        try:
            readable.check(blob.uri)
        except Refused as exc:
            raise ApiError(403, f"{side} {blob.at} of execution {execution_id}: {exc}") from None
        yield blob


def _load_output(
    session: Session,
    tenant: Tenant,
    execution_id: str,
    name: str,
    blobs: BlobStore,
    side: Side = "output",
) -> _Output:
    value, kind = _output_value(session, tenant, execution_id, name, blobs, side)
    public_blobs: list[OutputBlob] = []
    files: dict[str, str] = {}
    taken: set[str] = set()
    for blob in _readable_blobs(session, tenant, execution_id, name, value, kind, blobs, side):
        if blob.kind == "file":
            objects = [(blob.uri, "/".join(blob.parts))]
        else:
            objects = [
                (uri, "/".join((*blob.parts, *_segments(relative_key(uri, blob.uri)))))
                for uri in blobs.list(blob.uri)
            ]
        listed = []
        for uri, path in objects:
            unique = _unique(path, taken)
            files[unique] = uri
            listed.append(unique)
        where = listed[0] if blob.kind == "file" else "/".join(blob.parts) or "."
        blob_kind: Literal["file", "directory"] = "file" if blob.kind == "file" else "directory"
        public_blobs.append(
            OutputBlob(kind=blob_kind, at=blob.at, uri=blob.uri, path=where, files=listed)
        )
    model = ExecutionInput if side == "input" else ExecutionOutput
    public = model(
        execution_id=execution_id,
        name=name,
        type=kind.describe(),
        value=value,
        blobs=public_blobs,
    )
    return _Output(public, files)


@router.get("/{execution_id}/outputs/{name}", responses=_RESPONSES)
async def get_output(
    execution_id: str, name: str, session: SessionDep, caller: ExecutionsRead, blobs: BlobStoreDep
) -> ExecutionOutput:
    """One output of a succeeded execution: its type, its value, and each `File` and
    `Directory` in it with the paths of its files (409 while the execution has not succeeded)."""
    return await run_in_threadpool(
        output_listing, session, caller.tenant, execution_id, name, blobs
    )


@router.get("/{execution_id}/inputs/{name}", responses=_INPUT_RESPONSES)
async def get_input(
    execution_id: str, name: str, session: SessionDep, caller: ExecutionsRead, blobs: BlobStoreDep
) -> ExecutionInput:
    """One input of an execution: its type, its value, and each `File` and `Directory` in it
    with the paths of its files (whatever the execution's status)."""
    return await run_in_threadpool(input_listing, session, caller.tenant, execution_id, name, blobs)


def output_listing(
    session: Session, tenant: Tenant, execution_id: str, name: str, blobs: BlobStore
) -> ExecutionOutput:
    """What `GET .../outputs/{name}` answers the tenant (raises its `ApiError`s)."""
    return _load_output(session, tenant, execution_id, name, blobs).public


def input_listing(
    session: Session, tenant: Tenant, execution_id: str, name: str, blobs: BlobStore
) -> ExecutionInput:
    """What `GET .../inputs/{name}` answers the tenant (raises its `ApiError`s)."""
    public = _load_output(session, tenant, execution_id, name, blobs, "input").public
    assert isinstance(public, ExecutionInput)
    return public


def _find_file(
    session: Session,
    tenant: Tenant,
    execution_id: str,
    name: str,
    path: str,
    blobs: BlobStore,
    side: Side = "output",
) -> str:
    """The object URI of file `path` of output (or input) `name`, as `_load_output` lists it.

    A file of a directory is looked up directly (one `exists`, not a listing of the whole
    directory per file downloaded); only a path the listing had to rename (an unsafe or a
    duplicate name) needs the listing.
    """
    value, kind = _output_value(session, tenant, execution_id, name, blobs, side)
    parts = tuple(path.split("/"))
    for blob in _readable_blobs(session, tenant, execution_id, name, value, kind, blobs, side):
        if blob.kind == "file" and blob.parts == parts:
            return blob.uri
        depth = len(blob.parts)
        rest = parts[depth:]
        if blob.kind == "directory" and parts[:depth] == blob.parts and rest:
            if tuple(_segments("/".join(rest))) == rest:
                key = f"{relative_key(blob.uri, blobs.root_uri)}/{'/'.join(rest)}"
                candidate = blobs.uri(key)
                if blobs.exists(candidate):
                    return candidate
    listed = _load_output(session, tenant, execution_id, name, blobs, side).files
    uri = listed.get(path)
    if uri is None:
        shown = ", ".join(sorted(listed)[:20]) or "none"
        raise ApiError(
            404,
            f"{side} {name} of execution {execution_id} has no file {path!r} (files: {shown})",
        )
    return uri


def _local_object(blobs: BlobStore, uri: str) -> Path | None:
    """The file of a `file://` object inside a local store, to send without a copy."""
    if not isinstance(blobs, LocalBlobStore):
        return None
    path = file_path(uri).resolve()
    return path if path.is_relative_to(blobs.root) and path.is_file() else None


def _copy_to_temporary_file(blobs: BlobStore, uri: str) -> Path:
    fd, name = tempfile.mkstemp(prefix="fleetflow-output-")
    os.close(fd)
    try:
        blobs.download(uri, Path(name))
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


@router.get(
    "/{execution_id}/outputs/{name}/files/{path:path}",
    response_class=FileResponse,
    responses={**_RESPONSES, 200: {"content": {"application/octet-stream": {}}}},
)
async def download_output_file(
    execution_id: str,
    name: str,
    path: str,
    session: SessionDep,
    caller: ExecutionsRead,
    blobs: BlobStoreDep,
) -> FileResponse:
    """The bytes of one file of an output, at a path `GET .../outputs/{name}` lists."""
    return await _download(execution_id, name, path, session, caller.tenant, blobs, "output")


@router.get(
    "/{execution_id}/inputs/{name}/files/{path:path}",
    response_class=FileResponse,
    responses={**_INPUT_RESPONSES, 200: {"content": {"application/octet-stream": {}}}},
)
async def download_input_file(
    execution_id: str,
    name: str,
    path: str,
    session: SessionDep,
    caller: ExecutionsRead,
    blobs: BlobStoreDep,
) -> FileResponse:
    """The bytes of one file of an input, at a path `GET .../inputs/{name}` lists."""
    return await _download(execution_id, name, path, session, caller.tenant, blobs, "input")


async def _download(
    execution_id: str,
    name: str,
    path: str,
    session: Session,
    tenant: Tenant,
    blobs: BlobStore,
    side: Side,
) -> FileResponse:
    uri = await run_in_threadpool(
        _find_file, session, tenant, execution_id, name, path, blobs, side
    )
    filename = PurePosixPath(path).name
    local = _local_object(blobs, uri)
    if local is not None:
        return FileResponse(local, filename=filename, media_type="application/octet-stream")
    try:
        copy = await run_in_threadpool(_copy_to_temporary_file, blobs, uri)
    except BlobNotFoundError:
        raise ApiError(
            404, f"file {path!r} of {side} {name} of execution {execution_id} is no longer stored"
        ) from None
    return FileResponse(
        copy,
        filename=filename,
        media_type="application/octet-stream",
        background=BackgroundTask(copy.unlink, missing_ok=True),
    )
