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
    bundles,
    clusters,
    executions,
    health,
    previews,
    uploads,
    workflows,
)
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
    max_bundle_bytes: int = bundles.DEFAULT_MAX_BUNDLE_BYTES,
) -> FastAPI:
    """Build the API application.

    Args:
        settings: control-plane settings (`settings.api.default_tenant` until auth exists).
        session_factory: sessions on a database migrated to the newest revision.
        launcher: starts the orchestration of newly created executions.
        blob_store: where code bundles are stored.
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
    app.state.max_bundle_bytes = max_bundle_bytes
    install_error_handlers(app)
    install_metrics(
        app,
        session_factory,
        heartbeat_interval=timedelta(seconds=settings.grpc.heartbeat_interval_seconds),
        grace=settings.grpc.heartbeat_grace,
    )

    app.include_router(health.router)
    api = APIRouter(prefix=API_PREFIX)
    for router in (
        bundles.router,
        uploads.router,
        workflows.router,
        previews.router,
        executions.router,
        clusters.router,
        # Admin routes share the /api/v1/admin prefix, to be protected as one by RBAC.
        clusters.admin_router,
    ):
        api.include_router(router)
    app.include_router(api)
    return app
