"""The agent: one per cluster, it leases attempts from the control plane, runs them on its
executor and reports how they go.

`Agent` composes three parts, each with one job:

- the *session* (`session`): dial the control plane's `AgentService`, `Register`, then
  heartbeat and lease until the connection fails, and reconnect with backoff;
- the *supervisor* (`supervisor`): the active attempts on the executor (launch, stop, adopt
  after a restart, their logs), turning the executor's state changes into reports;
- the *reporter* (`reporter`): number, buffer on disk and deliver those reports with their
  leases' secrets, so that none is lost to an outage or a restart.

`run_agent` runs one until SIGINT/SIGTERM, holding the work dir's lock. A rejected token is
fatal (`AgentAuthenticationError`). On shutdown the agent stops leasing, kills its running
attempts and reports them LOST (so the control plane runs them again elsewhere) as far as it can
within a deadline; Kubernetes pods are left running for the next agent to adopt.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import IO

from data_plane_agent.executors.base import Executor, ExecutorStartError
from data_plane_agent.executors.local_process import (
    LocalProcessExecutor,
    isolation_from_settings,
    retention_from_settings,
)
from data_plane_agent.log_fields import AttemptLogFields
from data_plane_agent.reporter import Reporter
from data_plane_agent.session import AgentAuthenticationError, Session
from data_plane_agent.settings import AgentSettings
from data_plane_agent.supervisor import Supervisor
from fleetflow.errors import FleetflowError

logger = logging.getLogger(__name__)

__all__ = [
    "Agent",
    "AgentAuthenticationError",
    "AgentInternalError",
    "default_executor",
    "lock_work_dir",
    "run_agent",
]


class AgentInternalError(FleetflowError, RuntimeError):
    """One of the agent's own loops failed (a bug); the agent shut down after logging it."""


class Agent:
    """The data-plane agent of one cluster.

    Args:
        settings: Where the control plane is, the cluster token, capacity limits, TLS.
        executor: Runs the attempts (default: the one `settings.executor` names).

    Raises:
        TlsConfigError: The TLS settings are invalid.
    """

    def __init__(self, settings: AgentSettings, executor: Executor | None = None) -> None:
        self._stopping = asyncio.Event()
        self._log_fields = AttemptLogFields()
        self._session = Session(settings, self._stopping, self._log_fields)
        self._executor: Executor = executor or default_executor(settings)
        self._reporter = Reporter(settings, self._session, self._log_fields)
        self._supervisor = Supervisor(
            settings, self._executor, self._reporter, self._stopping, self._log_fields
        )
        self._internal_error: BaseException | None = None

    @property
    def cluster_name(self) -> str | None:
        """The name the control plane registered this agent's cluster under, once it did."""
        return self._log_fields.cluster_name

    def request_stop(self) -> None:
        """Begin a graceful shutdown (safe to call from a signal handler on the loop)."""
        if not self._stopping.is_set():
            logger.info("shutting down: no more leases, stopping running attempts")
        self._stopping.set()

    async def run(self) -> None:
        """Run until `request_stop`.

        Raises:
            AgentAuthenticationError: The control plane rejected the cluster token.
            ExecutorStartError: The executor cannot start.
            AgentInternalError: An internal loop of the agent failed; the agent shut down.
        """
        self._supervisor.adopt(await self._executor.start())
        self._reporter.forget_unclaimed_leases()
        pump = asyncio.create_task(self._supervisor.pump_events(), name="event-pump")
        delivery = asyncio.create_task(self._reporter.deliver_reports(), name="reporter")
        self._supervisor.ship_logs_while_running()
        for task in (pump, delivery):
            task.add_done_callback(self._on_internal_task_done)
        try:
            await self._session.run(self._supervisor)
        finally:
            await self._shutdown(pump, delivery)
        if self._internal_error is not None:
            raise AgentInternalError("agent stopped after an internal error") from (
                self._internal_error
            )

    def _on_internal_task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self._internal_error = task.exception()
        logger.error(
            "agent %s loop failed; shutting down", task.get_name(), exc_info=self._internal_error
        )
        self.request_stop()

    async def _shutdown(self, pump: asyncio.Task[None], delivery: asyncio.Task[None]) -> None:
        self._stopping.set()
        await self._supervisor.stop()
        await self._reporter.flush()
        for task in (pump, delivery):
            task.cancel()
        await asyncio.gather(pump, delivery, return_exceptions=True)
        await self._supervisor.cancel_background()
        await self._session.close()
        logger.info("agent stopped")


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
        simulated_gpus=settings.simulated_gpus,
        warm_runtime=settings.warm_runtime,
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
