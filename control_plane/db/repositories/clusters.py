"""Clusters and their agents' credentials and liveness."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from typing import cast as typed

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.orm import Session

from control_plane.db.models import Cluster, TaskAttempt, new_id, utcnow
from control_plane.db.repositories._insert import insert_ignoring_conflicts
from control_plane.tokens import hash_token, new_agent_token
from fleetflow.states import AttemptState
from fleetflow.timestamps import as_utc

# Attempts a cluster answers for: assigned to it, leased by its agent, or running there (the
# same states placement counts as its load).
_ACTIVE_STATES = (
    AttemptState.ASSIGNED.value,
    AttemptState.LEASED.value,
    AttemptState.RUNNING.value,
)


class ClusterExistsError(ValueError):
    """A cluster of that name exists already."""


def ensure_cluster(session: Session, name: str, token: str, labels: dict[str, str]) -> Cluster:
    """Create the cluster, or rotate its token and labels if it exists (dev bootstrap)."""
    cluster = session.scalar(select(Cluster).where(Cluster.name == name))
    if cluster is None:
        cluster = Cluster(id=new_id("cl"), name=name, token_hash=hash_token(token), labels=labels)
        session.add(cluster)
    else:
        cluster.token_hash = hash_token(token)
        cluster.labels = labels
    session.flush()
    return cluster


def create_cluster(session: Session, name: str, labels: dict[str, str]) -> tuple[Cluster, str]:
    """Create a cluster with a fresh agent token; returns it and the token.

    This is the only moment the token exists in clear: only its hash is stored.

    Raises:
        ClusterExistsError: a cluster called `name` exists (also when a concurrent request
            created it first).
    """
    token = new_agent_token()
    cluster_id = new_id("cl")
    insert_ignoring_conflicts(
        session,
        Cluster,
        {
            "id": cluster_id,
            "name": name,
            "token_hash": hash_token(token),
            "labels": labels,
            "capacity": {},
            "created_at": utcnow(),
        },
    )
    cluster = get_cluster_by_name(session, name)
    if cluster is None or cluster.id != cluster_id:
        raise ClusterExistsError(f"cluster {name} exists already")
    return cluster, token


def rotate_agent_token(session: Session, cluster: Cluster) -> str:
    """Give the cluster a fresh agent token; the previous one is refused from the next call
    on. Returns the new token (its only appearance in clear)."""
    token = new_agent_token()
    cluster.token_hash = hash_token(token)
    session.flush()
    return token


def get_cluster_by_name(session: Session, name: str) -> Cluster | None:
    return session.scalar(select(Cluster).where(Cluster.name == name))


def list_clusters(session: Session) -> list[Cluster]:
    """Every cluster, by name."""
    return list(session.scalars(select(Cluster).order_by(Cluster.name)))


def active_attempt_counts(session: Session, cluster_ids: Iterable[str]) -> dict[str, int]:
    """Cluster id -> attempts assigned to it, leased or running there (absent when none)."""
    ids = list(cluster_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(TaskAttempt.cluster_id, func.count())
        .where(TaskAttempt.cluster_id.in_(ids), TaskAttempt.status.in_(_ACTIVE_STATES))
        .group_by(TaskAttempt.cluster_id)
    ).all()
    return {cluster_id: count for cluster_id, count in rows if cluster_id is not None}


class ClusterRef(NamedTuple):
    """Which cluster a token names: its id and name, not its row (whose capacity and labels,
    JSON decoded on load, an agent call's authentication has no use for)."""

    id: str
    name: str


# Built once, on the table: every agent call looks its token up.
_CLUSTERS = typed(Table, Cluster.__table__)
_BY_TOKEN = select(_CLUSTERS.c.id, _CLUSTERS.c.name).where(
    _CLUSTERS.c.token_hash == bindparam("token_hash")
)


def cluster_for_token(session: Session, token: str) -> ClusterRef | None:
    found = session.execute(_BY_TOKEN, {"token_hash": hash_token(token)}).first()
    return None if found is None else ClusterRef(found.id, found.name)


def record_heartbeat(
    session: Session,
    cluster: Cluster,
    *,
    capacity: dict[str, Any],
    agent_version: str | None = None,
    labels: dict[str, str] | None = None,
) -> None:
    cluster.capacity = capacity
    cluster.last_heartbeat_at = utcnow()
    if agent_version is not None:
        cluster.agent_version = agent_version
    if labels is not None:
        cluster.labels = {**cluster.labels, **labels}


# Built once: every placement pass reads it.
_HEARTBEATED = select(Cluster).where(Cluster.last_heartbeat_at.is_not(None))


def online_clusters(
    session: Session, *, grace: timedelta, now: datetime | None = None
) -> list[Cluster]:
    """Clusters whose agent heartbeated within `grace`, by name (a stable tie-break)."""
    cutoff = (now or utcnow()) - grace
    rows = session.scalars(_HEARTBEATED).all()
    return sorted(
        (c for c in rows if c.last_heartbeat_at and as_utc(c.last_heartbeat_at) >= cutoff),
        key=lambda c: c.name,
    )
