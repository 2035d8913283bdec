"""The worker's workflow cache on the Temporal test server, as `fleetflow dev up` runs it.

With dev up's settings the worker keeps each workflow in memory, so a workflow task runs only
the new events instead of replaying the history: a step costs the same however long the chain.
The test server never hands a gone worker's cached workflows to the next one, so a worker that
the supervisor replaces has its executions' workflows restarted from the database
(services/sticky_recovery.py); without that, the execution below waits forever.

Real activities on a real database; the test plays the agent: it writes each attempt's outputs
and state, then signals the workflow as the finish notifier does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

import pytest
import pytest_asyncio
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from temporalio import workflow as temporal_workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import (
    HandleSignalInput,
    Interceptor,
    Worker,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from control_plane import processes
from control_plane.db.models import Execution, TaskAttempt
from control_plane.db.repositories.executions import create_execution
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.repositories.workflows import register_workflow_version
from control_plane.db.session import transaction
from control_plane.dev import stack_settings
from control_plane.orchestration.activities import ExecutionActivities
from control_plane.orchestration.payloads import DATA_CONVERTER
from control_plane.orchestration.supervisor import WorkerSupervisor
from control_plane.orchestration.temporal import TemporalLauncher, make_worker
from control_plane.orchestration.workflows import AttemptFinished
from control_plane.services.sticky_recovery import restart_running_workflows
from fleetflow import task, workflow
from fleetflow.states import AttemptState, ExecutionState
from fleetflow.storage import LocalBlobStore
from tests.integration.stack import TemporalServer
from tests.polling import wait_until_async

pytestmark = pytest.mark.integration

CHAIN_LENGTH = 4
WAIT = 60
PORTS = {"api": 8080, "grpc": 9090, "temporal": 7233}  # only named in the settings


@task
def step(x: int) -> int:
    return x + 1


@workflow
def chain(x: int = 0) -> int:
    for _ in range(CHAIN_LENGTH):
        x = step(x=x)
    return x


@dataclass
class Orchestration:
    """What the control plane's worker side holds: a client, a launcher on a task queue of
    this test's own, the activities on the test's database."""

    client: Client
    launcher: TemporalLauncher
    activities: ExecutionActivities
    executor: ThreadPoolExecutor
    sessions: sessionmaker[Session]
    queue: str

    def execution(self) -> str:
        """A QUEUED execution of `chain`, as the API creates it."""
        with transaction(self.sessions) as session:
            tenant = get_or_create_tenant(session, "default")
            version = register_workflow_version(session, tenant.id, chain.spec, "c" * 64, None)
            return create_execution(session, tenant.id, version, {"x": 0}).id

    def make_worker(
        self, max_cached_workflows: int, interceptors: Sequence[Interceptor] = ()
    ) -> Worker:
        return make_worker(
            self.client,
            self.queue,
            self.activities,
            self.executor,
            max_cached_workflows=max_cached_workflows,
            interceptors=interceptors,
        )

    def attempts(self, execution_id: str) -> list[TaskAttempt]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(TaskAttempt)
                    .where(TaskAttempt.execution_id == execution_id)
                    .order_by(TaskAttempt.created_at)
                )
            )

    def status(self, execution_id: str) -> str:
        with self.sessions() as session:
            return session.get_one(Execution, execution_id).status

    async def finish_next_step(self, execution_id: str, done: int) -> None:
        """Wait for the step after the `done` first ones to be created; then, as its agent and
        the finish notifier would, record it SUCCEEDED and signal the workflow."""
        attempts = await wait_until_async(
            lambda: (found := self.attempts(execution_id)) and len(found) > done and found,
            timeout=WAIT,
            message=f"step {done + 1}'s attempt",
        )
        attempt = attempts[done]
        path = Path(urlparse(attempt.outputs_uri).path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"o0": done + 1}))
        with transaction(self.sessions) as session:
            session.execute(
                update(TaskAttempt)
                .where(TaskAttempt.id == attempt.id)
                .values(status=AttemptState.SUCCEEDED.value)
            )
        await self.launcher.signal_attempt_finished(
            execution_id, AttemptFinished(attempt.id, AttemptState.SUCCEEDED.value)
        )

    async def wait_succeeded(self, execution_id: str) -> None:
        unfinished = (ExecutionState.QUEUED, ExecutionState.RUNNING)
        status = await wait_until_async(
            lambda: (status := self.status(execution_id)) not in unfinished and status,
            timeout=WAIT,
            message="the execution to finish",
        )
        assert status == ExecutionState.SUCCEEDED
        assert [a.status for a in self.attempts(execution_id)] == ["SUCCEEDED"] * CHAIN_LENGTH


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="activity")
    yield pool
    pool.shutdown(wait=True)


@pytest_asyncio.fixture
async def orchestration(
    temporal_server: TemporalServer,
    session_factory: sessionmaker[Session],
    executor: ThreadPoolExecutor,
    tmp_path: Path,
) -> AsyncIterator[Orchestration]:
    client = await Client.connect(temporal_server.address, data_converter=DATA_CONVERTER)
    queue = f"fleetflow-{uuid.uuid4().hex[:12]}"
    yield Orchestration(
        client,
        TemporalLauncher(client, queue),
        ExecutionActivities(session_factory, LocalBlobStore(tmp_path / "blobs")),
        executor,
        session_factory,
        queue,
    )


def dev_up_cache(tmp_path: Path) -> int:
    """The workflow cache `fleetflow dev up` gives its worker on the test server."""
    settings = stack_settings(tmp_path, PORTS, processes.TEMPORAL_TEST_SERVER)
    return settings.temporal.max_cached_workflows


def test_dev_up_caches_workflows_on_either_server(tmp_path: Path) -> None:
    on_test_server = stack_settings(tmp_path, PORTS, processes.TEMPORAL_TEST_SERVER).temporal
    on_dev_server = stack_settings(tmp_path, PORTS, processes.TEMPORAL_DEV_SERVER).temporal
    assert on_test_server.max_cached_workflows > 0 and on_test_server.sticky_recovery
    # A real server moves a gone worker's workflows off its sticky queue by itself.
    assert on_dev_server.max_cached_workflows > 0 and not on_dev_server.sticky_recovery


async def test_a_replaced_cached_worker_does_not_strand_its_executions(
    orchestration: Orchestration, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker goes away while the execution waits for step 2; the supervisor makes
    another, and the recovery restarts the workflow, which picks up the attempts on record.
    With `on_replaced=None` this fails: step 2's signal leaves a task on the old worker's
    sticky queue that nobody takes, and step 3 never starts."""
    o = orchestration
    made: list[Worker] = []

    def make() -> Worker:
        made.append(o.make_worker(dev_up_cache(tmp_path)))
        return made[-1]

    supervisor = WorkerSupervisor(
        make,
        on_replaced=partial(restart_running_workflows, o.client, o.sessions, o.launcher),
        initial_backoff=0.01,
    )
    running = asyncio.create_task(supervisor.run())
    try:
        execution_id = o.execution()
        await o.launcher.start_execution(execution_id)
        handle = o.client.get_workflow_handle(execution_id)
        await o.finish_next_step(execution_id, done=0)
        # Step 2 is waiting for its signal, and no workflow task is in flight: the workflow
        # sits in the first worker's cache, its next task bound for that worker's sticky queue.
        await wait_until_async(
            lambda: len(o.attempts(execution_id)) == 2,
            timeout=WAIT,
            message="step 2's attempt",
        )
        await wait_until_async(
            lambda: no_workflow_task_pending(o.client, execution_id),
            timeout=WAIT,
            message="the workflow task that started step 2 to complete",
        )
        first_run = (await handle.describe()).run_id

        with caplog.at_level(logging.WARNING, logger="control_plane"):
            await made[0].shutdown()  # gone, as a failed worker is: the supervisor replaces it
            for done in range(1, CHAIN_LENGTH):
                await o.finish_next_step(execution_id, done)
        await o.wait_succeeded(execution_id)
    finally:
        await supervisor.shutdown()
        await running
    described = await handle.describe()
    assert described.status == WorkflowExecutionStatus.COMPLETED
    assert described.run_id != first_run, "the workflow finished without a restart"
    assert len(made) == 2 and supervisor.restarts == 1
    said = [r.getMessage() for r in caplog.records]
    assert any("restarting the workflows of 1 running executions" in m for m in said), said
    assert any(
        f"execution {execution_id} was RUNNING without a workflow (the worker that held it "
        "was replaced)" in m
        for m in said
    ), said


async def no_workflow_task_pending(client: Client, workflow_id: str) -> bool:
    events = (await client.get_workflow_handle(workflow_id).fetch_history()).events
    scheduled = sum(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED for e in events)
    completed = sum(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED for e in events)
    return scheduled == completed


# Signal handlers the workflow ran: (workflow id, the signal's attempt, replaying?).
handled_signals: list[tuple[str, str, bool]] = []


class SignalReplays(Interceptor):
    """Records, for every signal the workflow handles, whether it was replaying history."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _RecordSignals


class _RecordSignals(WorkflowInboundInterceptor):
    async def handle_signal(self, input: HandleSignalInput) -> None:
        handled_signals.append(
            (
                temporal_workflow.info().workflow_id,
                getattr(input.args[0], "attempt_id", "") if input.args else "",
                temporal_workflow.unsafe.is_replaying(),
            )
        )
        await super().handle_signal(input)


@pytest.mark.parametrize("cache", ["dev-up", "none"])
async def test_with_dev_up_settings_a_chain_never_replays_its_history(
    orchestration: Orchestration, tmp_path: Path, cache: str
) -> None:
    """The mechanism behind a flat per-step cost: each step's signal is handled once, live;
    without a cache, every later workflow task handles it again while replaying."""
    o = orchestration
    cached = dev_up_cache(tmp_path) if cache == "dev-up" else 0
    execution_id = o.execution()
    async with o.make_worker(cached, [SignalReplays()]):
        await o.launcher.start_execution(execution_id)
        for done in range(CHAIN_LENGTH):
            await o.finish_next_step(execution_id, done)
        await o.wait_succeeded(execution_id)
    mine = [
        (attempt, replaying) for wf, attempt, replaying in handled_signals if wf == execution_id
    ]
    live = [attempt for attempt, replaying in mine if not replaying]
    # Each step's signal, handled as it came (a workflow task the server refused, or one that
    # timed out on a loaded machine, handles the signals it held live once more when retried).
    assert set(live) == {a.id for a in o.attempts(execution_id)}
    if cache == "dev-up":
        assert len(mine) == len(live), "the worker replayed the history with dev up's cache"
    else:
        assert len(mine) > len(live), "no replay without a cache: the check sees nothing"


async def test_without_a_cache_concurrent_executions_never_wait_on_a_workflow_task_timeout(
    orchestration: Orchestration,
) -> None:
    """A worker that keeps no workflow cache leaves every other workflow's task waiting while
    one holds a local activity, until the workflow task timeout (10 s each). The control plane
    then starts executions with ordinary activities (`local_activities=False`, as the server
    does for FLEETFLOW_TEMPORAL_MAX_CACHED_WORKFLOWS=0), and no workflow task times out."""
    o = orchestration
    launcher = TemporalLauncher(o.client, o.queue, local_activities=False)
    executions = [o.execution() for _ in range(3)]
    async with o.make_worker(0):
        for execution_id in executions:
            await launcher.start_execution(execution_id)
        for done in range(CHAIN_LENGTH):
            for execution_id in executions:
                await o.finish_next_step(execution_id, done)
        for execution_id in executions:
            await o.wait_succeeded(execution_id)
    for execution_id in executions:
        events = (await o.client.get_workflow_handle(execution_id).fetch_history()).events
        kinds = {e.event_type for e in events}
        assert EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT not in kinds, execution_id
        assert EventType.EVENT_TYPE_MARKER_RECORDED not in {
            e.event_type
            for e in events
            if e.marker_recorded_event_attributes.marker_name != "core_patch"
        }, "a local activity ran"
        assert EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED in kinds
