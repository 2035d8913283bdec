"""Pieces every API response model shares: UTC timestamps and the error body."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel

from fleetflow.timestamps import as_utc


def _as_utc(value: datetime) -> datetime:
    try:
        return as_utc(value)
    except OverflowError:  # e.g. 0001-01-01T00:00+05:00 in a request: a 422, not a 500
        raise ValueError(f"{value.isoformat()} is outside the years 1-9999 in UTC") from None


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class FieldError(BaseModel):
    field: str
    message: str


class ErrorResponse(BaseModel):
    """The body of every error response."""

    detail: str
    errors: list[FieldError] | None = None
