"""Reading raw upload bodies with a size limit and a sha256, without trusting Content-Length."""

from __future__ import annotations

import hashlib

from fastapi import Request

from control_plane.api.errors import ApiError
from control_plane.schemas.common import FieldError


async def read_body(request: Request, limit: int, what: str) -> tuple[bytes, str]:
    """The body and its sha256; 413 past `limit` bytes."""
    too_large = ApiError(413, f"{what} too large: the limit is {limit} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    hasher = hashlib.sha256()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        hasher.update(chunk)
        chunks.append(chunk)
    return b"".join(chunks), hasher.hexdigest()


def check_digest(what: str, actual: str, expected: str) -> None:
    if actual != expected:
        message = f"the body's sha256 is {actual}, not {expected}"
        raise ApiError(
            422, f"{what} digest mismatch: {message}", [FieldError(field="digest", message=message)]
        )
