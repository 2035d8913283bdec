"""Notifications: an execution's webhook delivery log, and the tenant's signing key.

Both are for the tenant's admins (`notifications:read` / `:write`, which only the tenant-admin
and platform-admin roles hold): the log shows where the tenant's webhooks point and how they
answer, and the key forges deliveries. Another tenant's execution answers as missing.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy.orm import Session

from control_plane.api.auth import Caller, NotificationsRead, NotificationsWrite
from control_plane.api.deps import SessionDep
from control_plane.api.errors import ApiError
from control_plane.db.models import NotificationDelivery as DeliveryRow
from control_plane.db.repositories import audit
from control_plane.db.repositories import notifications as repo
from control_plane.db.repositories.executions import get_execution
from control_plane.schemas.common import ErrorResponse
from fleetflow.api_models.notifications import (
    DeliveryStatus,
    NotificationDelivery,
    NotifyOn,
    SigningKey,
    redacted_url,
)

router = APIRouter(tags=["notifications"])
_ERRORS: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse}}


def _public(row: DeliveryRow) -> NotificationDelivery:
    return NotificationDelivery(
        id=row.id,
        execution_id=row.execution_id,
        rule_index=row.rule_index,
        state=NotifyOn(row.state),
        url=redacted_url(row.url),
        format="slack" if row.format == "slack" else "json",
        status=DeliveryStatus(row.status),
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at if row.status == DeliveryStatus.PENDING else None,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        delivered_at=row.delivered_at,
        created_at=row.created_at,
    )


@router.get("/executions/{execution_id}/notifications", responses=_ERRORS)
def execution_notifications(
    execution_id: str, session: SessionDep, caller: NotificationsRead
) -> list[NotificationDelivery]:
    """The execution's webhook deliveries: status, attempts, last answer or error."""
    if get_execution(session, caller.tenant.id, execution_id) is None:
        raise ApiError(404, f"execution {execution_id} not found")
    return [_public(row) for row in repo.list_deliveries(session, caller.tenant.id, execution_id)]


def _key(session: Session, caller: Caller, *, rotate: bool) -> SigningKey:
    tenant_id = caller.tenant.id
    row = (repo.rotate_signing_key if rotate else repo.signing_key)(session, tenant_id)
    if rotate:
        audit.record(session, caller.principal, "notifications.rotate_key", caller.tenant.name)
    answer = SigningKey(key=row.key, created_at=row.created_at)
    session.commit()
    return answer


@router.get("/notifications/signing-key")
def get_signing_key(session: SessionDep, caller: NotificationsRead) -> SigningKey:
    """The key the tenant's webhook deliveries are signed with (made at first use)."""
    return _key(session, caller, rotate=False)


@router.post("/notifications/signing-key/rotate")
def rotate_signing_key(session: SessionDep, caller: NotificationsWrite) -> SigningKey:
    """Replace the signing key: deliveries sent from now on are signed with the new one
    (audited)."""
    return _key(session, caller, rotate=True)
