"""Uploads of `File` and `Directory` workflow inputs from the engineer's machine.

Files are content-addressed (`tenants/<tenant>/uploads/files/<sha256>/<name>`); a directory's
files share one prefix (`tenants/<tenant>/uploads/dirs/<id>/…`). The answer is the URI to put
in the input's literal. Execution inputs may only name blobs under their tenant's `uploads/` and
the store's `executions/` prefixes, so an input cannot make a task read an arbitrary path on an
agent, nor another tenant's uploads.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool

from control_plane.api.auth import ExecutionsWrite
from control_plane.api.body import check_digest, read_body
from control_plane.api.deps import BlobStoreDep
from control_plane.api.errors import ApiError
from control_plane.blob_layout import upload_directory_prefix, upload_file_key
from control_plane.schemas.common import ErrorResponse
from control_plane.schemas.workflows import SHA256_HEX
from fleetflow.api_models.bundles import UploadPublic

router = APIRouter(prefix="/uploads", tags=["uploads"])
Digest = Annotated[str, PathParam(pattern=SHA256_HEX, description="sha256, lowercase hex")]
_NAME = re.compile(r"^[A-Za-z0-9._+-]{1,200}$")


def _safe_relative(path: str) -> str:
    parts = PurePosixPath(path).parts
    if (
        not parts
        or path.startswith("/")
        or any(p in ("..", ".", "") for p in parts)
        or not all(_NAME.match(p) for p in parts)
    ):
        raise ApiError(422, f"invalid file path {path!r}: use relative names of [A-Za-z0-9._+-]")
    return "/".join(parts)


_RESPONSES: dict[int | str, dict[str, object]] = {
    413: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
}


@router.put("/files/{digest}/{name}", status_code=201, responses=_RESPONSES)
async def upload_file(
    digest: Digest, name: str, request: Request, blob_store: BlobStoreDep, caller: ExecutionsWrite
) -> UploadPublic:
    """Store one file input by its sha256; idempotent. Returns the URI for its literal."""
    key = upload_file_key(caller.tenant.name, digest, _safe_relative(name))
    data, actual = await read_body(request, request.app.state.max_bundle_bytes, "file")
    check_digest("file", actual, digest)
    uri = await run_in_threadpool(blob_store.put, key, data)
    return UploadPublic(uri=uri, size_bytes=len(data))


@router.put("/dirs/{upload_id}/{path:path}", status_code=201, responses=_RESPONSES)
async def upload_directory_file(
    upload_id: Digest,
    path: str,
    request: Request,
    blob_store: BlobStoreDep,
    caller: ExecutionsWrite,
) -> UploadPublic:
    """Store one file of a directory input; the answer's URI is the directory's."""
    prefix = upload_directory_prefix(caller.tenant.name, upload_id)
    data, _ = await read_body(request, request.app.state.max_bundle_bytes, "file")
    await run_in_threadpool(blob_store.put, f"{prefix}/{_safe_relative(path)}", data)
    return UploadPublic(uri=blob_store.uri(prefix), size_bytes=len(data))
