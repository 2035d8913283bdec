"""Tenants: the unit of isolation every other row belongs to."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.db.models import Tenant, new_id, utcnow
from control_plane.db.repositories._insert import insert_ignoring_conflicts


def get_tenant_by_name(session: Session, name: str) -> Tenant | None:
    return session.scalar(select(Tenant).where(Tenant.name == name))


def get_or_create_tenant(session: Session, name: str) -> Tenant:
    """The tenant called `name`, created if it does not exist yet (safe under concurrency)."""
    tenant = get_tenant_by_name(session, name)
    if tenant is not None:
        return tenant
    insert_ignoring_conflicts(
        session, Tenant, {"id": new_id("tn"), "name": name, "created_at": utcnow()}
    )
    tenant = get_tenant_by_name(session, name)
    assert tenant is not None, "the insert or a concurrent one created it"
    return tenant
