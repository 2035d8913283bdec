"""The REST API application factory.

`create_app` receives everything it talks to (database sessions, the execution launcher, the
blob store), so the server, `fleetflow dev up` and the tests assemble it the same way.
"""

from __future__ import annotations

from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, FastAPI
from sqlalchemy.orm import Session, sessionmaker

from control_plane.api.console import admin as console_admin
from control_plane.api.console import catalog as console_catalog
from control_plane.api.console import launch as console_launch
from control_plane.api.console import pages as console_pages
from control_plane.api.docs_pages import install_docs_pages
from control_plane.api.errors import install_error_handlers
from control_plane.api.limits import BodySizeLimit, RefuseNul, RequestGuard
from control_plane.api.metrics import install_metrics
from control_plane.api.routes import (
    account,
    admin,
    artifacts,
    bundles,
    clusters,
    cohorts,
    dashboard,
    executions,
    health,
    launch_plans,
    logs,
    notifications,
    previews,
    secrets,
    uploads,
    workflows,
)
from control_plane.auth.rbac import Authorizer
from control_plane.auth.throttle import ThrottleStore
from control_plane.auth.throttle_db import open_throttle_store
from control_plane.schemas.common import ErrorResponse
from control_plane.secrets_crypto import SecretBox
from control_plane.services.executions import ExecutionLauncher
from control_plane.services.schedules import TemporalSchedules
from control_plane.settings import Settings
from fleetflow.storage import BlobStore

API_PREFIX = "/api/v1"

# Answers any API route may give, in the one error shape (control_plane/api/errors.py). Listed
# on every route so the published OpenAPI document describes them, and FastAPI's own 422
# schema (a list under "detail"), which the API never sends, is left out.
COMMON_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorResponse, "description": "no valid API token"},
    403: {"model": ErrorResponse, "description": "the caller's roles do not allow it"},
    404: {"model": ErrorResponse, "description": "not found (or another tenant's)"},
    413: {"model": ErrorResponse, "description": "request body too large"},
    422: {"model": ErrorResponse, "description": "invalid request"},
    429: {"model": ErrorResponse, "description": "rate limited; see Retry-After"},
}


def _package_version() -> str:
    try:
        return version("fleetflow")
    except PackageNotFoundError:
        return "0+unknown"


def create_app(
    settings: Settings,
    *,
    session_factory: sessionmaker[Session],
    launcher: ExecutionLauncher,
    blob_store: BlobStore,
    authorizer: Authorizer | None = None,
    max_bundle_bytes: int = bundles.DEFAULT_MAX_BUNDLE_BYTES,
    throttle_store: ThrottleStore | None = None,
    schedules: TemporalSchedules | None = None,
    secret_box: SecretBox | None = None,
) -> FastAPI:
    """Build the API application.

    Args:
        settings: control-plane settings.
        session_factory: sessions on a database migrated to the newest revision.
        launcher: starts the orchestration of newly created executions.
        blob_store: where code bundles are stored.
        authorizer: RBAC over the same database (default: a new one; the role permissions
            are seeded by `bootstrap.ensure_platform_admin` at start-up).
        max_bundle_bytes: largest code bundle accepted (413 above).
        throttle_store: where rate limits and lockouts are kept (default: the one
            `settings.limits_store` names, on the session factory's database).
        schedules: runs launch plans' schedules (None: activating one answers 503).
        secret_box: the keys tenant secrets are encrypted under (default: read from
            `settings.secrets` at the first use).
    """
    app = FastAPI(
        title="Fleetflow control plane",
        version=_package_version(),
        openapi_url="/openapi.json",
        # FastAPI's own pages load Swagger UI and ReDoc from CDNs: ours serve them locally.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.session_factory = session_factory
    app.state.launcher = launcher
    app.state.blob_store = blob_store
    app.state.schedules = schedules
    app.state.secret_box = secret_box
    app.state.authorizer = authorizer or Authorizer(session_factory.kw["bind"])
    app.state.max_bundle_bytes = max_bundle_bytes
    if throttle_store is None:
        url = session_factory.kw["bind"].url.render_as_string(hide_password=False)
        throttle_store = open_throttle_store(settings.limits_store, url)
    app.state.request_guard = RequestGuard(
        rate_per_second=settings.api.rate_limit_per_second,
        burst=settings.api.rate_limit_burst,
        auth_failures_burst=settings.api.auth_failures_burst,
        auth_failures_per_second=settings.api.auth_failures_per_second,
        auth_lockout_seconds=settings.api.auth_lockout_seconds,
        store=throttle_store,
    )
    install_error_handlers(app)
    app.add_middleware(
        BodySizeLimit,
        limit=settings.api.max_json_body_bytes,
        exempt_prefixes=(f"{API_PREFIX}/bundles/", f"{API_PREFIX}/uploads/"),
    )
    app.add_middleware(RefuseNul)
    install_metrics(
        app,
        session_factory,
        heartbeat_interval=timedelta(seconds=settings.grpc.heartbeat_interval_seconds),
        grace=settings.grpc.heartbeat_grace,
        token=settings.metrics.token.get_secret_value() if settings.metrics.token else None,
    )

    app.include_router(health.router)
    app.include_router(dashboard.router)
    app.include_router(console_pages.router)
    app.include_router(console_catalog.router)
    app.include_router(console_launch.router)
    app.include_router(console_admin.router)
    install_docs_pages(app)
    api = APIRouter(prefix=API_PREFIX, responses=COMMON_ERRORS)
    for router in (
        account.router,
        bundles.router,
        uploads.router,
        workflows.router,
        previews.router,
        executions.router,
        launch_plans.router,
        secrets.router,
        secrets.admin_router,
        logs.router,
        notifications.router,
        clusters.router,
        clusters.admin_router,
        admin.router,
        cohorts.router,
        cohorts.usage_router,
        artifacts.router,
        artifacts.executions_router,
    ):
        api.include_router(router)
    app.include_router(api)
    return app
