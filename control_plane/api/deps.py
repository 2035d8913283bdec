"""Request dependencies, by type: routes declare `session: SessionDep`, `launcher: LauncherDep`;
who calls, and in which tenant, comes from `control_plane.api.auth`.

Everything a route needs comes from `app.state`, filled by `create_app`, so tests and the
server wire real or test implementations the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.orm import Session, sessionmaker

from control_plane.services.executions import ExecutionLauncher
from control_plane.settings import Settings
from fleetflow.storage import BlobStore


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """One session per request; work that is not committed by the route is rolled back."""
    factory: sessionmaker[Session] = request.app.state.session_factory
    with factory() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]


async def get_launcher(request: Request) -> ExecutionLauncher:
    launcher: ExecutionLauncher = request.app.state.launcher
    return launcher


async def get_blob_store(request: Request) -> BlobStore:
    blob_store: BlobStore = request.app.state.blob_store
    return blob_store


LauncherDep = Annotated[ExecutionLauncher, Depends(get_launcher)]
BlobStoreDep = Annotated[BlobStore, Depends(get_blob_store)]


# Pagination: past this offset a list is not paged through by people; bounding it keeps the
# value within every database's integer range (an unbounded one overflowed SQLite's).
MAX_OFFSET = 1_000_000
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="rows to skip")]
