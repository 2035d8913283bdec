"""Pieces shared by the API schemas: timestamps, names that are DNS labels, the error body."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel


def _as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every timestamp Fleetflow stores is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def dns_label(what: str, *, max_length: int, example: str) -> AfterValidator:
    """Checks that a name (a tenant's, a cluster's) is a DNS label of at most `max_length`
    characters; `what` and `example` word the error."""

    def check(name: str) -> str:
        if len(name) > max_length or not _DNS_LABEL.fullmatch(name):
            raise ValueError(
                f"{name!r} is not a valid {what}: 1-{max_length} lowercase letters, digits and "
                f"'-', starting and ending with a letter or digit (e.g. {example})"
            )
        return name

    return AfterValidator(check)


class FieldError(BaseModel):
    field: str
    message: str


class ErrorResponse(BaseModel):
    """The body of every error response."""

    detail: str
    errors: list[FieldError] | None = None
