"""Timestamps as the REST API writes them (ISO 8601), read back as aware datetimes."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_time(text: str | None) -> datetime | None:
    """An aware datetime (naive ones are UTC), or None for a missing or unreadable value."""
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
