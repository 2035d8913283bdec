"""The workflow a launch plan's Temporal Schedule starts at each scheduled time.

It launches the plan's execution through the control plane's launch path (the
`launch_scheduled` activity: validation, quota, idempotency keyed by the scheduled time), then
waits for that execution to finish, so that the schedule's overlap policy (skip, buffer,
cancel-other) applies to executions, not to this short launcher. Cancelled by the schedule
(cancel-other), it cancels its execution.

Kept apart from `workflows.py`: a new workflow type, whose commands never enter an execution's
recorded history.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import is_cancelled_exception

SCHEDULED_LAUNCH_WORKFLOW_NAME = "fleetflow.scheduled_launch"
SCHEDULED_START_TIME = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")


@dataclass(frozen=True)
class ScheduledLaunchInput:
    launch_plan_id: str


@dataclass(frozen=True)
class ScheduledFire:
    launch_plan_id: str
    scheduled_at: str  # ISO 8601, UTC


@workflow.defn(name=SCHEDULED_LAUNCH_WORKFLOW_NAME)
class ScheduledLaunchWorkflow:
    @workflow.run
    async def run(self, args: ScheduledLaunchInput) -> str:
        """The id of the execution launched ("" when the plan is gone or inactive)."""
        scheduled = workflow.info().typed_search_attributes.get(SCHEDULED_START_TIME)
        if scheduled is None:  # started by hand, not by the schedule
            scheduled = workflow.now()
        execution_id: str = await workflow.execute_activity(
            "launch_scheduled",
            ScheduledFire(args.launch_plan_id, scheduled.isoformat()),
            result_type=str,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
        )
        if not execution_id:
            return ""
        try:
            await workflow.execute_activity(
                "await_execution",
                execution_id,
                result_type=str,
                start_to_close_timeout=timedelta(days=365),
                heartbeat_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=5)),
            )
        except BaseException as err:
            # Cancelled by the schedule (cancel-other): the activity's await raises an
            # ActivityError caused by a cancellation, not asyncio's CancelledError.
            if not is_cancelled_exception(err):
                raise
            await asyncio.shield(
                asyncio.ensure_future(
                    workflow.execute_activity(
                        "cancel_scheduled_execution",
                        execution_id,
                        start_to_close_timeout=timedelta(seconds=60),
                    )
                )
            )
            raise
        return execution_id
