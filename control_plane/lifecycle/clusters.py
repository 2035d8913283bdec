"""A cluster's status as the control plane sees it, judged by its agent's last heartbeat: the
one rule, shared by the API (schemas, cluster listings, metrics) and the database layer. A
leaf, like the rest of `lifecycle`: it imports nothing of the control plane (the
`ClusterStatus` enum is the API's, in `fleetflow`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fleetflow.api_models.clusters import ClusterStatus
from fleetflow.timestamps import as_utc

ONLINE_HEARTBEAT_INTERVALS = 1.5
"""A cluster is online while its last heartbeat is at most this many intervals old."""


def cluster_status(
    last_heartbeat_at: datetime | None,
    *,
    heartbeat_interval: timedelta,
    grace: timedelta,
    now: datetime | None = None,
) -> ClusterStatus:
    """The one rule for a cluster's status, from the age of its last heartbeat.

    - online: at most 1.5 heartbeat intervals old: the agent is keeping time;
    - degraded: older, but within `grace` (the heartbeat grace, 3 intervals): one or two
      heartbeats missed; the cluster still receives work and keeps its attempts;
    - offline: older than `grace`, or never heartbeated: nothing is placed there, and the
      cluster-health loop marks its attempts LOST (they run again elsewhere).
    """
    if last_heartbeat_at is None:
        return ClusterStatus.OFFLINE
    age = (now or datetime.now(UTC)) - as_utc(last_heartbeat_at)
    if age <= heartbeat_interval * ONLINE_HEARTBEAT_INTERVALS:
        return ClusterStatus.ONLINE
    if age <= grace:
        return ClusterStatus.DEGRADED
    return ClusterStatus.OFFLINE
