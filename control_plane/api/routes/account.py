"""What a caller reads about itself and its tenant: identity, quota status, usage."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Header, Query

from control_plane.api.auth import (
    TENANT_HEADER,
    AuthenticatedDep,
    AuthorizerDep,
    QuotaRead,
    UsageRead,
    caller_in,
)
from control_plane.api.deps import SessionDep
from control_plane.api.errors import ApiError
from control_plane.api.routes.admin import quota_public
from control_plane.db.models import utcnow
from control_plane.db.repositories import usage as usage_repo
from control_plane.quota import current_load
from fleetflow.api_models.tenancy import (
    RoleGrantPublic,
    WhoAmI,
)
from fleetflow.api_models.usage import (
    AmountPublic,
    BucketPublic,
    LoadPublic,
    QuotaStatus,
    TopWorkflows,
    UsageHistory,
    WorkflowUsagePublic,
)

router = APIRouter(tags=["account"])


@router.get("/whoami")
def whoami(
    session: SessionDep,
    who: AuthenticatedDep,
    authorizer: AuthorizerDep,
    tenant: Annotated[str | None, Header(alias=TENANT_HEADER)] = None,
) -> WhoAmI:
    """The caller's identity, home tenant, the tenant it acts in, and its roles."""
    caller = caller_in(session, who, authorizer, tenant or who.home_tenant)
    return WhoAmI(
        principal=caller.principal,
        kind=who.principal.kind,
        tenant=who.home_tenant,
        acting_tenant=caller.tenant.name,
        roles=[
            RoleGrantPublic(role=role, tenant=dom)
            for role, dom in authorizer.roles(session, caller.principal_id)
        ],
    )


@router.get("/quota")
def quota_status(session: SessionDep, caller: QuotaRead) -> QuotaStatus:
    """The tenant's limits and what it holds against them now."""
    load = current_load(session, caller.tenant.id)
    return QuotaStatus(
        tenant=caller.tenant.name,
        limits=quota_public(session, caller.tenant),
        usage=LoadPublic.model_validate(load, from_attributes=True),
        waiting_for_quota=usage_repo.waiting_for_quota(session, caller.tenant.id),
    )


def _amount(a: usage_repo.Amount) -> AmountPublic:
    return AmountPublic(
        gpu_seconds=round(a.gpu_seconds, 3),
        cpu_seconds=round(a.cpu_seconds, 3),
        memory_gib_seconds=round(a.memory_gib_seconds, 3),
    )


def _window(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    until = until or utcnow()
    if since is None:
        if until - datetime.min.replace(tzinfo=until.tzinfo) < timedelta(hours=24):
            # 24 hours before it is before year 1 (an OverflowError, once a 500).
            raise ApiError(422, f"until ({until.isoformat()}) is too early")
        since = until - timedelta(hours=24)
    if since.tzinfo is None or until.tzinfo is None:
        raise ApiError(422, "since and until need a time zone, e.g. 2026-11-29T10:00:00Z")
    if since >= until:
        raise ApiError(422, f"since ({since.isoformat()}) must be before until")
    return since, until


@router.get("/usage")
def usage_history(
    session: SessionDep,
    caller: UsageRead,
    since: Annotated[datetime | None, Query(description="default: 24 hours before until")] = None,
    until: Annotated[datetime | None, Query(description="default: now")] = None,
    bucket: usage_repo.Bucket = usage_repo.Bucket.HOUR,
    group_by: usage_repo.GroupBy | None = None,
) -> UsageHistory:
    """GPU-, CPU- and memory-seconds per time bucket, optionally split by cluster, GPU type or
    workflow."""
    start, end = _window(since, until)
    try:
        buckets = usage_repo.history(
            session, caller.tenant.id, since=start, until=end, bucket=bucket, group_by=group_by
        )
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None
    return UsageHistory(
        tenant=caller.tenant.name,
        bucket=bucket.value,
        buckets=[
            BucketPublic(
                start=b.start,
                **_amount(b.total).model_dump(),
                groups={k: _amount(v) for k, v in sorted(b.groups.items())},
            )
            for b in buckets
        ],
    )


@router.get("/usage/top-workflows")
def top_workflows(
    session: SessionDep,
    caller: UsageRead,
    since: Annotated[datetime | None, Query(description="default: 7 days ago")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> TopWorkflows:
    """The tenant's workflows by GPU time (then CPU time), largest first."""
    start, _ = _window(since or utcnow() - timedelta(days=7), None)
    rows = usage_repo.top_workflows(session, caller.tenant.id, since=start, limit=limit)
    return TopWorkflows(
        workflows=[
            WorkflowUsagePublic(
                workflow=r.workflow,
                gpu_seconds=round(r.gpu_seconds, 3),
                cpu_seconds=round(r.cpu_seconds, 3),
                executions=r.executions,
            )
            for r in rows
        ]
    )
