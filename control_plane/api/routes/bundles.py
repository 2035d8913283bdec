"""Code bundles: tar.gz archives of the engineer's code, stored by their sha256.

The CLI asks `HEAD` first and uploads with `PUT` only when the server lacks the bundle.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from starlette.concurrency import run_in_threadpool

from control_plane.api.auth import WorkflowsRead, WorkflowsWrite
from control_plane.api.body import check_digest, read_body
from control_plane.api.deps import BlobStoreDep
from control_plane.api.errors import ApiError
from control_plane.blob_layout import bundle_key
from control_plane.schemas.common import ErrorResponse
from control_plane.schemas.workflows import SHA256_HEX
from control_plane.services.bundles import bundle_exists
from fleetflow.api_models.bundles import BundlePublic

DEFAULT_MAX_BUNDLE_BYTES = 64 * 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"

router = APIRouter(prefix="/bundles", tags=["bundles"])
Digest = Annotated[str, Path(pattern=SHA256_HEX, description="sha256 of the bundle, lowercase hex")]


@router.put(
    "/{digest}",
    status_code=201,
    responses={
        200: {"model": BundlePublic, "description": "already stored"},
        413: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
    },
)
async def upload_bundle(
    digest: Digest,
    request: Request,
    response: Response,
    blob_store: BlobStoreDep,
    caller: WorkflowsWrite,
) -> BundlePublic:
    """Store the raw request body (a tar.gz) as the bundle `digest`; idempotent."""
    limit: int = request.app.state.max_bundle_bytes
    data, actual = await read_body(request, limit, "bundle")
    check_digest("bundle", actual, digest)
    if not data.startswith(_GZIP_MAGIC):
        raise ApiError(422, "the bundle is not a gzip-compressed tar archive")
    if await run_in_threadpool(bundle_exists, blob_store, caller.tenant.name, digest):
        response.status_code = 200
    else:
        await run_in_threadpool(blob_store.put, bundle_key(caller.tenant.name, digest), data)
    return BundlePublic(digest=digest, size_bytes=len(data))


@router.head(
    "/{digest}",
    response_class=Response,  # no body, so the document lists no media type for it
    responses={200: {"description": "stored"}, 404: {"description": "not uploaded yet"}},
)
async def head_bundle(digest: Digest, blob_store: BlobStoreDep, caller: WorkflowsRead) -> Response:
    """200 when the bundle is stored, 404 when it must be uploaded."""
    exists = await run_in_threadpool(bundle_exists, blob_store, caller.tenant.name, digest)
    return Response(status_code=200 if exists else 404)
