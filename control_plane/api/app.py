"""The REST API application factory.

`create_app` receives everything it talks to (database sessions, the execution launcher, the
blob store), so the server, `fleetflow dev up` and the tests assemble it the same way.
"""

from __future__ import annotations

from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, FastAPI
from sqlalchemy.orm import Session, sessionmaker

from control_plane.api.deps import ExecutionLauncher
from control_plane.api.errors import install_error_handlers
from control_plane.api.metrics import install_metrics
from control_plane.api.routes import (
    account,
    admin,
    bundles,
    clusters,
    dashboard,
    logs,
    executions,
    health,
    previews,
    uploads,
    workflows,
)
from control_plane.auth.rbac import Authorizer
from control_plane.settings import Settings
from fleetflow.storage import BlobStore

API_PREFIX = "/api/v1"


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
    """
    app = FastAPI(
        title="Fleetflow control plane",
        version=_package_version(),
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    app.state.session_factory = session_factory
    app.state.launcher = launcher
    app.state.blob_store = blob_store
    app.state.authorizer = authorizer or Authorizer(session_factory.kw["bind"])
    app.state.max_bundle_bytes = max_bundle_bytes
    install_error_handlers(app)
    install_metrics(
        app,
        session_factory,
        heartbeat_interval=timedelta(seconds=settings.grpc.heartbeat_interval_seconds),
        grace=settings.grpc.heartbeat_grace,
        token=settings.metrics.token.get_secret_value() if settings.metrics.token else None,
    )

    app.include_router(health.router)
    app.include_router(dashboard.router)
    api = APIRouter(prefix=API_PREFIX)
    for router in (
        account.router,
        bundles.router,
        uploads.router,
        workflows.router,
        previews.router,
        executions.router,
        logs.router,
        clusters.router,
        clusters.admin_router,
        admin.router,
    ):
        api.include_router(router)
    app.include_router(api)
    return app
