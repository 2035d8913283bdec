"""Cohorts: tenants lending each other idle GPU quota (`control_plane/placement/cohorts.py`).

Platform admins create and delete cohorts and set a tenant's membership: its nominal quota and
borrowing limit per GPU type, and whether its higher-priority work may preempt its own
lower-priority work. Changes apply at the next placement pass. A tenant reads only its own
place in its cohort (`GET /cohort`: its shares, its use against them, the cohort's totals and
how many of its attempts were preempted), never the other members.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy.orm import Session

from control_plane.api.auth import PlatformRead, PlatformWrite, UsageRead
from control_plane.api.deps import SessionDep
from control_plane.api.errors import ApiError
from control_plane.db.models import Cohort, Tenant
from control_plane.db.repositories import audit
from control_plane.db.repositories import cohorts as cohorts_repo
from control_plane.db.repositories.tenants import get_tenant_by_name
from control_plane.quota import current_load
from control_plane.schemas.cohorts import CohortCreate, CohortUpdate, MemberSet
from control_plane.schemas.common import ErrorResponse
from fleetflow.api_models.cohorts import (
    CohortDeleted,
    CohortList,
    CohortMemberPublic,
    CohortMemberRemoved,
    CohortPublic,
    CohortUsage,
    GpuTypeUse,
    SharePublic,
)

router = APIRouter(prefix="/admin/cohorts", tags=["admin"])
usage_router = APIRouter(tags=["account"])

_404: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse}}


def _cohort(session: Session, name: str) -> Cohort:
    cohort = cohorts_repo.get_cohort(session, name)
    if cohort is None:
        raise ApiError(404, f"cohort {name!r} not found")
    return cohort


def _shares(stored: dict[str, Any]) -> dict[str, SharePublic]:
    return {
        gpu_type: SharePublic(
            nominal=int(value.get("nominal") or 0), borrowing_limit=value.get("borrowing_limit")
        )
        for gpu_type, value in sorted(stored.items())
    }


def _public(session: Session, cohort: Cohort) -> CohortPublic:
    return CohortPublic(
        name=cohort.name,
        created_at=cohort.created_at,
        preemption_grace_seconds=cohort.preemption_grace_seconds,
        members=[
            CohortMemberPublic(
                tenant=m.tenant,
                shares=_shares(m.shares),
                preempt_within_tenant=m.preempt_within_tenant,
            )
            for m in cohorts_repo.members(session, [cohort.id])
        ],
    )


@router.post("", status_code=201, responses={409: {"model": ErrorResponse}})
def create_cohort(body: CohortCreate, session: SessionDep, caller: PlatformWrite) -> CohortPublic:
    if cohorts_repo.get_cohort(session, body.name) is not None:
        raise ApiError(409, f"cohort {body.name!r} exists already")
    cohort = cohorts_repo.create_cohort(
        session, body.name, preemption_grace_seconds=body.preemption_grace_seconds
    )
    audit.record(
        session,
        caller.principal,
        "cohort.create",
        body.name,
        {"preemption_grace_seconds": body.preemption_grace_seconds},
    )
    session.commit()
    return _public(session, cohort)


@router.get("")
def list_cohorts(session: SessionDep, _caller: PlatformRead) -> CohortList:
    return CohortList(cohorts=[_public(session, c) for c in cohorts_repo.list_cohorts(session)])


@router.get("/{cohort}", responses=_404)
def get_cohort(cohort: str, session: SessionDep, _caller: PlatformRead) -> CohortPublic:
    return _public(session, _cohort(session, cohort))


@router.patch("/{cohort}", responses=_404)
def update_cohort(
    cohort: str, body: CohortUpdate, session: SessionDep, caller: PlatformWrite
) -> CohortPublic:
    """Change the cohort's settings: its preemption grace applies to attempts preempted from
    then on (and to those still being stopped, at their agent's next heartbeat)."""
    row = _cohort(session, cohort)
    changes = body.model_dump(exclude_none=True)
    if body.preemption_grace_seconds is not None:
        row.preemption_grace_seconds = body.preemption_grace_seconds
    audit.record(session, caller.principal, "cohort.update", cohort, changes)
    session.commit()
    return _public(session, row)


@router.delete("/{cohort}", responses=_404)
def delete_cohort(cohort: str, session: SessionDep, caller: PlatformWrite) -> CohortDeleted:
    """Delete the cohort and its memberships. Running work goes on; nothing is borrowed or
    preempted through it any more."""
    row = _cohort(session, cohort)
    cohorts_repo.delete_cohort(session, row)
    audit.record(session, caller.principal, "cohort.delete", cohort)
    session.commit()
    return CohortDeleted(name=cohort)


@router.put("/{cohort}/members/{tenant}", responses=_404)
def set_member(
    cohort: str, tenant: str, body: MemberSet, session: SessionDep, caller: PlatformWrite
) -> CohortMemberPublic:
    """Make `tenant` a member of `cohort` with these shares and policy (replacing its
    membership, in this cohort or another)."""
    row = _cohort(session, cohort)
    member = get_tenant_by_name(session, tenant)
    if member is None:
        raise ApiError(422, f"tenant {tenant!r} does not exist: create it first")
    shares = {t: s.model_dump() for t, s in body.shares.items()}
    cohorts_repo.set_membership(session, row, member, shares, body.preempt_within_tenant)
    audit.record(
        session,
        caller.principal,
        "cohort.member.set",
        tenant,
        {"cohort": cohort, **body.model_dump()},
    )
    session.commit()
    return CohortMemberPublic(
        tenant=tenant, shares=_shares(shares), preempt_within_tenant=body.preempt_within_tenant
    )


@router.delete("/{cohort}/members/{tenant}", responses=_404)
def remove_member(
    cohort: str, tenant: str, session: SessionDep, caller: PlatformWrite
) -> CohortMemberRemoved:
    row = _cohort(session, cohort)
    member = get_tenant_by_name(session, tenant)
    membership = None if member is None else cohorts_repo.membership(session, member)
    if member is None or membership is None or membership.cohort_id != row.id:
        raise ApiError(404, f"tenant {tenant!r} is not a member of cohort {cohort!r}")
    cohorts_repo.remove_membership(session, member)
    audit.record(session, caller.principal, "cohort.member.remove", tenant, {"cohort": cohort})
    session.commit()
    return CohortMemberRemoved(cohort=cohort, tenant=tenant)


@usage_router.get("/cohort")
def cohort_usage(session: SessionDep, caller: UsageRead) -> CohortUsage:
    """The acting tenant's place in its cohort: per GPU type its nominal quota and borrowing
    limit, what it holds and how much of that is borrowed, the cohort's totals; and how many
    of its attempts were preempted. Other members are not named."""
    return cohort_usage_of(session, caller.tenant)


def cohort_usage_of(session: Session, tenant: Tenant) -> CohortUsage:
    """`GET /cohort` for `tenant` (also the dashboard's cohort line)."""
    preempted = cohorts_repo.preemptions_by_tenant(session, [tenant.id]).get(tenant.id, 0)
    membership = cohorts_repo.membership(session, tenant)
    if membership is None:
        return CohortUsage(tenant=tenant.name, cohort=None, preempted=preempted)
    cohort = session.get_one(Cohort, membership.cohort_id)
    members = cohorts_repo.members(session, [cohort.id])
    loads = {m.tenant_id: current_load(session, m.tenant_id) for m in members}
    types = sorted({t for m in members for t in m.shares})
    gpu_types = {}
    for gpu_type in types:
        share = _shares(membership.shares).get(
            gpu_type, SharePublic(nominal=0, borrowing_limit=None)
        )
        in_use = loads[tenant.id].gpu_per_type.get(gpu_type, 0)
        gpu_types[gpu_type] = GpuTypeUse(
            nominal=share.nominal,
            borrowing_limit=share.borrowing_limit,
            in_use=in_use,
            borrowed=max(0, in_use - share.nominal),
            cohort_nominal=sum(
                int((m.shares.get(gpu_type) or {}).get("nominal") or 0) for m in members
            ),
            cohort_in_use=sum(load.gpu_per_type.get(gpu_type, 0) for load in loads.values()),
        )
    return CohortUsage(
        tenant=tenant.name,
        cohort=cohort.name,
        gpu_types=gpu_types,
        preempt_within_tenant=membership.preempt_within_tenant,
        preemption_grace_seconds=cohort.preemption_grace_seconds,
        preempted=preempted,
    )


def cohort_line(usage: CohortUsage) -> str:
    """The dashboard's words for a tenant's place in its cohort (plain text)."""
    if usage.cohort is None:
        return f"in no cohort; {usage.preempted} attempt(s) preempted"
    types = "; ".join(
        f"{gpu_type}: {u.in_use} in use ({u.borrowed} borrowed) of nominal {u.nominal}, "
        f"cohort {u.cohort_in_use}/{u.cohort_nominal}"
        for gpu_type, u in usage.gpu_types.items()
    )
    return (
        f"cohort {usage.cohort}: {types or 'no GPU types'}; {usage.preempted} attempt(s) preempted"
    )
