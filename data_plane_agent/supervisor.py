"""The agent's attempts on its executor: launch, watch, stop, adopt, and their logs.

The supervisor holds the attempts leased to this agent and not yet ended (*active*), each with
its assignment: it launches them (storing the lease's secret first), adopts those a previous
agent process left running (Kubernetes), kills those the control plane no longer wants, turns
the executor's state changes into reports (a shutdown's kills become LOST, so the attempts run
again elsewhere without using their retries), and copies their output to the blob store while
they run and when they end. It answers the session's questions about them (`SessionAttempts`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Coroutine, Iterable
from typing import Any

from pydantic import SecretStr

from data_plane_agent.attempts import AttemptEvent, TaskAssignment
from data_plane_agent.executors.base import Capacity, Executor
from data_plane_agent.log_fields import AttemptLogFields
from data_plane_agent.pacing import sleep_unless_set
from data_plane_agent.protocol import StopOrder
from data_plane_agent.reporter import Reporter
from data_plane_agent.settings import AgentSettings
from fleetflow.secrets import redact as redact_secrets
from fleetflow.states import AttemptState
from fleetflow.storage import attempt_log_uri, write_uri

# The agent loop's parts log under the one name operators know them by.
logger = logging.getLogger("data_plane_agent.agent")


class Supervisor:
    """The active attempts of one agent, on its executor.

    Args:
        settings: The most attempts at once, kill grace, log upload interval.
        executor: Runs the attempts.
        reporter: Told of each lease and each state change.
        stopping: Set when the agent stops; a kill then is a shutdown's, not a request's.
        log_fields: Told each attempt's execution and node.
    """

    def __init__(
        self,
        settings: AgentSettings,
        executor: Executor,
        reporter: Reporter,
        stopping: asyncio.Event,
        log_fields: AttemptLogFields,
    ) -> None:
        # Attempts leased and not yet ended.
        self._active: dict[str, TaskAssignment] = {}
        self._settings = settings
        self._executor = executor
        self._reporter = reporter
        self._stopping = stopping
        self._log_fields = log_fields
        self._stop_requested: set[str] = set()
        self._slot_freed = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._background: set[asyncio.Task[Any]] = set()
        self._launches: set[asyncio.Task[None]] = set()

    # -------------------------------------------------------------- what the session asks

    @property
    def executor_name(self) -> str:
        return self._executor.name

    def held_attempts(self) -> dict[str, int]:
        held = self._reporter.final_report_tokens()
        held.update({a.attempt_id: a.fencing_token for a in self._active.values()})
        return held

    def heartbeat_attempt_ids(self) -> set[str]:
        # Like registering: every attempt leased here and not ended yet (still launching, or
        # ended with its event not reported yet: the executor forgets it first) and a finished
        # one whose final report is still on its way; else a heartbeat overtaking its report
        # would have it marked lost.
        return (
            set(self._active)
            | set(self._executor.running())
            | set(self._reporter.final_report_tokens())
        )

    def capacity(self) -> Capacity:
        return self._executor.capacity(list(self._active.values()))

    def pending_reasons(self) -> dict[str, str]:
        return self._executor.pending_reasons()

    def free_slots(self) -> int:
        return self._settings.max_parallel - len(self._active)

    async def wait_for_free_slot(self) -> None:
        self._slot_freed.clear()
        await self._slot_freed.wait()

    # ---------------------------------------------------------------------------- attempts

    def adopt(self, assignments: list[TaskAssignment]) -> None:
        """Hold attempts a previous agent process launched and the executor still runs."""
        self._reporter.adopt(assignments)
        for assignment in assignments:
            self._active[assignment.attempt_id] = assignment
            self._log_fields.remember(assignment)
            with self._log_fields.of(assignment.attempt_id):
                logger.info("attempt %s: adopted from a previous agent", assignment.attempt_id)
        if self._active:
            self._idle.clear()

    def launch(self, assignment: TaskAssignment, report_secret: SecretStr) -> None:
        """Take a leased attempt and start launching it."""
        with self._log_fields.of_assignment(assignment):
            # The launch task copies this context: its logs, and the executor's, carry the ids.
            self._start_launch(assignment, report_secret)

    def _start_launch(self, assignment: TaskAssignment, report_secret: SecretStr) -> None:
        attempt_id = assignment.attempt_id
        if attempt_id in self._active:
            logger.warning("attempt %s: leased again while running here; ignoring", attempt_id)
            return
        logger.info(
            "attempt %s: leased (execution %s, node %s, task %s.%s, fencing token %d)",
            attempt_id,
            assignment.execution_id,
            assignment.node_id,
            assignment.task_module,
            assignment.task_function,
            assignment.fencing_token,
        )
        self._active[attempt_id] = assignment
        self._reporter.open_lease(assignment, report_secret)
        self._log_fields.remember(assignment)
        self._log_fields.forget_oldest_beyond(
            self._settings.max_buffered_reports + self._settings.max_parallel
        )
        self._idle.clear()
        # A task of its own, so that ending the session never cancels a half-started launch.
        task = asyncio.create_task(
            self._launch(assignment, report_secret), name=f"launch-{attempt_id}"
        )
        self._launches.add(task)
        task.add_done_callback(self._launches.discard)

    async def _launch(self, assignment: TaskAssignment, report_secret: SecretStr) -> None:
        survives = self._executor.attempts_survive_agent
        if survives:  # on disk before anything outlives us
            await self._reporter.store_lease(assignment, report_secret)
        try:
            await self._executor.launch(assignment)
        except Exception as exc:  # the executor should report this itself; never leak a slot
            logger.exception("attempt %s: the executor failed to launch it", assignment.attempt_id)
            failed: AttemptEvent | None = AttemptEvent(
                assignment.attempt_id,
                AttemptState.FAILED,
                f"agent could not launch the attempt: {exc}",
            )
        else:
            failed = None
        if not survives:
            # Its process dies with this agent: the file matters only to the attempt's final
            # report, which waits for it (`Reporter.report`). Written once the process started
            # (before this task yields, so before any event of the launch is reported): its
            # fsyncs then no longer slow the attempt's staging down.
            self._reporter.store_lease_meanwhile(assignment, report_secret)
        if failed is not None:
            await self._record_event(failed)

    def stop_attempts(self, orders: Iterable[StopOrder]) -> None:
        """Kill attempts the control plane no longer wants (cancelled, preempted, superseded,
        lost), each after its grace (SIGTERM, then the kill)."""
        running = set(self._executor.running())
        for order in orders:
            attempt_id = order.attempt_id
            if attempt_id in running and attempt_id not in self._stop_requested:
                self._stop_requested.add(attempt_id)
                why = f" ({order.reason})" if order.reason else ""
                grace = (
                    self._settings.kill_grace_seconds
                    if order.grace_seconds is None
                    else order.grace_seconds
                )
                with self._log_fields.of(attempt_id):
                    logger.info(
                        "attempt %s: the control plane asked to stop it%s (grace %gs)",
                        attempt_id,
                        why,
                        grace,
                    )
                    self._spawn(
                        self._executor.kill(
                            attempt_id,
                            f"stopped by the control plane{why}",
                            grace_seconds=order.grace_seconds,
                        )
                    )

    async def pump_events(self) -> None:
        """Report the executor's state changes, for ever."""
        while True:
            event = await self._executor.next_event()
            with self._log_fields.of(event.attempt_id):
                await self._record_event(event)

    async def _record_event(self, event: AttemptEvent) -> None:
        """Queue the report of one state change; a terminal one frees the attempt's slot.

        The attempt stays active until its report is on disk, so that registering meanwhile
        still lists it as held.
        """
        assignment = self._active.get(event.attempt_id)
        if assignment is None:
            logger.warning(
                "attempt %s: %s from the executor for an attempt not leased here",
                event.attempt_id,
                event.state.value,
            )
            return
        if (
            event.state is AttemptState.CANCELLED
            and self._stopping.is_set()
            and event.attempt_id not in self._stop_requested
        ):
            # Stopped because this agent shuts down, not by anyone's wish: not the task's
            # failure, so it runs again elsewhere without using its retries.
            event = dataclasses.replace(event, state=AttemptState.LOST)
        if assignment.secrets:
            hidden = assignment.secret_values
            event = dataclasses.replace(
                event,
                message=redact_secrets(event.message, hidden),
                traceback=redact_secrets(event.traceback, hidden),
            )
        await self._reporter.report(event, assignment.fencing_token)
        if event.state.terminal:
            # Read now, while the executor still has it (a pod may be cleaned up next).
            await self._ship_log(assignment, wait=False)
            self._active.pop(event.attempt_id, None)
            self._reporter.close_attempt(event.attempt_id)
            self._stop_requested.discard(event.attempt_id)
            self._slot_freed.set()
            if not self._active:
                self._idle.set()

    # -------------------------------------------------------------------------------- logs

    def ship_logs_while_running(self) -> None:
        """Keep the output of running attempts readable while they run (in the background)."""
        self._spawn(self._ship_running_logs())

    async def _ship_running_logs(self) -> None:
        interval = self._settings.log_upload_interval_seconds
        if interval <= 0:
            return
        while not self._stopping.is_set():
            await sleep_unless_set(self._stopping, interval)
            for assignment in list(self._active.values()):
                await self._ship_log(assignment, wait=True)

    async def _ship_log(self, assignment: TaskAssignment, *, wait: bool) -> None:
        """Copy the attempt's output so far to the blob store, beside its inputs."""
        text = await self._executor.read_log(assignment.attempt_id)
        if text is None:
            return
        # What the task printed of its secrets' values never leaves the cluster.
        text = redact_secrets(text, assignment.secret_values)
        uri = attempt_log_uri(assignment.inputs_uri)

        async def upload() -> None:
            try:
                await asyncio.to_thread(write_uri, uri, text.encode())
            except Exception as exc:  # a log is worth less than the attempt: never fail it
                logger.warning(
                    "attempt %s: could not store its log: %s", assignment.attempt_id, exc
                )

        if wait:
            await upload()
        else:
            self._spawn(upload())

    # ---------------------------------------------------------------------------- shutdown

    async def stop(self) -> None:
        """At shutdown (leasing over): let launches finish, then stop the executor, and wait
        (bounded) for the attempts it killed to be reported, unless they outlive the agent."""
        if self._launches:
            await asyncio.wait(self._launches)
        running = self._executor.running()
        survive = self._executor.attempts_survive_agent
        if running and not survive:
            logger.info("stopping %d running attempt(s): %s", len(running), ", ".join(running))
        await self._executor.shutdown("agent shut down")
        settle = self._settings.kill_grace_seconds + 5.0
        if not survive:
            try:
                await asyncio.wait_for(self._idle.wait(), settle)
            except TimeoutError:
                logger.warning("attempts still settling at shutdown: %s", ", ".join(self._active))

    async def cancel_background(self) -> None:
        """Cancel log uploads, kills and the log shipper still going."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
