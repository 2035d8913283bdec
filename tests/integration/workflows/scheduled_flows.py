"""A workflow launched by a launch plan's schedule (tests/integration/test_schedules.py): it
takes the scheduled time (`kickoff_time`) and runs for `seconds`, so that a schedule firing
faster than it finishes exercises the overlap policy."""

from __future__ import annotations

import time
from datetime import datetime

from fleetflow import task, workflow


@task
def stamp(kickoff_time: datetime, seconds: float) -> str:
    time.sleep(seconds)
    return kickoff_time.isoformat()


@workflow
def scheduled(kickoff_time: datetime, seconds: float = 0.0) -> str:
    return stamp(kickoff_time=kickoff_time, seconds=seconds)
