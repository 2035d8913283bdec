"""Pieces every API response model shares: UTC timestamps and the error body."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel


def _as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every timestamp Fleetflow stores is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class FieldError(BaseModel):
    field: str
    message: str


class ErrorResponse(BaseModel):
    """The body of every error response."""

    detail: str
    errors: list[FieldError] | None = None
