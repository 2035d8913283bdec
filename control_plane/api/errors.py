"""One error shape for every response: `{"detail": "<message>", "errors": [{field, message}]}`.

Routes raise `ApiError`; the handlers installed here also translate framework errors (unknown
route, request validation) into that shape, and turn unexpected exceptions into a logged 500
whose body says only "internal error".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from control_plane.schemas.common import ErrorResponse, FieldError

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the client can act on, rendered as an `ErrorResponse`."""

    def __init__(
        self,
        status_code: int,
        detail: str,
        errors: Sequence[FieldError] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.errors = list(errors) if errors else None
        self.headers = headers


def not_found(detail: str) -> ApiError:
    return ApiError(404, detail)


def error_response(
    status_code: int,
    detail: str,
    errors: Sequence[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = ErrorResponse(detail=detail, errors=list(errors) if errors else None)
    return JSONResponse(body.model_dump(exclude_none=True), status_code, headers=headers)


def field_path(loc: Sequence[Any]) -> str:
    """`("body", "inputs", "xs", 2)` -> `inputs.xs[2]`; other locations keep their prefix."""
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path or "body"


def _validation_errors(exc: RequestValidationError) -> list[FieldError]:
    errors = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            reason = error.get("ctx", {}).get("error", "")
            errors.append(FieldError(field="body", message=f"invalid JSON: {reason}".rstrip(": ")))
        else:
            errors.append(FieldError(field=field_path(error["loc"]), message=error["msg"]))
    return errors


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.detail, exc.errors, exc.headers)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, str(exc.detail), headers=exc.headers)


async def _request_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _validation_errors(exc)
    detail = "invalid request: " + "; ".join(f"{e.field}: {e.message}" for e in errors)
    return error_response(422, detail, errors)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
