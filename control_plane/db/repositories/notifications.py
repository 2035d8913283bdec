"""Notification deliveries (the outbox of webhook notifications) and tenants' signing keys.

`queue_deliveries` runs inside the transaction that moves an execution to a terminal state
(`executions.move_execution`), so a committed terminal state always has its deliveries, and a
rolled-back one none. Senders claim a due row by pushing its `next_attempt_at` forward with a
compare-and-set, then record the attempt's result.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from control_plane.db.models import (
    Execution,
    NotificationDelivery,
    NotificationSigningKey,
    Tenant,
    new_id,
    utcnow,
)
from control_plane.db.repositories._insert import insert_ignoring_conflicts
from fleetflow.api_models.notifications import DeliveryStatus, NotifyOn
from fleetflow.states import ExecutionState
from fleetflow.timestamps import as_utc

SIGNING_KEY_PREFIX = "ffwh_"


def _iso(value: datetime | None) -> str | None:
    return as_utc(value).isoformat() if value is not None else None


def event_payload(execution: Execution, tenant_name: str, delivery_id: str) -> dict[str, Any]:
    """The event of `execution`'s terminal state: what every format is rendered from."""
    error = execution.error or {}
    return {
        "event": f"execution.{execution.status.lower()}",
        "delivery_id": delivery_id,
        "execution_id": execution.id,
        "tenant": tenant_name,
        "workflow": execution.workflow.name,
        "version": execution.workflow.version,
        "state": execution.status,
        "error": error.get("message"),
        "failed_node": error.get("node_id"),
        "created_at": _iso(execution.created_at),
        "started_at": _iso(execution.started_at),
        "finished_at": _iso(execution.finished_at),
        "path": f"/api/v1/executions/{execution.id}",
    }


def queue_deliveries(session: Session, execution: Execution, state: ExecutionState) -> int:
    """Queue a delivery for each of the execution's rules that fires on `state` (due now), in
    the caller's transaction; how many. Queuing twice queues nothing more."""
    fired = NotifyOn(state.value.lower()) if state.value.lower() in set(NotifyOn) else None
    rules = execution.notifications or []
    if fired is None or not rules:
        return 0
    tenant = session.get(Tenant, execution.tenant_id)
    assert tenant is not None
    now = utcnow()
    rows = []
    for index, rule in enumerate(rules):
        if fired.value not in rule.get("on", []):
            continue
        delivery_id = new_id("nd")
        rows.append(
            {
                "id": delivery_id,
                "tenant_id": execution.tenant_id,
                "execution_id": execution.id,
                "rule_index": index,
                "state": fired.value,
                "url": rule["webhook"]["url"],
                "format": rule.get("format", "json"),
                "payload": event_payload(execution, tenant.name, delivery_id),
                "status": DeliveryStatus.PENDING.value,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
        )
    insert_ignoring_conflicts(session, NotificationDelivery, rows)
    return len(rows)


def due_tenants(session: Session, now: datetime) -> list[str]:
    """The tenants with pending deliveries due at `now`, the longest waiting first."""
    oldest = func.min(NotificationDelivery.next_attempt_at)
    rows = session.execute(
        select(NotificationDelivery.tenant_id)
        .where(
            NotificationDelivery.status == DeliveryStatus.PENDING.value,
            NotificationDelivery.next_attempt_at <= now,
        )
        .group_by(NotificationDelivery.tenant_id)
        .order_by(oldest)
    )
    return [tenant_id for (tenant_id,) in rows]


def due_deliveries(session: Session, tenant_id: str, now: datetime, limit: int) -> list[str]:
    """Ids of the tenant's pending deliveries due at `now`, the longest due first."""
    return list(
        session.scalars(
            select(NotificationDelivery.id)
            .where(
                NotificationDelivery.tenant_id == tenant_id,
                NotificationDelivery.status == DeliveryStatus.PENDING.value,
                NotificationDelivery.next_attempt_at <= now,
            )
            .order_by(NotificationDelivery.next_attempt_at)
            .limit(limit)
        )
    )


@dataclass(frozen=True)
class Claimed:
    """A delivery a sender holds until `NotificationDelivery.next_attempt_at`."""

    id: str
    tenant_id: str
    url: str
    format: str
    payload: dict[str, Any]
    attempts: int


def claim_delivery(
    session: Session, delivery_id: str, now: datetime, until: datetime
) -> Claimed | None:
    """Hold a due delivery until `until` (compare-and-set: None if another sender holds it,
    or it is no longer pending or due)."""
    result = session.execute(
        update(NotificationDelivery)
        .where(
            NotificationDelivery.id == delivery_id,
            NotificationDelivery.status == DeliveryStatus.PENDING.value,
            NotificationDelivery.next_attempt_at <= now,
        )
        .values(next_attempt_at=until)
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return None
    row = session.get(NotificationDelivery, delivery_id, populate_existing=True)
    assert row is not None
    return Claimed(row.id, row.tenant_id, row.url, row.format, row.payload, row.attempts)


def record_attempt(
    session: Session,
    delivery_id: str,
    *,
    delivered: bool,
    status_code: int | None,
    error: str | None,
    retry_at: datetime | None,
) -> DeliveryStatus:
    """Count one attempt of a claimed delivery: delivered, due again at `retry_at`, or (no
    `retry_at`) given up. Returns its new status."""
    now = utcnow()
    if delivered:
        status, values = DeliveryStatus.DELIVERED, {"delivered_at": now, "next_attempt_at": None}
    elif retry_at is not None:
        status, values = DeliveryStatus.PENDING, {"next_attempt_at": retry_at}
    else:
        status, values = DeliveryStatus.FAILED, {"next_attempt_at": None}
    session.execute(
        update(NotificationDelivery)
        .where(NotificationDelivery.id == delivery_id)
        .values(
            status=status.value,
            attempts=NotificationDelivery.attempts + 1,
            last_status_code=status_code,
            last_error=error[:2000] if error else None,
            **values,
        )
        .execution_options(synchronize_session=False)
    )
    return status


def list_deliveries(
    session: Session, tenant_id: str, execution_id: str
) -> list[NotificationDelivery]:
    """The deliveries of the tenant's execution, oldest first."""
    return list(
        session.scalars(
            select(NotificationDelivery)
            .where(
                NotificationDelivery.tenant_id == tenant_id,
                NotificationDelivery.execution_id == execution_id,
            )
            .order_by(NotificationDelivery.created_at, NotificationDelivery.rule_index)
            .execution_options(populate_existing=True)
        )
    )


def signing_key(session: Session, tenant_id: str) -> NotificationSigningKey:
    """The tenant's signing key, made now if it has none (concurrent callers get one key)."""
    insert_ignoring_conflicts(
        session,
        NotificationSigningKey,
        {
            "tenant_id": tenant_id,
            "key": SIGNING_KEY_PREFIX + secrets.token_urlsafe(32),
            "created_at": utcnow(),
        },
    )
    row = session.get(NotificationSigningKey, tenant_id, populate_existing=True)
    assert row is not None
    return row


def rotate_signing_key(session: Session, tenant_id: str) -> NotificationSigningKey:
    """Replace the tenant's signing key with a new one: deliveries sent from now on are
    signed with it."""
    row = signing_key(session, tenant_id)
    row.key = SIGNING_KEY_PREFIX + secrets.token_urlsafe(32)
    row.created_at = utcnow()
    session.flush()
    return row
