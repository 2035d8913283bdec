"""UTC timestamps in API models: a time whose UTC falls outside years 1-9999 is a validation
error naming it (a 422 in a request), never an OverflowError (a 500 the API fuzzer found in
`POST /api/v1/launchplans/{name}/backfill`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import TypeAdapter, ValidationError

from fleetflow.api_models.common import UtcDatetime
from fleetflow.timestamps import as_utc, as_utc_bound

UTC_TIME: TypeAdapter[datetime] = TypeAdapter(UtcDatetime)


def test_times_are_read_as_utc() -> None:
    assert UTC_TIME.validate_python("2026-12-05T10:00:00+02:00") == datetime(
        2026, 12, 5, 8, tzinfo=UTC
    )
    assert UTC_TIME.validate_python("2026-12-05T10:00:00") == datetime(2026, 12, 5, 10, tzinfo=UTC)


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00"])
def test_a_time_outside_the_utc_range_is_a_validation_error(moment: str) -> None:
    with pytest.raises(ValidationError, match="outside the years 1-9999 in UTC"):
        UTC_TIME.validate_python(moment)


@pytest.mark.parametrize(
    ("moment", "edge"),
    [
        (datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))), datetime.min),
        (datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))), datetime.max),
    ],
)
def test_a_bound_outside_the_utc_range_is_the_earliest_or_latest_time(
    moment: datetime, edge: datetime
) -> None:
    """A filter's bound (`created_after=0001-01-01T00:00+05:00`) bounds stored times as the
    UTC edge would; the strict form raises, which the models turn into the 422 above."""
    assert as_utc_bound(moment) == edge.replace(tzinfo=UTC)
    with pytest.raises(OverflowError):
        as_utc(moment)


def test_naive_times_are_utc_and_aware_ones_are_converted() -> None:
    assert as_utc(datetime(2026, 12, 5, 10)) == datetime(2026, 12, 5, 10, tzinfo=UTC)
    later = datetime(2026, 12, 5, 10, tzinfo=timezone(timedelta(hours=2)))
    assert as_utc(later) == as_utc_bound(later) == datetime(2026, 12, 5, 8, tzinfo=UTC)
