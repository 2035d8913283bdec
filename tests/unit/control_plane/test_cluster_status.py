"""The one rule for a cluster's status, at its boundaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from control_plane.lifecycle.clusters import cluster_status
from control_plane.settings import GrpcSettings
from fleetflow.api_models.clusters import ClusterStatus

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
SETTINGS = GrpcSettings(heartbeat_interval_seconds=10)  # online <= 15 s, grace 30 s
INTERVAL = timedelta(seconds=SETTINGS.heartbeat_interval_seconds)


@pytest.mark.parametrize(
    ("age_seconds", "expected"),
    [
        (0, ClusterStatus.ONLINE),
        (15, ClusterStatus.ONLINE),  # 1.5 intervals: still on time
        (15.001, ClusterStatus.DEGRADED),
        (30, ClusterStatus.DEGRADED),  # the heartbeat grace, inclusive as placement counts it
        (30.001, ClusterStatus.OFFLINE),
        (3600, ClusterStatus.OFFLINE),
        (-2, ClusterStatus.ONLINE),  # a heartbeat "from the future": clocks disagree slightly
    ],
)
def test_status_by_heartbeat_age(age_seconds: float, expected: ClusterStatus) -> None:
    heartbeat = NOW - timedelta(seconds=age_seconds)
    status = cluster_status(
        heartbeat, heartbeat_interval=INTERVAL, grace=SETTINGS.heartbeat_grace, now=NOW
    )
    assert status is expected


def test_never_heartbeated_is_offline() -> None:
    assert (
        cluster_status(None, heartbeat_interval=INTERVAL, grace=SETTINGS.heartbeat_grace, now=NOW)
        is ClusterStatus.OFFLINE
    )


def test_naive_timestamps_are_utc() -> None:
    """SQLite hands back naive datetimes: they are read as UTC, not local time."""
    naive = (NOW - timedelta(seconds=20)).replace(tzinfo=None)
    status = cluster_status(
        naive, heartbeat_interval=INTERVAL, grace=SETTINGS.heartbeat_grace, now=NOW
    )
    assert status is ClusterStatus.DEGRADED
