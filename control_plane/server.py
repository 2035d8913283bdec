"""Composes the control plane's parts into one asyncio process.

`fleetflow control-plane serve` runs the REST API and the agent gRPC service (plus the Temporal
worker with `--with-worker`, as `fleetflow dev up` does); `fleetflow control-plane worker` runs
the worker alone. All parts share one event loop, so shutdown is a single ordered path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

import grpc
import uvicorn
from sqlalchemy.orm import Session, sessionmaker

from control_plane.agent_api.interceptors import InternalErrorInterceptor
from control_plane.agent_api.limits import server_options
from control_plane.agent_api.service import AgentService, AttemptsReady
from control_plane.agent_api.tls import server_security
from control_plane.api.app import create_app
from control_plane.auth.rbac import Authorizer
from control_plane.auth.throttle_db import open_throttle_store
from control_plane.bootstrap import ensure_platform_admin, write_secret_file
from control_plane.db.session import make_engine, make_session_factory
from control_plane.execution_ends import ENDS
from control_plane.metrics import MetricsEndpoint, serve_metrics
from control_plane.orchestration.activities import ExecutionActivities
from control_plane.orchestration.supervisor import WorkerSupervisor
from control_plane.orchestration.temporal import TemporalLauncher, connect_temporal, make_worker
from control_plane.scheduling.scheduler import Scheduler
from control_plane.services.cluster_health import watch_cluster_health
from control_plane.services.executions import RootsFirstLauncher
from control_plane.services.finish_notifier import FinishNotifier
from control_plane.services.launch_reconciler import relaunch_queued_executions
from control_plane.services.notifications import NotificationSender
from control_plane.services.schedules import ScheduleActivities, TemporalSchedules
from control_plane.services.sticky_recovery import restart_running_workflows
from control_plane.settings import Settings
from fleetflow.agent.v1 import agent_pb2_grpc
from fleetflow.heap import freeze_startup_heap
from fleetflow.storage import open_blob_store

log = logging.getLogger(__name__)


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the process owner decides when to stop."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True)
class Parts:
    api: bool = True
    grpc: bool = True
    worker: bool = True


async def run_control_plane(
    settings: Settings,
    parts: Parts,
    stop: asyncio.Event,
    started: asyncio.Event | None = None,
    *,
    freeze_heap: bool = False,
) -> None:
    """Run the selected parts until `stop` is set, then shut them down in order.

    `freeze_heap`: once started, keep the start-up heap out of full garbage collections
    (`fleetflow.heap`); for the process's own entry point only.

    Raises:
        TlsConfigError: the agent service's TLS settings are invalid (before anything starts).
        SecretsConfigError: no key for tenant secrets on PostgreSQL, or a malformed one.
    """
    agent_security = server_security(settings.grpc) if parts.grpc else None
    # The API stores tenant secrets and the agent service hands them out: no key, no start.
    secret_box = settings.secrets.box(settings.database.url) if parts.api or parts.grpc else None
    engine = make_engine(settings.database.url)
    sessions = make_session_factory(engine)
    # One store for the REST limits and the agent lockout (their scopes keep them apart).
    throttle = open_throttle_store(settings.limits_store, settings.database.url)
    blob_store = open_blob_store(settings.blob.root)
    client = await connect_temporal(settings.temporal)
    launcher = TemporalLauncher(
        client,
        settings.temporal.task_queue,
        local_activities=settings.temporal.max_cached_workflows > 0,
    )
    schedules = TemporalSchedules(client, settings.temporal.task_queue)
    attempts_ready = AttemptsReady()
    attempts_ready.bind(asyncio.get_running_loop())
    # One scheduler per process that creates attempts (worker) or frees capacity (gRPC); in
    # `dev up` both parts share it, so a new attempt is placed and leased without a tick.
    scheduler = Scheduler(
        sessions,
        heartbeat_grace=settings.grpc.heartbeat_grace,
        strategy=settings.placement.strategy,
        reserve_after=settings.scheduler.reserve_after,
        on_assigned=attempts_ready.notify,
        lease_waiting=attempts_ready.lease_waiting,
    )
    tasks: list[asyncio.Task[None]] = []
    grpc_server: grpc.aio.Server | None = None
    api_server: _EmbeddedUvicorn | None = None
    executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="activity")
    worker: WorkerSupervisor | None = None
    worker_metrics: MetricsEndpoint | None = None
    # The worker's activities; the API and the agent service use them too, to start nodes
    # ahead of the workflow (`start_roots`, `start_successors`).
    activities = ExecutionActivities(
        sessions,
        blob_store,
        on_attempt_ready=scheduler.wake,
        on_capacity_freed=scheduler.wake_soon,
        map_chunk=settings.temporal.map_chunk,
        continue_after_events=settings.temporal.continue_after_events,
    )
    # Scheduled launches take the API's launch path (create, then start with the roots).
    schedule_activities = ScheduleActivities(
        sessions,
        blob_store,
        RootsFirstLauncher(launcher, activities.start_roots),
        idempotency_key_ttl=timedelta(seconds=settings.api.idempotency_key_ttl_seconds),
    )
    try:
        if parts.worker:
            worker = WorkerSupervisor(
                lambda: make_worker(
                    client,
                    settings.temporal.task_queue,
                    activities,
                    executor,
                    max_cached_workflows=settings.temporal.max_cached_workflows,
                    schedule_activities=schedule_activities.all(),
                ),
                on_replaced=(
                    partial(restart_running_workflows, client, sessions, launcher)
                    if settings.temporal.sticky_recovery and settings.temporal.max_cached_workflows
                    else None
                ),
            )
            tasks.append(asyncio.create_task(worker.run(), name="temporal-worker"))
            if not parts.api and settings.metrics.worker_port is not None:
                worker_metrics = serve_metrics(
                    settings.metrics.worker_host, settings.metrics.worker_port
                )
        if parts.grpc:
            notifier = FinishNotifier(
                sessions,
                launcher.signal_attempt_finished,
                quiet=activities.quiet_finishes,
                look=launcher.signal_finished_quietly,
            )
            tasks.append(asyncio.create_task(notifier.run(stop), name="finish-notifier"))
            # Preempted attempts reach their workflows at once (else at the loop's next round).
            scheduler.on_preempted = notifier.deliver_soon
            # Webhooks of finished executions, from their outbox (any replica may send).
            sender = NotificationSender.for_settings(sessions, settings)
            tasks.append(asyncio.create_task(sender.run(stop), name="notification-sender"))
            tasks.append(
                asyncio.create_task(
                    watch_cluster_health(
                        sessions,
                        notifier,
                        stop,
                        grace=settings.grpc.heartbeat_grace,
                        reconnect_allowance=timedelta(
                            seconds=settings.grpc.agent_reconnect_allowance_seconds
                        ),
                        interval=settings.grpc.heartbeat_interval_seconds,
                        on_capacity_freed=scheduler.wake_soon,
                    ),
                    name="cluster-health",
                )
            )
            grpc_server = grpc.aio.server(
                interceptors=[InternalErrorInterceptor()], options=server_options()
            )
            agent_pb2_grpc.add_AgentServiceServicer_to_server(
                AgentService(
                    sessions,
                    blob_store,
                    notifier,
                    attempts_ready=attempts_ready,
                    max_lease_wait_seconds=settings.grpc.max_lease_wait_seconds,
                    heartbeat_interval_seconds=settings.grpc.heartbeat_interval_seconds,
                    on_capacity_freed=scheduler.wake_soon,
                    on_attempt_succeeded=activities.start_successors,
                    lockout=settings.grpc.auth_lockout(throttle),
                    secret_box=secret_box,
                ),
                grpc_server,
            )
            address = f"{settings.grpc.host}:{settings.grpc.port}"
            assert agent_security is not None
            if agent_security.add_port(grpc_server, address) == 0:
                raise RuntimeError(f"cannot listen for agents on {address}")
            await grpc_server.start()
            if agent_security.warning:
                log.warning("%s", agent_security.warning)
            log.info("agent gRPC service listening on %s (%s)", address, agent_security.description)
        if parts.worker or parts.grpc:
            tasks.append(asyncio.create_task(scheduler.run(stop), name="scheduler"))
        if parts.api:
            authorizer = Authorizer(engine)
            await asyncio.to_thread(_bootstrap_admin, settings, sessions, authorizer)
            app = create_app(
                settings,
                session_factory=sessions,
                launcher=RootsFirstLauncher(launcher, activities.start_roots),
                blob_store=blob_store,
                authorizer=authorizer,
                throttle_store=throttle,
                schedules=schedules,
                secret_box=secret_box,
            )
            config = uvicorn.Config(
                app,
                host=settings.api.host,
                port=settings.api.port,
                log_level="warning",
                log_config=None,  # uvicorn's records go to our handler: format, redaction
                lifespan="on",
            )
            api_server = _EmbeddedUvicorn(config)
            tasks.append(asyncio.create_task(api_server.serve(), name="rest-api"))
            while not api_server.started:
                if tasks[-1].done():
                    tasks[-1].result()  # re-raise a bind failure
                    raise RuntimeError("REST API stopped during start-up")
                await asyncio.sleep(0.05)
            log.info("REST API listening on http://%s:%s", settings.api.host, settings.api.port)
            tasks.append(
                asyncio.create_task(
                    relaunch_queued_executions(sessions, launcher, stop), name="launch-reconciler"
                )
            )
        if freeze_heap:
            freeze_startup_heap()
        if started is not None:
            started.set()
        stop_wait = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stop_wait, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stop_wait and task.exception():
                raise task.exception()  # type: ignore[misc]
        stop_wait.cancel()
    finally:
        if api_server is not None:
            api_server.should_exit = True
            ENDS.release_all()  # long-polled reads answer now, not when their time is up
        if grpc_server is not None:
            await grpc_server.stop(grace=2)
        if worker is not None:
            await worker.shutdown()
        for task in tasks:
            try:
                await asyncio.wait_for(task, timeout=10)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
            except Exception:  # already reported above or irrelevant during shutdown
                log.debug("part %s ended with an error during shutdown", task.get_name())
        executor.shutdown(wait=False, cancel_futures=True)
        if worker_metrics is not None:
            worker_metrics.stop()
        throttle.close()
        engine.dispose()


def _bootstrap_admin(
    settings: Settings, sessions: sessionmaker[Session], authorizer: Authorizer
) -> None:
    """On first start, create the platform admin (see `ApiSettings.bootstrap_token`)."""
    given = settings.api.bootstrap_token
    token = ensure_platform_admin(
        sessions,
        authorizer,
        tenant=settings.api.default_tenant,
        token=given.get_secret_value() if given is not None else None,
    )
    if token is None or given is not None:
        return
    path = settings.api.bootstrap_token_file
    write_secret_file(path, token)
    log.warning(
        "first start: created the platform admin 'admin'; its token is in %s (readable by "
        'this user only). Log in with `fleetflow login URL --token "$(cat %s)"`, then '
        "delete the file.",
        path,
        path,
    )
