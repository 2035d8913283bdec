"""Timestamps as the REST API writes them (ISO 8601), read back as aware datetimes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def parse_time(text: str | None) -> datetime | None:
    """An aware datetime (naive ones are UTC), or None for a missing or unreadable value."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def as_utc(value: datetime) -> datetime:
    """`value` in UTC; a naive one is taken as UTC (SQLite hands back naive datetimes, and
    everything Fleetflow writes is UTC). Raises OverflowError when its UTC time falls outside
    the years 1-9999 (`0001-01-01T00:00+05:00`)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def as_utc_bound(value: datetime) -> datetime:
    """`as_utc` for a bound on stored times: a time whose UTC falls outside the years 1-9999
    is the earliest or latest UTC time, which bounds every stored time the same way."""
    try:
        return as_utc(value)
    except OverflowError:
        offset = value.utcoffset()
        edge = datetime.min if offset is not None and offset > timedelta(0) else datetime.max
        return edge.replace(tzinfo=UTC)
