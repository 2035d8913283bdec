"""Clusters and their agents' credentials and liveness."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.db.models import Cluster, new_id, utcnow


def hash_token(token: str) -> str:
    """Tokens are stored only as hashes; a leaked database does not leak credentials."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_agent_token() -> str:
    return f"ffa_{secrets.token_urlsafe(32)}"


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


def cluster_for_token(session: Session, token: str) -> Cluster | None:
    return session.scalar(select(Cluster).where(Cluster.token_hash == hash_token(token)))


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


def online_clusters(
    session: Session, *, grace: timedelta, now: datetime | None = None
) -> list[Cluster]:
    """Clusters whose agent heartbeated within `grace`, by name (a stable tie-break)."""
    cutoff = (now or utcnow()) - grace
    rows = session.scalars(select(Cluster).where(Cluster.last_heartbeat_at.is_not(None))).all()
    return sorted(
        (c for c in rows if c.last_heartbeat_at and as_utc(c.last_heartbeat_at) >= cutoff),
        key=lambda c: c.name,
    )


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we write is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)
