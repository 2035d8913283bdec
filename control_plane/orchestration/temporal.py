"""Temporal wiring: the client, the execution launcher, the signal sink and the worker."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Interceptor, UnsandboxedWorkflowRunner, Worker
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from control_plane.orchestration.activities import ExecutionActivities
from control_plane.orchestration.payloads import DATA_CONVERTER
from control_plane.orchestration.schedule_workflow import ScheduledLaunchWorkflow
from control_plane.orchestration.workflows import (
    AttemptFinished,
    DynamicWorkflow,
    ExecutionInput,
    ExecutionWorkflow,
    MapChunkWorkflow,
)
from control_plane.settings import TemporalSettings

log = logging.getLogger(__name__)


_runtime: Runtime | None = None


def _quiet_runtime() -> Runtime:
    """One SDK runtime per process whose Rust core logs only errors (its warnings about
    server capabilities are noise for our users)."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime(
            telemetry=TelemetryConfig(
                logging=LoggingConfig(
                    filter=TelemetryFilter(core_level="ERROR", other_level="ERROR")
                )
            )
        )
    return _runtime


async def connect_temporal(settings: TemporalSettings, *, wait_seconds: float = 60) -> Client:
    """Connect, retrying while the Temporal server is still starting."""
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(wait_seconds),
        wait=wait_exponential(multiplier=0.2, max=3),
        retry=retry_if_exception_type(RuntimeError),
        reraise=True,
    ):
        with attempt:
            return await Client.connect(
                settings.address,
                namespace=settings.namespace,
                runtime=_quiet_runtime(),
                data_converter=DATA_CONVERTER,
            )
    raise AssertionError("unreachable")


class TemporalLauncher:
    """Starts an execution's workflow; the workflow id is the execution id (idempotent)."""

    def __init__(self, client: Client, task_queue: str, *, local_activities: bool = True) -> None:
        """`local_activities`: whether the workers keep a workflow cache, so that the
        workflows may run their short activities as local ones (`ExecutionInput`)."""
        self._client = client
        self._task_queue = task_queue
        self._local_activities = local_activities

    async def start_execution(self, execution_id: str) -> bool:
        try:
            await self._client.start_workflow(
                ExecutionWorkflow.run,
                ExecutionInput(execution_id, local_activities=self._local_activities),
                id=execution_id,
                task_queue=self._task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            )
        except WorkflowAlreadyStartedError:
            return False
        return True

    async def cancel_execution(self, execution_id: str) -> None:
        try:
            await self._client.get_workflow_handle(execution_id).cancel()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise

    async def signal_attempt_finished(self, workflow_id: str, event: AttemptFinished) -> None:
        """Deliver a finished attempt to the workflow waiting for it (the execution's, or a
        map chunk's). A closed workflow needs no news; any other error propagates, and the
        finish notifier tries again later."""
        await self._signal(workflow_id, ExecutionWorkflow.attempt_finished, event)

    async def signal_finished_quietly(self, workflow_id: str) -> None:
        """Tell an execution's workflow that attempts of its finished without a signal each
        (the finish notifier's look); as `signal_attempt_finished`."""
        await self._signal(workflow_id, ExecutionWorkflow.attempts_finished_quietly)

    async def _signal(self, workflow_id: str, signal: Any, *args: Any) -> None:
        try:
            await self._client.get_workflow_handle(workflow_id).signal(
                signal, args=args, rpc_timeout=timedelta(seconds=5)
            )
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise


def make_worker(
    client: Client,
    task_queue: str,
    activities: ExecutionActivities,
    executor: ThreadPoolExecutor,
    *,
    max_cached_workflows: int = 0,
    interceptors: Sequence[Interceptor] = (),
    schedule_activities: Sequence[Callable[..., Any]] = (),
) -> Worker:
    """The worker of ExecutionWorkflow and its activities; `interceptors` watch it (tests).
    With `schedule_activities` (`ScheduleActivities.all()`) it runs launch plans' scheduled
    launches too."""
    workflows: list[type] = [ExecutionWorkflow, MapChunkWorkflow, DynamicWorkflow]
    every_activity: list[Callable[..., Any]] = list(activities.all())
    if schedule_activities:
        workflows.append(ScheduledLaunchWorkflow)
        every_activity.extend(schedule_activities)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=workflows,
        activities=every_activity,
        activity_executor=executor,
        # Without a cache every workflow task replays the whole history, so a step costs
        # more the longer the chain: with a real Temporal server, set
        # FLEETFLOW_TEMPORAL_MAX_CACHED_WORKFLOWS high (docs/deploy.md). A cached workflow's
        # tasks go to this worker's sticky queue; a real server moves them to the shared
        # queue once the worker is gone, the Temporal test server never does (it ignores the
        # sticky schedule-to-start timeout and implements no ResetStickyTaskQueue).
        # `fleetflow dev up` caches on it all the same (1000): that server dies with the
        # process, and a worker replaced inside the process has its workflows restarted
        # (sticky_recovery.py, FLEETFLOW_TEMPORAL_STICKY_RECOVERY). The default stays 0 for
        # a test server that outlives the worker's process, as in the integration tests.
        max_cached_workflows=max_cached_workflows,
        interceptors=interceptors,
        # Not in Temporal's sandbox: it imports the workflow module again for every workflow
        # run (compiling it where bytecode cannot be written, and making its 22 dataclasses)
        # and reaches `typing` through proxies: 25-30 ms of the control plane's CPU per
        # execution, spent while its first attempt is being placed. These workflows are the
        # platform's own code (a task's never runs in them); the workflow tests run them in the
        # sandbox, whose determinism checks still guard every change
        # (tests/integration/test_execution_workflow.py, its recorded histories included).
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
