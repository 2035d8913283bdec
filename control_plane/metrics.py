"""Prometheus metrics the control plane's processes count as things happen.

Counted here, in the process where the event happens: API request latency (the REST API's
middleware, `control_plane/api/metrics.py`), dispatch latency (the agent service's lease path)
and finished executions (`move_execution`, after the transaction commits). What is a matter of
state rather than events — queue depth, clusters by status — is read from the database when
Prometheus scrapes (`control_plane/api/metrics.py`), so every replica reports the same truth.

The metrics live in prometheus_client's default registry with the process and runtime
collectors. The REST API serves them at `/metrics`; a worker running on its own process serves
them on `FLEETFLOW_METRICS_WORKER_PORT` when that is set (`serve_metrics`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import Counter, Histogram, start_http_server
from sqlalchemy.orm import Session

from control_plane.on_commit import on_commit
from fleetflow.states import ExecutionState

log = logging.getLogger(__name__)

API_REQUEST_SECONDS = Histogram(
    "fleetflow_api_request_duration_seconds",
    "REST API requests by method, route template and status code, from the first byte in to "
    "the last byte out.",
    ["method", "route", "status"],
)
DISPATCH_SECONDS = Histogram(
    "fleetflow_dispatch_latency_seconds",
    "Time from a task attempt's creation to its lease by an agent: placement plus the wait "
    "for a free slot on an agent.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
EXECUTIONS_FINISHED = Counter(
    "fleetflow_executions_finished",
    "Executions that reached a final state, by that state.",
    ["status"],
)
for _state in ExecutionState:
    if _state.terminal:
        EXECUTIONS_FINISHED.labels(_state.value.lower())


def observe_dispatch(created_at: datetime, leased_at: datetime) -> None:
    """Record one attempt's wait from creation to lease."""
    DISPATCH_SECONDS.observe(max((leased_at - created_at).total_seconds(), 0.0))


def count_execution_finished(session: Session, status: ExecutionState) -> None:
    """Count one execution reaching `status` once `session`'s transaction commits (nothing
    if it rolls back, so an activity retried after a failed commit counts once)."""
    on_commit(session, EXECUTIONS_FINISHED.labels(status.value.lower()).inc)


@dataclass(frozen=True)
class MetricsEndpoint:
    """A running `/metrics` endpoint of its own (`serve_metrics`)."""

    port: int
    stop: Callable[[], None]


def serve_metrics(host: str, port: int) -> MetricsEndpoint:
    """Serve this process's metrics at `http://host:port/metrics` from a thread, for a process
    without the REST API (port 0: any free one)."""
    server, thread = start_http_server(port, addr=host)
    log.info("metrics at http://%s:%s/metrics", host, server.server_port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return MetricsEndpoint(server.server_port, stop)
