"""Pieces every API response model shares: UTC timestamps and the error body."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel


def _as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every timestamp Fleetflow stores is UTC.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
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
