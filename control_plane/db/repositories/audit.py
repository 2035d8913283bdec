"""The audit log: every admin and policy change, who made it and when."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.db.models import AuditEntry, utcnow


def record(
    session: Session, actor: str, action: str, target: str, details: dict[str, Any] | None = None
) -> None:
    """Add an entry in the caller's transaction: it commits with the change it describes."""
    session.add(
        AuditEntry(at=utcnow(), actor=actor, action=action, target=target, details=details or {})
    )


def entries(session: Session, *, limit: int, since: datetime | None = None) -> list[AuditEntry]:
    """Newest first."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    return list(session.scalars(query))
