"""UTC timestamps in API models: a time whose UTC falls outside years 1-9999 is a validation
error naming it (a 422 in a request), never an OverflowError (a 500 the API fuzzer found in
`POST /api/v1/launchplans/{name}/backfill`)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import TypeAdapter, ValidationError

from fleetflow.api_models.common import UtcDatetime

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
