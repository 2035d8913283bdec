"""The agent's sessions with the control plane: dial, register, heartbeat, lease, reconnect.

A session begins when `Register` succeeds on a fresh channel; it then runs a heartbeat loop
(held attempt ids, capacity and pending reasons out; attempts to stop back) and a lease loop (a
`LeaseAttempts` long poll whenever a slot is free) until an RPC fails or the agent stops. When
the control plane is unreachable the session ends and the next one is dialled after an
exponential backoff with jitter; running attempts carry on meanwhile. A rejected token is fatal
(`AgentAuthenticationError`).

What the session reports and what it does with leases and stop requests is the attempts'
business (`SessionAttempts`, which the supervisor implements); the reporter sends status reports
over the current session with `report_status`.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
from collections.abc import Iterable
from typing import Protocol

import grpc
from pydantic import SecretStr

from data_plane_agent.attempts import TaskAssignment
from data_plane_agent.executors.base import Capacity
from data_plane_agent.log_fields import AttemptLogFields
from data_plane_agent.pacing import Backoff, sleep_unless_set
from data_plane_agent.protocol import (
    ProtocolError,
    ReportAnswer,
    StopOrder,
    heartbeat_request,
    lease_request,
    leases_from_proto,
    register_request,
    registration_from_proto,
    report_answer_from_proto,
    report_answers_from_proto,
    stop_orders_from_proto,
)
from data_plane_agent.settings import AgentSettings
from data_plane_agent.tls import channel_security, connection_hint
from fleetflow.agent.v1 import agent_pb2_grpc
from fleetflow.agent.v1.agent_pb2 import (
    HeartbeatRequest,
    ReportStatusesRequest,
    ReportStatusRequest,
)
from fleetflow.errors import FleetflowError

# The agent loop's parts log under the one name operators know them by.
logger = logging.getLogger("data_plane_agent.agent")

RPC_TIMEOUT_SECONDS = 10.0
DEFAULT_HEARTBEAT_INTERVAL_SECONDS = 5
STABLE_SESSION_SECONDS = 60.0
"""A session that lasted this long resets the reconnect backoff when it ends."""
_DRAIN_TIMEOUT_SECONDS = 2.0
"""How long a stopping agent waits to tell the control plane it drains (then stops anyway)."""
MIN_EMPTY_LEASE_INTERVAL_SECONDS = 1.0
"""Pacing for a control plane that answers empty lease polls without waiting."""

_AUTH_CODES = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
]


class AgentAuthenticationError(FleetflowError):
    """The control plane rejected the agent's cluster token."""


def agent_version() -> str:
    """The installed fleetflow version the agent announces."""
    try:
        return importlib.metadata.version("fleetflow")
    except importlib.metadata.PackageNotFoundError:
        return "0.1.0"


class SessionAttempts(Protocol):
    """What a session tells the control plane about the agent's attempts, and what it hands
    them: leases and stop requests."""

    @property
    def executor_name(self) -> str:
        """The executor kind the agent registers with."""
        ...

    def held_attempts(self) -> dict[str, int]:
        """Attempt id -> fencing token of every attempt the agent answers for (registering)."""
        ...

    def heartbeat_attempt_ids(self) -> set[str]:
        """The attempt ids a heartbeat lists as held."""
        ...

    def capacity(self) -> Capacity: ...

    def pending_reasons(self) -> dict[str, str]: ...

    def free_slots(self) -> int: ...

    async def wait_for_free_slot(self) -> None: ...

    def launch(self, assignment: TaskAssignment, report_secret: SecretStr) -> None:
        """Take a leased attempt (its launch goes on apart from the session)."""
        ...

    def stop_attempts(self, orders: Iterable[StopOrder]) -> None:
        """Kill attempts the control plane no longer wants, each after its grace."""
        ...


class Session:
    """The agent's current session with the control plane, and the loop that renews it.

    Args:
        settings: Where the control plane is, the cluster token, TLS, backoff and lease wait.
        stopping: Set when the agent stops: no more sessions, leases or heartbeats.
        log_fields: Told the cluster's name on registering.

    Raises:
        TlsConfigError: The TLS settings are invalid.
    """

    def __init__(
        self, settings: AgentSettings, stopping: asyncio.Event, log_fields: AttemptLogFields
    ) -> None:
        self._settings = settings
        self._security = channel_security(settings)
        self._metadata = (("authorization", f"Bearer {settings.token.get_secret_value()}"),)
        self._stopping = stopping
        self._log_fields = log_fields
        self._channel: grpc.aio.Channel | None = None
        self._stub: agent_pb2_grpc.AgentServiceStub | None = None
        self._ready = asyncio.Event()

    @property
    def registered(self) -> bool:
        """Whether a session is up (registered, and no RPC of it failed since)."""
        return self._ready.is_set()

    async def wait_registered(self) -> None:
        """Wait until a session is up."""
        await self._ready.wait()

    async def report_status(self, request: ReportStatusRequest) -> ReportAnswer:
        """Send one status report over the current session (`wait_registered` first).

        Raises:
            grpc.aio.AioRpcError: The call failed.
        """
        stub = self._stub
        assert stub is not None
        response = await stub.ReportStatus(
            request, metadata=self._metadata, timeout=RPC_TIMEOUT_SECONDS
        )
        return report_answer_from_proto(response)

    async def report_statuses(self, requests: list[ReportStatusRequest]) -> list[ReportAnswer]:
        """Send several reports in one call (`wait_registered` first); an answer for each, in
        order.

        Raises:
            grpc.aio.AioRpcError: The call failed (UNIMPLEMENTED: the control plane predates
                it).
            ProtocolError: The control plane answered for another number of reports.
        """
        stub = self._stub
        assert stub is not None
        response = await stub.ReportStatuses(
            ReportStatusesRequest(reports=requests),
            metadata=self._metadata,
            timeout=RPC_TIMEOUT_SECONDS,
        )
        answers = report_answers_from_proto(response)
        if len(answers) != len(requests):
            raise ProtocolError(
                f"the control plane answered {len(answers)} of {len(requests)} reports"
            )
        return answers

    async def close(self) -> None:
        self._ready.clear()
        self._stub = None
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()

    async def run(self, attempts: SessionAttempts) -> None:
        """Hold a session until the agent stops, reconnecting whenever one ends.

        Raises:
            AgentAuthenticationError: The control plane rejected the cluster token.
        """
        target = self._settings.control_plane
        backoff = Backoff(
            self._settings.reconnect_initial_backoff_seconds,
            self._settings.reconnect_max_backoff_seconds,
        )
        logger.info("dialling the control plane at %s (%s)", target, self._security.description)
        while not self._stopping.is_set():
            channel = self._security.open_channel(target, _CHANNEL_OPTIONS)
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            # What this agent still answers for: attempts running, and finished ones whose
            # final report is not delivered yet (else the control plane would think them lost
            # and run them again).
            request = register_request(
                agent_version=agent_version(),
                executor_name=attempts.executor_name,
                labels=self._settings.labels,
                capacity=attempts.capacity(),
                held=attempts.held_attempts(),
            )
            try:
                response = await stub.Register(
                    request, metadata=self._metadata, timeout=RPC_TIMEOUT_SECONDS
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
                await sleep_unless_set(self._stopping, delay)
                continue

            registration = registration_from_proto(response)
            await self.close()
            self._channel, self._stub = channel, stub
            self._log_fields.cluster_name = registration.cluster_name
            interval = registration.heartbeat_interval_seconds or DEFAULT_HEARTBEAT_INTERVAL_SECONDS
            logger.info(
                "registered with the control plane at %s as cluster %r (heartbeat every %ds)",
                target,
                registration.cluster_name,
                interval,
            )
            attempts.stop_attempts(registration.stop_orders)
            self._ready.set()
            started = asyncio.get_running_loop().time()
            try:
                await self._run_session(stub, interval, attempts)
                if self._stopping.is_set():
                    await self._announce_draining(stub, attempts)
            except grpc.aio.AioRpcError as exc:
                self._ready.clear()
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
                await sleep_unless_set(self._stopping, delay)
            except Exception:
                self._ready.clear()
                delay = backoff.next_delay()
                logger.exception("agent session failed; reconnecting in %.1fs", delay)
                await sleep_unless_set(self._stopping, delay)

    async def _run_session(
        self, stub: agent_pb2_grpc.AgentServiceStub, interval: int, attempts: SessionAttempts
    ) -> None:
        """Heartbeat and lease until stopping (returns) or an RPC fails (raises)."""
        loops = [
            asyncio.create_task(self._heartbeat_loop(stub, interval, attempts), name="heartbeat"),
            asyncio.create_task(self._lease_loop(stub, attempts), name="lease"),
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

    async def _announce_draining(
        self, stub: agent_pb2_grpc.AgentServiceStub, attempts: SessionAttempts
    ) -> None:
        """Tell the control plane, before the running attempts are stopped and reported LOST,
        that nothing more should be placed here: otherwise their retries could be assigned
        straight back to this departing agent, and be lost again when its cluster goes silent.
        Best effort: without it the control plane learns the same from the silence."""
        request = _heartbeat(attempts, draining=True)
        try:
            await stub.Heartbeat(request, metadata=self._metadata, timeout=_DRAIN_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            logger.warning(
                "could not tell the control plane this agent drains: %s", exc.code().name
            )

    async def _heartbeat_loop(
        self, stub: agent_pb2_grpc.AgentServiceStub, interval: int, attempts: SessionAttempts
    ) -> None:
        while True:
            request = _heartbeat(attempts, draining=False)
            response = await stub.Heartbeat(
                request, metadata=self._metadata, timeout=RPC_TIMEOUT_SECONDS
            )
            attempts.stop_attempts(stop_orders_from_proto(response))
            await asyncio.sleep(interval)  # pacing, not synchronisation

    async def _lease_loop(
        self, stub: agent_pb2_grpc.AgentServiceStub, attempts: SessionAttempts
    ) -> None:
        wait_seconds = self._settings.lease_wait_seconds
        while not self._stopping.is_set():
            free = attempts.free_slots()
            if free <= 0:
                await attempts.wait_for_free_slot()
                continue
            asked_at = asyncio.get_running_loop().time()
            response = await stub.LeaseAttempts(
                lease_request(max_attempts=free, wait_seconds=wait_seconds),
                metadata=self._metadata,
                timeout=wait_seconds + RPC_TIMEOUT_SECONDS,
            )
            leases = leases_from_proto(response)
            if not leases:
                elapsed = asyncio.get_running_loop().time() - asked_at
                if elapsed < MIN_EMPTY_LEASE_INTERVAL_SECONDS:
                    await asyncio.sleep(MIN_EMPTY_LEASE_INTERVAL_SECONDS - elapsed)  # pacing
                continue
            if len(leases) > free:
                logger.warning(
                    "leased %d attempts while asking for at most %d; running them all",
                    len(leases),
                    free,
                )
            for assignment, report_secret in leases:
                attempts.launch(assignment, report_secret)


def _heartbeat(attempts: SessionAttempts, *, draining: bool) -> HeartbeatRequest:
    """What the agent holds now, as a heartbeat."""
    return heartbeat_request(
        capacity=attempts.capacity(),
        held_attempt_ids=attempts.heartbeat_attempt_ids(),
        pending_reasons=attempts.pending_reasons(),
        draining=draining,
    )
