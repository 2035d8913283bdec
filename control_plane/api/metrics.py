"""`/metrics` on the REST API: request latency as it happens, platform state at scrape time.

`RequestMetricsMiddleware` times every HTTP request and labels it with the *route template*
(`/api/v1/executions/{execution_id}`, not the URL asked for), so the number of series stays
bounded whatever clients send; requests no route matched share the route label `unmatched`.

`PlatformStateCollector` answers each scrape from the database with cheap grouped counts:
attempts waiting to be dispatched (`fleetflow_queue_depth`, PENDING: not placed yet; ASSIGNED:
placed, waiting for its agent to lease it), clusters by status (`fleetflow_clusters`, the
same online/degraded/offline rule as `GET /api/v1/clusters`), and per tenant what it holds
against its quota (`fleetflow_tenant_*`).

Per-tenant series name tenants, so `/metrics` can be closed with a bearer token of its own
(`FLEETFLOW_METRICS_TOKEN`, for Prometheus' `authorization` setting); API tokens do not open it.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Iterable
from datetime import timedelta

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.routing import replace_params
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.db.models import Cluster, Execution, TaskAttempt, Tenant, TenantQuota
from control_plane.lifecycle.clusters import cluster_status
from control_plane.metrics import API_REQUEST_SECONDS
from control_plane.placement.admission import Load
from control_plane.quota import tenant_loads
from fleetflow.api_models.clusters import ClusterStatus
from fleetflow.states import AttemptState

logger = logging.getLogger(__name__)

UNMATCHED_ROUTE = "unmatched"
_QUEUED_STATES = (AttemptState.PENDING, AttemptState.ASSIGNED)

router = APIRouter(tags=["health"])


class RequestMetricsMiddleware:
    """Observes `fleetflow_api_request_duration_seconds` for every HTTP request (pure ASGI, so
    streamed bodies are timed to their end and nothing is buffered)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app raises before answering

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            API_REQUEST_SECONDS.labels(scope["method"], route_template(scope), str(status)).observe(
                time.perf_counter() - started
            )


def route_template(scope: Scope) -> str:
    """The path template of the route that handled the request, prefixes included
    (`/api/v1/executions/{execution_id}`), or `unmatched`.

    The router leaves the matched route in the (shared) scope. FastAPI keeps an included
    router's routes relative to it (`/executions/{execution_id}`), so the prefix is taken from
    the request's path: what precedes the part the route matched. Prefixes hold no parameters
    here, so that is a fixed string.
    """
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(template, str) or not template:
        return UNMATCHED_ROUTE
    try:
        matched, _ = replace_params(
            template, getattr(route, "param_convertors", {}), dict(scope.get("path_params", {}))
        )
    except (KeyError, TypeError, ValueError):
        return template
    path: str = scope.get("path", "")
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]
    if path.endswith(matched):
        return path[: len(path) - len(matched)] + template
    return template


class PlatformStateCollector(Collector):
    """Queue depth and clusters by status, read from the database at each scrape."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        heartbeat_interval: timedelta,
        grace: timedelta,
    ) -> None:
        self._sessions = session_factory
        self._heartbeat_interval = heartbeat_interval
        self._grace = grace

    def describe(self) -> Iterable[Metric]:
        return [self._queue_depth({}), self._clusters({}), *_tenant_families().values()]

    def collect(self) -> Iterable[Metric]:
        try:
            with self._sessions() as session:
                queued = dict(
                    session.execute(
                        select(TaskAttempt.status, func.count())
                        .where(TaskAttempt.status.in_([s.value for s in _QUEUED_STATES]))
                        .group_by(TaskAttempt.status)
                    ).all()
                )
                heartbeats = session.scalars(select(Cluster.last_heartbeat_at)).all()
                tenants = _tenant_metrics(session)
        except Exception:
            # The rest of the scrape (latencies, counters, the process) is still worth having.
            logger.warning("metrics: cannot read queue depth and clusters", exc_info=True)
            return []
        by_status = dict.fromkeys(ClusterStatus, 0)
        for last_heartbeat_at in heartbeats:
            status = cluster_status(
                last_heartbeat_at, heartbeat_interval=self._heartbeat_interval, grace=self._grace
            )
            by_status[status] += 1
        return [self._queue_depth(queued), self._clusters(by_status), *tenants]

    @staticmethod
    def _queue_depth(counts: dict[str, int]) -> GaugeMetricFamily:
        return _by_status(
            "fleetflow_queue_depth",
            "Task attempts waiting to run: pending (not placed on a cluster yet) and assigned "
            "(placed, not leased by the cluster's agent yet).",
            {state.value.lower(): counts.get(state.value, 0) for state in _QUEUED_STATES},
        )

    @staticmethod
    def _clusters(counts: dict[ClusterStatus, int]) -> GaugeMetricFamily:
        return _by_status(
            "fleetflow_clusters",
            "Clusters by the status of their agent (online, degraded, offline), judged from "
            "the age of its last heartbeat.",
            {status.value: counts.get(status, 0) for status in ClusterStatus},
        )


def _by_status(name: str, help_text: str, counts: dict[str, int]) -> GaugeMetricFamily:
    """The gauge `name` with one sample per status (label `status`), in `counts`' order."""
    family = GaugeMetricFamily(name, help_text, labels=["status"])
    for status, count in counts.items():
        family.add_metric([status], count)
    return family


def _tenant_families() -> dict[str, GaugeMetricFamily]:
    def gauge(name: str, help_text: str, *labels: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"fleetflow_tenant_{name}", help_text, labels=["tenant", *labels])

    return {
        "gpus": gauge("gpus_in_use", "GPUs held by the tenant's active attempts.", "gpu_type"),
        "gpu_quota": gauge("gpu_quota", "The tenant's GPU quota (absent: unlimited)."),
        "cpu": gauge("cpu_in_use", "CPU cores held by the tenant's active attempts."),
        "memory": gauge("memory_bytes_in_use", "Memory held by the tenant's active attempts."),
        "tasks": gauge("running_tasks", "The tenant's active attempts."),
        "executions": gauge("running_executions", "The tenant's admitted, unfinished executions."),
        "waiting": gauge("waiting_for_quota", "The tenant's attempts waiting for quota."),
    }


def _tenant_metrics(session: Session) -> list[GaugeMetricFamily]:
    families = _tenant_families()
    names = dict(session.execute(select(Tenant.id, Tenant.name)).all())
    loads = tenant_loads(session)
    quotas = {q.tenant_id: q for q in session.scalars(select(TenantQuota))}
    waiting = dict(
        session.execute(
            select(Execution.tenant_id, func.count())
            .join(TaskAttempt, TaskAttempt.execution_id == Execution.id)
            .where(
                TaskAttempt.status == AttemptState.PENDING.value,
                TaskAttempt.pending_reason.like("quota:%"),
            )
            .group_by(Execution.tenant_id)
        ).all()
    )
    for tenant_id, name in sorted(names.items(), key=lambda kv: kv[1]):
        load = loads.get(tenant_id, Load())
        for gpu_type, count in sorted(load.gpu_per_type.items()):
            families["gpus"].add_metric([name, gpu_type], count)
        quota = quotas.get(tenant_id)
        if quota is not None and quota.gpu is not None:
            families["gpu_quota"].add_metric([name], quota.gpu)
        families["cpu"].add_metric([name], load.cpu)
        families["memory"].add_metric([name], load.memory_bytes)
        families["tasks"].add_metric([name], load.running_tasks)
        families["executions"].add_metric([name], load.running_executions)
        families["waiting"].add_metric([name], waiting.get(tenant_id, 0))
    return list(families.values())


@router.get("/metrics", response_class=Response, include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus text exposition: this process's metrics, then the platform's state."""
    expected: str | None = request.app.state.metrics_token
    if expected is not None:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
            return Response(
                "metrics need the bearer token set by FLEETFLOW_METRICS_TOKEN\n",
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
    state_registry: CollectorRegistry = request.app.state.metrics_registry
    body = generate_latest(REGISTRY) + generate_latest(state_registry)
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)


def install_metrics(
    app: FastAPI,
    session_factory: sessionmaker[Session],
    *,
    heartbeat_interval: timedelta,
    grace: timedelta,
    token: str | None = None,
) -> None:
    """Time every request and serve `/metrics` (behind `token` when one is given)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        PlatformStateCollector(session_factory, heartbeat_interval=heartbeat_interval, grace=grace)
    )
    app.state.metrics_registry = registry
    app.state.metrics_token = token
    app.add_middleware(RequestMetricsMiddleware)
    app.include_router(router)
