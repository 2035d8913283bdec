"""The agent loop: register, heartbeat, lease attempts, launch them, report how they go.

One `Agent` per cluster dials the control plane's `AgentService` and keeps four things going:

- a *session* per connection: `Register`, then a heartbeat loop (running attempt ids out,
  attempts to stop back) and a lease loop (a `LeaseAttempts` long-poll whenever a slot is free);
- an *event pump* turning the executor's state changes into `ReportStatus` requests, numbered
  per attempt (RUNNING is 1, the terminal state 2) and fenced with the assignment's token;
- a *reporter* delivering those requests in order from a bounded buffer on disk
  (`report_buffer`, under `<work_dir>/reports/`), so reports made while the control plane is
  unreachable are sent once it is back, even by the next agent process if this one dies first.

Each lease comes with a report secret that the control plane requires on the attempt's reports.
The agent keeps it apart from the `TaskAssignment` executors see: in memory, and on disk only in
its lease file (`lease_store`, `<work_dir>/leases/<attempt_id>.json`, mode 0600 in a 0700
directory), written before the attempt is launched and deleted once its last report is settled.
Never in a buffered report (the reporter adds it as it sends), a log line, or the task's
environment or arguments. So it survives a reconnection, the control plane's restart (which
keeps only its hash) and this process's: the next agent process on the same work dir loads the
lease files, and the reports it replays, or makes for the pods it adopts, carry their secrets.

When the control plane is unreachable the session ends and the agent reconnects with
exponential backoff and jitter; running attempts carry on. A rejected token is fatal
(`AgentAuthenticationError`). On shutdown the agent stops leasing, kills its running attempts
and reports them LOST (so the control plane runs them again elsewhere) as far as it can within a
deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import importlib.metadata
import logging
import os
import random
import signal
import time
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import IO, Any

import grpc
from pydantic import SecretStr

from data_plane_agent.attempts import AttemptEvent, TaskAssignment
from data_plane_agent.executors.base import ClusterExecutor, Executor, ExecutorStartError
from data_plane_agent.executors.local_process import (
    LocalProcessExecutor,
    isolation_from_settings,
    retention_from_settings,
)
from data_plane_agent.lease_store import LEASES_DIR, LeaseStore, names_a_lease_file
from data_plane_agent.protocol import (
    assignment_from_proto,
    capacity_to_proto,
    report_request,
    report_secret_from_proto,
    with_report_secret,
)
from data_plane_agent.report_buffer import PendingReport, ReportBuffer
from data_plane_agent.settings import AgentSettings
from data_plane_agent.tls import channel_security, connection_hint
from fleetflow.agent.v1 import agent_pb2, agent_pb2_grpc
from fleetflow.errors import FleetflowError
from fleetflow.logs import log_context
from fleetflow.states import AttemptState
from fleetflow.storage import attempt_log_uri, write_uri

logger = logging.getLogger(__name__)

RPC_TIMEOUT_SECONDS = 10.0
DEFAULT_HEARTBEAT_INTERVAL_SECONDS = 5
STABLE_SESSION_SECONDS = 60.0
"""A session that lasted this long resets the reconnect backoff when it ends."""
MIN_EMPTY_LEASE_INTERVAL_SECONDS = 1.0
"""Pacing for a control plane that answers empty lease polls without waiting."""
MAX_REPORT_TRIES = 10
"""Tries for a report the control plane answers with a server-side error (not for outages)."""
REPORTS_DIR = "reports"
"""Under the work directory: status reports not yet delivered (see `report_buffer`)."""

_AUTH_CODES = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
# The control plane is away: a report is kept until it gets through.
_OUTAGE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})
# The control plane answered but failed: retried a bounded number of times.
_SERVER_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
]


class AgentAuthenticationError(FleetflowError):
    """The control plane rejected the agent's cluster token."""


class AgentInternalError(FleetflowError, RuntimeError):
    """One of the agent's own loops failed (a bug); the agent shut down after logging it."""


def agent_version() -> str:
    """The installed fleetflow version the agent announces."""
    try:
        return importlib.metadata.version("fleetflow")
    except importlib.metadata.PackageNotFoundError:
        return "0.1.0"


def machine_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


class Backoff:
    """Exponential backoff with jitter: each delay is drawn from [d/2, d], d doubling to a cap."""

    def __init__(
        self,
        initial: float,
        maximum: float,
        *,
        multiplier: float = 2.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._initial = initial
        self._maximum = maximum
        self._multiplier = multiplier
        self._rng = rng
        self._failures = 0

    def next_delay(self) -> float:
        ceiling = min(self._maximum, self._initial * self._multiplier**self._failures)
        self._failures += 1
        return ceiling / 2 + self._rng() * ceiling / 2

    def reset(self) -> None:
        self._failures = 0


class Agent:
    """The data-plane agent of one cluster.

    Args:
        settings: Where the control plane is, the cluster token, capacity limits, TLS.
        executor: Runs the attempts (default: a `LocalProcessExecutor` under `work_dir`).

    Raises:
        TlsConfigError: The TLS settings are invalid.
    """

    def __init__(self, settings: AgentSettings, executor: Executor | None = None) -> None:
        self._settings = settings
        self._security = channel_security(settings)
        self._executor: Executor = executor or default_executor(settings)
        self._cluster_executor = (
            self._executor if isinstance(self._executor, ClusterExecutor) else None
        )
        self._metadata = (("authorization", f"Bearer {settings.token.get_secret_value()}"),)
        # Loads what a previous agent process could not deliver; replayed once registered.
        self._reports = ReportBuffer(settings.work_dir / REPORTS_DIR, settings.max_buffered_reports)
        # Attempts leased and not yet ended, with the count of reports made for each.
        self._active: dict[str, TaskAssignment] = {}
        self._sequences: dict[str, int] = {}
        # Attempt id -> (fencing token, report secret) of the leases this agent answers for,
        # mirrored in `_leases` on disk (with those a previous process left, loaded here). Kept
        # until the attempt is no longer active and its reports are settled.
        self._leases = LeaseStore(settings.work_dir / LEASES_DIR)
        self._report_secrets: dict[str, tuple[int, SecretStr]] = self._leases.load()
        # Execution and node of recently leased attempts, for the log lines about their
        # reports, which may be delivered long after the attempt ended. Oldest dropped first.
        self._origins: dict[str, tuple[str, str]] = {}
        self._stop_requested: set[str] = set()
        self._channel: grpc.aio.Channel | None = None
        self._stub: agent_pb2_grpc.AgentServiceStub | None = None
        self._session_ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._background: set[asyncio.Task[Any]] = set()
        self._launches: set[asyncio.Task[None]] = set()
        self._internal_error: BaseException | None = None
        self.cluster_name: str | None = None

    # ----------------------------------------------------------------------------- lifecycle

    def request_stop(self) -> None:
        """Begin a graceful shutdown (safe to call from a signal handler on the loop)."""
        if not self._stopping.is_set():
            logger.info("shutting down: no more leases, stopping running attempts")
        self._stopping.set()

    async def run(self) -> None:
        """Run until `request_stop`.

        Raises:
            AgentAuthenticationError: The control plane rejected the cluster token.
            AgentInternalError: An internal loop of the agent failed; the agent shut down.
        """
        if self._cluster_executor is not None:
            self._adopt(await self._cluster_executor.start())
        # A previous process's leases neither adopted nor with a report left: nothing more
        # will be reported under them.
        for leased in list(self._report_secrets):
            self._forget_report_secret(leased)
        pump = asyncio.create_task(self._pump_executor_events(), name="event-pump")
        reporter = asyncio.create_task(self._deliver_reports(), name="reporter")
        self._spawn(self._ship_running_logs())
        for task in (pump, reporter):
            task.add_done_callback(self._on_internal_task_done)
        try:
            await self._connection_loop()
        finally:
            await self._shutdown(pump, reporter)
        if self._internal_error is not None:
            raise AgentInternalError("agent stopped after an internal error") from (
                self._internal_error
            )

    def _adopt(self, assignments: list[TaskAssignment]) -> None:
        """Hold attempts a previous agent process launched and the executor still runs.

        Their reports continue from a sequence number above any the previous process can
        have used (milliseconds since the epoch), so none is dropped as a duplicate, and carry
        the report secret the previous process stored in the attempt's lease file.
        """
        base = time.time_ns() // 1_000_000
        for assignment in assignments:
            self._active[assignment.attempt_id] = assignment
            self._sequences[assignment.attempt_id] = base
            self._origins[assignment.attempt_id] = (assignment.execution_id, assignment.node_id)
            with self._attempt_log_context(assignment.attempt_id):
                logger.info("attempt %s: adopted from a previous agent", assignment.attempt_id)
        if self._active:
            self._idle.clear()

    def _on_internal_task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self._internal_error = task.exception()
        logger.error(
            "agent %s loop failed; shutting down", task.get_name(), exc_info=self._internal_error
        )
        self.request_stop()

    async def _shutdown(self, pump: asyncio.Task[None], reporter: asyncio.Task[None]) -> None:
        self._stopping.set()
        if self._launches:
            await asyncio.wait(self._launches)
        running = self._executor.running()
        survive = self._cluster_executor is not None and (
            self._cluster_executor.attempts_survive_agent
        )
        if running and not survive:
            logger.info("stopping %d running attempt(s): %s", len(running), ", ".join(running))
        await self._executor.shutdown("agent shut down")
        settle = self._settings.kill_grace_seconds + 5.0
        if not survive:
            try:
                await asyncio.wait_for(self._idle.wait(), settle)
            except TimeoutError:
                logger.warning("attempts still settling at shutdown: %s", ", ".join(self._active))
        if self._session_ready.is_set():
            try:
                await asyncio.wait_for(
                    self._reports.wait_empty(), self._settings.shutdown_report_seconds
                )
            except TimeoutError:
                pass
        if len(self._reports):
            logger.warning(
                "%d status report(s) could not be delivered before shutdown; kept in %s for the "
                "next start",
                len(self._reports),
                self._reports.directory,
            )
        for task in (pump, reporter, *self._background):
            task.cancel()
        await asyncio.gather(pump, reporter, *self._background, return_exceptions=True)
        await self._close_channel()
        logger.info("agent stopped")

    async def _close_channel(self) -> None:
        self._session_ready.clear()
        self._stub = None
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()

    async def _ship_log(self, assignment: TaskAssignment, *, wait: bool) -> None:
        """Copy the attempt's output so far to the blob store, beside its inputs."""
        text = await self._executor.read_log(assignment.attempt_id)
        if text is None:
            return
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

    async def _ship_running_logs(self) -> None:
        """Keep the output of running attempts readable while they run."""
        interval = self._settings.log_upload_interval_seconds
        if interval <= 0:
            return
        while not self._stopping.is_set():
            await self._sleep_unless_stopping(interval)
            for assignment in list(self._active.values()):
                await self._ship_log(assignment, wait=True)

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # ------------------------------------------------------------------------------- session

    async def _connection_loop(self) -> None:
        target = self._settings.control_plane
        backoff = Backoff(
            self._settings.reconnect_initial_backoff_seconds,
            self._settings.reconnect_max_backoff_seconds,
        )
        logger.info("dialling the control plane at %s (%s)", target, self._security.description)
        while not self._stopping.is_set():
            channel = self._security.open_channel(target, _CHANNEL_OPTIONS)
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            try:
                response = await stub.Register(
                    self._register_request(), metadata=self._metadata, timeout=RPC_TIMEOUT_SECONDS
                )
            except grpc.aio.AioRpcError as exc:
                await channel.close()
                if exc.code() in _AUTH_CODES:
                    raise AgentAuthenticationError(
                        f"the control plane at {target} rejected this agent's cluster token "
                        f"({exc.code().name}: {exc.details()}); check the token file "
                        "(FLEETFLOW_AGENT_TOKEN_FILE) or FLEETFLOW_AGENT_TOKEN"
                    ) from None
                delay = backoff.next_delay()
                hint = connection_hint(exc.details() or "", self._security, self._settings)
                logger.warning(
                    "cannot register with the control plane at %s (%s: %s)%s; retrying in %.1fs",
                    target,
                    exc.code().name,
                    exc.details(),
                    f"; {hint}" if hint else "",
                    delay,
                )
                await self._sleep_unless_stopping(delay)
                continue

            await self._close_channel()
            self._channel, self._stub = channel, stub
            self.cluster_name = response.cluster_name
            interval = response.heartbeat_interval_seconds or DEFAULT_HEARTBEAT_INTERVAL_SECONDS
            logger.info(
                "registered with the control plane at %s as cluster %r (heartbeat every %ds)",
                target,
                response.cluster_name,
                interval,
            )
            self._stop_attempts(response.stop_attempt_ids)
            self._session_ready.set()
            started = asyncio.get_running_loop().time()
            try:
                await self._run_session(stub, interval)
            except grpc.aio.AioRpcError as exc:
                self._session_ready.clear()
                if asyncio.get_running_loop().time() - started >= STABLE_SESSION_SECONDS:
                    backoff.reset()
                delay = backoff.next_delay()
                logger.warning(
                    "lost the control plane at %s (%s: %s); reconnecting in %.1fs",
                    target,
                    exc.code().name,
                    exc.details(),
                    delay,
                )
                await self._sleep_unless_stopping(delay)
            except Exception:
                self._session_ready.clear()
                delay = backoff.next_delay()
                logger.exception("agent session failed; reconnecting in %.1fs", delay)
                await self._sleep_unless_stopping(delay)

    async def _run_session(self, stub: agent_pb2_grpc.AgentServiceStub, interval: int) -> None:
        """Heartbeat and lease until stopping (returns) or an RPC fails (raises)."""
        loops = [
            asyncio.create_task(self._heartbeat_loop(stub, interval), name="heartbeat"),
            asyncio.create_task(self._lease_loop(stub), name="lease"),
        ]
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            done, _ = await asyncio.wait([*loops, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (*loops, stopping):
                task.cancel()
            await asyncio.gather(*loops, stopping, return_exceptions=True)
        for task in loops:
            if task in done and not task.cancelled():
                error = task.exception()
                if error is not None:
                    raise error

    def _capacity(self) -> agent_pb2.Capacity:
        reported = self._cluster_executor.capacity() if self._cluster_executor else None
        if reported is not None:
            return capacity_to_proto(reported)
        active = list(self._active.values())
        gpus_in_use: dict[str, int] = {}
        for a in active:
            if a.resources.gpu and a.resources.gpu_type:
                gpus_in_use[a.resources.gpu_type] = (
                    gpus_in_use.get(a.resources.gpu_type, 0) + a.resources.gpu
                )
        return agent_pb2.Capacity(
            cpu_allocatable=float(os.cpu_count() or 1),
            cpu_in_use=sum(a.resources.cpu for a in active),
            memory_bytes_allocatable=machine_memory_bytes(),
            memory_bytes_in_use=sum(a.resources.memory_bytes for a in active),
            gpus=[
                agent_pb2.GpuCapacity(
                    gpu_type=gpu_type, allocatable=count, in_use=gpus_in_use.get(gpu_type, 0)
                )
                for gpu_type, count in sorted(self._settings.simulated_gpus.items())
            ],
        )

    def _register_request(self) -> agent_pb2.RegisterRequest:
        # What this agent still answers for: attempts running, and finished ones whose final
        # report is not delivered yet (else the control plane would think them lost and run
        # them again).
        held = self._reports.fencing_tokens()
        held.update({a.attempt_id: a.fencing_token for a in self._active.values()})
        return agent_pb2.RegisterRequest(
            agent_version=agent_version(),
            executors=[self._executor.name],
            labels=self._settings.labels,
            capacity=self._capacity(),
            running=[
                agent_pb2.RunningAttempt(attempt_id=attempt_id, fencing_token=token)
                for attempt_id, token in sorted(held.items())
            ],
        )

    async def _heartbeat_loop(self, stub: agent_pb2_grpc.AgentServiceStub, interval: int) -> None:
        while True:
            # Like registering: a finished attempt whose final report is still on its way is
            # held, else a heartbeat overtaking the report would have it marked lost.
            held = set(self._executor.running()) | set(self._reports.fencing_tokens())
            response = await stub.Heartbeat(
                agent_pb2.HeartbeatRequest(
                    capacity=self._capacity(),
                    running_attempt_ids=sorted(held),
                    pending_attempts=self._pending_attempts(),
                ),
                metadata=self._metadata,
                timeout=RPC_TIMEOUT_SECONDS,
            )
            self._stop_attempts(response.stop_attempt_ids)
            await asyncio.sleep(interval)  # pacing, not synchronisation

    def _pending_attempts(self) -> list[agent_pb2.PendingAttempt]:
        if self._cluster_executor is None:
            return []
        reasons = self._cluster_executor.pending_reasons()
        return [
            agent_pb2.PendingAttempt(attempt_id=attempt_id, reason=reason)
            for attempt_id, reason in sorted(reasons.items())
        ]

    def _stop_attempts(self, attempt_ids: Iterable[str]) -> None:
        """Kill attempts the control plane no longer wants (cancelled, superseded, lost)."""
        running = set(self._executor.running())
        for attempt_id in attempt_ids:
            if attempt_id in running and attempt_id not in self._stop_requested:
                self._stop_requested.add(attempt_id)
                with self._attempt_log_context(attempt_id):
                    logger.info("attempt %s: the control plane asked to stop it", attempt_id)
                    self._spawn(self._executor.kill(attempt_id, "stopped by the control plane"))

    def _attempt_log_context(self, attempt_id: str) -> contextlib.AbstractContextManager[None]:
        """Log fields of an attempt: its id, and its execution and node when known (not for
        reports a previous agent process left)."""
        execution_id, node_id = self._origins.get(attempt_id, (None, None))
        return log_context(
            cluster=self.cluster_name,
            execution_id=execution_id,
            node_id=node_id,
            attempt_id=attempt_id,
        )

    async def _lease_loop(self, stub: agent_pb2_grpc.AgentServiceStub) -> None:
        wait_seconds = self._settings.lease_wait_seconds
        while not self._stopping.is_set():
            free = self._settings.max_parallel - len(self._active)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            asked_at = asyncio.get_running_loop().time()
            response = await stub.LeaseAttempts(
                agent_pb2.LeaseAttemptsRequest(max_attempts=free, wait_seconds=wait_seconds),
                metadata=self._metadata,
                timeout=wait_seconds + RPC_TIMEOUT_SECONDS,
            )
            if not response.assignments:
                elapsed = asyncio.get_running_loop().time() - asked_at
                if elapsed < MIN_EMPTY_LEASE_INTERVAL_SECONDS:
                    await asyncio.sleep(MIN_EMPTY_LEASE_INTERVAL_SECONDS - elapsed)  # pacing
                continue
            if len(response.assignments) > free:
                logger.warning(
                    "leased %d attempts while asking for at most %d; running them all",
                    len(response.assignments),
                    free,
                )
            for message in response.assignments:
                secret = report_secret_from_proto(message)
                self._start_launch(assignment_from_proto(message), secret)

    def _start_launch(self, assignment: TaskAssignment, report_secret: SecretStr) -> None:
        with log_context(
            cluster=self.cluster_name,
            execution_id=assignment.execution_id,
            node_id=assignment.node_id,
            attempt_id=assignment.attempt_id,
        ):
            # The launch task copies this context: its logs, and the executor's, carry the ids.
            self._start_launch_in_context(assignment, report_secret)

    def _start_launch_in_context(
        self, assignment: TaskAssignment, report_secret: SecretStr
    ) -> None:
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
        self._sequences[attempt_id] = 0
        # A new lease (a new fencing token) replaces the secret of any earlier one; it is stored
        # on disk before the attempt is launched (`_launch`).
        self._report_secrets[attempt_id] = (assignment.fencing_token, report_secret)
        self._origins[attempt_id] = (assignment.execution_id, assignment.node_id)
        remembered = self._settings.max_buffered_reports + self._settings.max_parallel
        while len(self._origins) > remembered:
            del self._origins[next(iter(self._origins))]
        if len(self._report_secrets) > remembered:
            # Reports the full buffer dropped leave their secrets behind: forget them.
            for leased in list(self._report_secrets):
                self._forget_report_secret(leased)
        self._idle.clear()
        # A task of its own, so that ending the session never cancels a half-started launch.
        task = asyncio.create_task(
            self._launch(assignment, report_secret), name=f"launch-{attempt_id}"
        )
        self._launches.add(task)
        task.add_done_callback(self._launches.discard)

    async def _launch(self, assignment: TaskAssignment, report_secret: SecretStr) -> None:
        await self._store_lease(assignment, report_secret)
        try:
            await self._executor.launch(assignment)
        except Exception as exc:  # the executor should report this itself; never leak a slot
            logger.exception("attempt %s: the executor failed to launch it", assignment.attempt_id)
            await self._record_event(
                AttemptEvent(
                    assignment.attempt_id,
                    AttemptState.FAILED,
                    f"agent could not launch the attempt: {exc}",
                )
            )

    async def _store_lease(self, assignment: TaskAssignment, report_secret: SecretStr) -> None:
        """Put the lease's secret on disk, for the next agent process should this one die
        before the attempt's last report is settled. Failing that, it stays in memory only."""
        attempt_id = assignment.attempt_id
        if not names_a_lease_file(attempt_id):
            logger.warning(
                "attempt %s: its id is not of the form at-<hex>; its report secret is kept in "
                "memory only and dies with this process",
                attempt_id,
            )
            return
        try:
            await asyncio.to_thread(
                self._leases.save, attempt_id, assignment.fencing_token, report_secret
            )
        except OSError as exc:
            logger.error(
                "attempt %s: could not store its report secret in %s (%s); keeping it in "
                "memory only",
                attempt_id,
                self._leases.directory,
                exc,
            )

    # ------------------------------------------------------------------------------- reports

    async def _pump_executor_events(self) -> None:
        while True:
            event = await self._executor.next_event()
            with self._attempt_log_context(event.attempt_id):
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
        sequence = self._sequences[event.attempt_id] + 1
        self._sequences[event.attempt_id] = sequence
        await self._reports.put(
            report_request(event, fencing_token=assignment.fencing_token, sequence=sequence)
        )
        if event.state.terminal:
            # Read now, while the executor still has it (a pod may be cleaned up next).
            await self._ship_log(assignment, wait=False)
            self._active.pop(event.attempt_id, None)
            self._sequences.pop(event.attempt_id, None)
            self._forget_report_secret(event.attempt_id)
            self._stop_requested.discard(event.attempt_id)
            self._slot_freed.set()
            if not self._active:
                self._idle.set()

    async def _deliver_reports(self) -> None:
        backoff = Backoff(
            self._settings.reconnect_initial_backoff_seconds,
            self._settings.reconnect_max_backoff_seconds,
        )
        while True:
            pending = await self._reports.first()
            await self._session_ready.wait()
            stub = self._stub
            assert stub is not None
            attempt_id = pending.request.attempt_id
            with self._attempt_log_context(attempt_id):
                try:
                    response = await stub.ReportStatus(
                        self._with_report_secret(pending.request),
                        metadata=self._metadata,
                        timeout=RPC_TIMEOUT_SECONDS,
                    )
                except grpc.aio.AioRpcError as exc:
                    pending.tries += 1
                    code = exc.code()
                    if code is grpc.StatusCode.PERMISSION_DENIED:
                        # Not this lease's report to make (or its secret was lost with the
                        # agent process that leased it): sending it again cannot help.
                        logger.error(
                            "attempt %s: the control plane refused its %s: %s",
                            attempt_id,
                            pending.describe(),
                            exc.details(),
                        )
                        self._settle(pending)
                        continue
                    if code in _OUTAGE_CODES or (
                        code in _SERVER_ERROR_CODES and pending.tries < MAX_REPORT_TRIES
                    ):
                        delay = backoff.next_delay()
                        logger.warning(
                            "attempt %s: could not send its %s (%s: %s); retrying in %.1fs",
                            attempt_id,
                            pending.describe(),
                            code.name,
                            exc.details(),
                            delay,
                        )
                        await asyncio.sleep(delay)  # pacing between retries
                        continue
                    logger.error(
                        "attempt %s: giving up on its %s after %d tries (%s: %s)",
                        attempt_id,
                        pending.describe(),
                        pending.tries,
                        code.name,
                        exc.details(),
                    )
                    self._settle(pending)
                    continue
                backoff.reset()
                self._settle(pending)
                if response.accepted:
                    logger.info("attempt %s: delivered its %s", attempt_id, pending.describe())
                else:
                    logger.info(
                        "attempt %s: the control plane ignored its %s: %s",
                        attempt_id,
                        pending.describe(),
                        response.reason or "no reason given",
                    )

    def _with_report_secret(
        self, request: agent_pb2.ReportStatusRequest
    ) -> agent_pb2.ReportStatusRequest:
        """The report as sent: with the secret of its lease, when this agent holds it."""
        held = self._report_secrets.get(request.attempt_id)
        if held is None or held[0] != request.fencing_token:
            return request  # a lease whose secret was lost, or an earlier lease's report
        return with_report_secret(request, held[1])

    def _settle(self, pending: PendingReport) -> None:
        """Done with a report (delivered, ignored or refused): off the buffer and, when it was
        the attempt's last, its lease's secret out of memory and off the disk."""
        self._reports.remove(pending)
        self._forget_report_secret(pending.request.attempt_id)

    def _forget_report_secret(self, attempt_id: str) -> None:
        """Forget a lease's secret once nothing more will be reported under it."""
        if attempt_id not in self._active and attempt_id not in self._reports.attempt_ids():
            if self._report_secrets.pop(attempt_id, None) is not None:
                self._leases.delete(attempt_id)


def default_executor(settings: AgentSettings) -> Executor:
    """The executor `settings.executor` names, configured from the settings."""
    if settings.executor == "kubernetes":
        # Imported here: the local-process agent does not need the Kubernetes client.
        from data_plane_agent.executors.kubernetes import KubernetesExecutor
        from data_plane_agent.settings import KubernetesSettings

        return KubernetesExecutor(
            KubernetesSettings(),
            settings.work_dir,
            kill_grace_seconds=settings.kill_grace_seconds,
        )
    return LocalProcessExecutor(
        settings.work_dir,
        isolation=isolation_from_settings(settings),
        kill_grace_seconds=settings.kill_grace_seconds,
        retention=retention_from_settings(settings),
    )


def lock_work_dir(work_dir: Path) -> IO[bytes] | None:
    """Hold an exclusive lock on the work dir for this process's lifetime, or None when another
    agent holds it: two agents replaying the same report buffer would report twice."""
    work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # the agent's alone, when new
    handle = open(work_dir / ".agent.lock", "ab")  # noqa: SIM115 - held until the process exits
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


async def run_agent(settings: AgentSettings, executor: Executor | None = None) -> int:
    """Run an agent until SIGINT/SIGTERM; returns the process exit code."""
    lock = lock_work_dir(settings.work_dir)
    if lock is None:
        logger.error(
            "another agent is running with the work dir %s; give each agent its own --work-dir",
            settings.work_dir,
        )
        return 1
    try:
        agent = Agent(settings, executor)
    except ExecutorStartError as exc:
        logger.error("the %s executor cannot start: %s", settings.executor, exc)
        return 1
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, _on_signal(agent, signum))
            handled.append(signum)
    try:
        await agent.run()
    except AgentAuthenticationError as exc:
        logger.error("%s", exc)
        return 1
    except ExecutorStartError as exc:
        logger.error("the %s executor cannot start: %s", settings.executor, exc)
        return 1
    except AgentInternalError:
        return 1  # already logged with its traceback
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
    return 0


def _on_signal(agent: Agent, signum: signal.Signals) -> Callable[[], None]:
    def handle() -> None:
        logger.info("received %s", signum.name)
        agent.request_stop()

    return handle
