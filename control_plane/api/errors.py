"""One error shape for every response: `{"detail": "<message>", "errors": [{field, message}]}`.

Routes raise `ApiError`; the handlers installed here also translate framework errors (unknown
route, request validation) and the services' refusals of a request into that shape, and turn
unexpected exceptions into a logged 500 whose body says only "internal error".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from control_plane.db.session import is_transient
from control_plane.schemas.common import ErrorResponse, FieldError
from control_plane.services.executions import ExecutionRequestError

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


async def _execution_request_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ExecutionRequestError)
    return error_response(exc.status_code, str(exc), exc.errors)


# What FastAPI answers (400) when a body cannot even be decoded, e.g. bytes that are not UTF-8.
_UNPARSABLE_BODY = "There was an error parsing the body"


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and exc.detail == _UNPARSABLE_BODY:
        # Answer like any other malformed JSON body: a 422 that says what is wrong with it.
        reason = str(exc.__cause__) if exc.__cause__ else "it cannot be decoded"
        message = f"invalid JSON: {reason}"
        return error_response(
            422, f"invalid request: body: {message}", [FieldError(field="body", message=message)]
        )
    return error_response(exc.status_code, str(exc.detail), headers=exc.headers)


async def _request_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _validation_errors(exc)
    detail = "invalid request: " + "; ".join(f"{e.field}: {e.message}" for e in errors)
    return error_response(422, detail, errors)


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DataError)
    if "NUL" in str(exc.orig):
        # PostgreSQL refuses NUL characters in text (SQLite stores them): a string from the
        # request carried one. Paths and queries are refused earlier (limits.RefuseNul).
        return error_response(422, "invalid request: text may not contain NUL (\\u0000) characters")
    return await _unexpected_error(request, exc)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    if is_transient(exc):  # the database restarted, or aborted a conflicting transaction
        reason = (str(getattr(exc, "orig", exc)).splitlines() or [""])[0]  # no SQL, no values
        logger.warning(
            "transient database error in %s %s: %s", request.method, request.url.path, reason
        )
        return error_response(
            503, "the database is briefly unavailable: retry", headers={"Retry-After": "1"}
        )
    logger.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(ExecutionRequestError, _execution_request_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(DataError, _data_error)
    app.add_exception_handler(Exception, _unexpected_error)
