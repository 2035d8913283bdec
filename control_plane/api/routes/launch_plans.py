"""Launch plans: create (or replace), list, read, launch by hand, and run their schedules
(activate, deactivate, pause, resume, backfill) as Temporal Schedules.

Rights are those of executions (a plan launches them): reading needs `executions:read`, every
change `executions:write`. Plans are the tenant's own; another tenant's answer as missing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from control_plane.api.auth import ExecutionsRead, ExecutionsWrite
from control_plane.api.deps import BlobStoreDep, LauncherDep, SessionDep, SettingsDep
from control_plane.api.errors import ApiError
from control_plane.api.routes.executions import executions_public
from control_plane.db.models import LaunchPlan, Tenant
from control_plane.schemas.common import ErrorResponse
from control_plane.schemas.executions import ExecutionPublic
from control_plane.services.executions import (
    ExecutionRequestError,
    WorkflowNotRegistered,
    create_execution,
)
from control_plane.services.launch_plans import (
    LaunchPlanActive,
    execution_request,
    get_launch_plan,
    launch_plan_public,
    list_launch_plans,
    save_launch_plan,
)
from control_plane.services.notifications import check_targets
from control_plane.services.schedules import (
    InvalidSchedule,
    SchedulesUnavailable,
    TemporalSchedules,
)
from control_plane.settings import Settings
from fleetflow.api_models.launch_plans import (
    Backfill,
    LaunchPlanCreate,
    LaunchPlanLaunch,
    LaunchPlanPublic,
    ScheduleSpec,
)
from fleetflow.states import ExecutionState
from fleetflow.storage import BlobStore

log = logging.getLogger(__name__)
router = APIRouter(prefix="/launchplans", tags=["launch plans"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse},
    409: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
}
_SCHEDULE_ERRORS: dict[int | str, dict[str, Any]] = {**_ERRORS, 503: {"model": ErrorResponse}}


def _plan(session: Session, tenant: Tenant, name: str) -> LaunchPlan:
    plan = get_launch_plan(session, tenant.id, name)
    if plan is None:
        raise ApiError(404, f"launch plan {name} not found")
    return plan


def _schedules(request: Request) -> TemporalSchedules:
    schedules: TemporalSchedules | None = request.app.state.schedules
    if schedules is None:
        raise ApiError(503, "this control plane runs no schedules (no orchestrator client)")
    return schedules


def _request_error(exc: ExecutionRequestError) -> ApiError:
    return ApiError(404 if isinstance(exc, WorkflowNotRegistered) else 422, str(exc), exc.errors)


def _save(
    session: Session, tenant: Tenant, body: LaunchPlanCreate, settings: Settings
) -> LaunchPlanPublic:
    try:
        check_targets(body.notifications, settings.notify)
        return launch_plan_public(save_launch_plan(session, tenant, body))
    except ExecutionRequestError as exc:
        session.rollback()
        raise _request_error(exc) from None
    except LaunchPlanActive as exc:
        session.rollback()
        raise ApiError(409, str(exc)) from None


@router.post("", status_code=201, responses=_ERRORS)
def create_launch_plan(
    body: LaunchPlanCreate, session: SessionDep, caller: ExecutionsWrite, settings: SettingsDep
) -> LaunchPlanPublic:
    """Create a launch plan against a registered workflow version, or replace the inactive
    plan of its name; its notification rules go with every execution it launches."""
    return _save(session, caller.tenant, body, settings)


@router.get("")
def list_launch_plans_route(session: SessionDep, caller: ExecutionsRead) -> list[LaunchPlanPublic]:
    return [launch_plan_public(plan) for plan in list_launch_plans(session, caller.tenant.id)]


@router.get("/{launch_plan}", responses=_ERRORS)
def get_launch_plan_route(
    launch_plan: str, session: SessionDep, caller: ExecutionsRead
) -> LaunchPlanPublic:
    return launch_plan_public(_plan(session, caller.tenant, launch_plan))


def _launch(
    session: Session,
    tenant: Tenant,
    name: str,
    body: LaunchPlanLaunch,
    blob_store: BlobStore,
    settings: Settings,
) -> ExecutionPublic:
    plan = _plan(session, tenant, name)
    try:
        creation = create_execution(
            session,
            tenant,
            execution_request(plan, body.inputs),
            blob_store,
            idempotency_key=None,
            idempotency_key_ttl=timedelta(seconds=settings.api.idempotency_key_ttl_seconds),
        )
    except ExecutionRequestError as exc:
        raise _request_error(exc) from None
    return executions_public(session, [creation.execution], blob_store)[0]


@router.post("/{launch_plan}/launch", status_code=201, responses=_SCHEDULE_ERRORS)
async def launch_launch_plan(
    launch_plan: str,
    body: LaunchPlanLaunch,
    session: SessionDep,
    caller: ExecutionsWrite,
    launcher: LauncherDep,
    blob_store: BlobStoreDep,
    settings: SettingsDep,
) -> ExecutionPublic:
    """Launch the plan now: its defaults, overridden by `inputs`, and its fixed inputs."""
    execution = await run_in_threadpool(
        _launch, session, caller.tenant, launch_plan, body, blob_store, settings
    )
    if execution.status is ExecutionState.QUEUED:
        try:
            await launcher.start_execution(execution.id)
        except Exception:
            log.exception("could not start execution %s", execution.id)
            raise ApiError(
                503,
                f"execution {execution.id} was created but could not be started: "
                "the orchestrator is unavailable",
            ) from None
    return execution


async def _change(
    request: Request,
    session: Session,
    tenant: Tenant,
    name: str,
    change: Callable[[TemporalSchedules, LaunchPlan], Awaitable[None]],
    **columns: bool,
) -> LaunchPlanPublic:
    plan = await run_in_threadpool(_plan, session, tenant, name)
    schedules = _schedules(request)
    try:
        await change(schedules, plan)
    except SchedulesUnavailable as exc:
        raise ApiError(503, f"launch plan {name}: {exc}") from None
    except InvalidSchedule as exc:
        raise ApiError(422, f"launch plan {name}: {exc}") from None
    for column, value in columns.items():
        setattr(plan, column, value)
    await run_in_threadpool(session.commit)
    return launch_plan_public(plan)


def _scheduled(plan: LaunchPlan) -> ScheduleSpec:
    if plan.schedule is None:
        raise ApiError(
            422,
            f"launch plan {plan.name} has no schedule: launch it by hand "
            f"(fleetflow launchplans launch {plan.name}), or create it with one",
        )
    return ScheduleSpec.model_validate(plan.schedule)


def _active(plan: LaunchPlan) -> None:
    if not plan.active:
        raise ApiError(
            409,
            f"launch plan {plan.name} is not active: activate it first (fleetflow "
            f"launchplans activate {plan.name})",
        )


@router.post("/{launch_plan}/activate", responses=_SCHEDULE_ERRORS)
async def activate_launch_plan(
    launch_plan: str, request: Request, session: SessionDep, caller: ExecutionsWrite
) -> LaunchPlanPublic:
    """Start the plan's schedule (a durable Temporal Schedule); idempotent."""

    async def activate(schedules: TemporalSchedules, plan: LaunchPlan) -> None:
        await schedules.activate(plan, _scheduled(plan))

    return await _change(
        request, session, caller.tenant, launch_plan, activate, active=True, paused=False
    )


@router.post("/{launch_plan}/deactivate", responses=_SCHEDULE_ERRORS)
async def deactivate_launch_plan(
    launch_plan: str, request: Request, session: SessionDep, caller: ExecutionsWrite
) -> LaunchPlanPublic:
    """Delete the plan's schedule (executions it launched run on); idempotent."""

    async def deactivate(schedules: TemporalSchedules, plan: LaunchPlan) -> None:
        await schedules.deactivate(plan)

    return await _change(
        request, session, caller.tenant, launch_plan, deactivate, active=False, paused=False
    )


@router.post("/{launch_plan}/pause", responses=_SCHEDULE_ERRORS)
async def pause_launch_plan(
    launch_plan: str, request: Request, session: SessionDep, caller: ExecutionsWrite
) -> LaunchPlanPublic:
    """Stop launching until resumed (times passed meanwhile are not caught up)."""

    async def pause(schedules: TemporalSchedules, plan: LaunchPlan) -> None:
        _active(plan)
        await schedules.pause(plan)

    return await _change(request, session, caller.tenant, launch_plan, pause, paused=True)


@router.post("/{launch_plan}/resume", responses=_SCHEDULE_ERRORS)
async def resume_launch_plan(
    launch_plan: str, request: Request, session: SessionDep, caller: ExecutionsWrite
) -> LaunchPlanPublic:
    async def resume(schedules: TemporalSchedules, plan: LaunchPlan) -> None:
        _active(plan)
        await schedules.resume(plan)

    return await _change(request, session, caller.tenant, launch_plan, resume, paused=False)


@router.post("/{launch_plan}/backfill", responses=_SCHEDULE_ERRORS)
async def backfill_launch_plan(
    launch_plan: str,
    body: Backfill,
    request: Request,
    session: SessionDep,
    caller: ExecutionsWrite,
) -> LaunchPlanPublic:
    """Launch, now, every time the schedule names in [start, end); each time launches once
    however often it is backfilled (the idempotency key is the scheduled time)."""

    async def backfill(schedules: TemporalSchedules, plan: LaunchPlan) -> None:
        _active(plan)
        await schedules.backfill(plan, body.start, body.end, body.overlap)

    return await _change(request, session, caller.tenant, launch_plan, backfill)
