"""The real control-plane REST API served in-process on a loopback port, for tests that talk to
it over HTTP as a user does (the `fleetflow` CLI, `fleetflow.Client`).

Nothing here answers for the server: every answer comes from `create_app` on a migrated SQLite
database. `RequestLog` only notes what each request carried (method, path, query, headers), so
a test can also check what the CLI sent, or that a mistake was caught before anything was sent.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from control_plane.api.app import create_app
from control_plane.auth.rbac import Authorizer, Role
from control_plane.db.migrate import upgrade_database
from control_plane.db.repositories import principals as principals_repo
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.session import make_engine, make_session_factory, transaction
from control_plane.settings import DatabaseSettings, Settings
from fleetflow.storage import LocalBlobStore
from tests.integration.auth import admin_token, bearer, principal_token
from tests.polling import wait_until


class UnusedLauncher:
    """For APIs whose tests start no execution: fails loudly if a route tries to."""

    async def start_execution(self, execution_id: str) -> bool:
        raise AssertionError("this test must not launch executions")

    async def cancel_execution(self, execution_id: str) -> None:
        raise AssertionError("this test must not cancel executions")


class _ThreadedUvicorn(uvicorn.Server):
    """uvicorn in a background thread: signals stay with the test process."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextmanager
def serve(app: ASGIApp) -> Iterator[str]:
    """Serve `app` on a free loopback port until the block ends; its URL."""
    server = _ThreadedUvicorn(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()

    def started() -> bool:
        assert thread.is_alive(), "the API's thread ended"
        return bool(server.started)

    wait_until(started, timeout=30, interval=0.01, message="the API to start")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@dataclass(frozen=True)
class Recorded:
    """What one request to the API carried."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names


@dataclass
class RequestLog:
    """An ASGI app that notes each HTTP request, then hands it, untouched, to `app`."""

    app: ASGIApp
    requests: list[Recorded] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
            query = parse_qs(scope["query_string"].decode())
            self.requests.append(Recorded(scope["method"], scope["path"], query, headers))
        await self.app(scope, receive, send)

    def only(self, method: str, path: str) -> Recorded:
        """The one request made to `method path`."""
        matching = [r for r in self.requests if (r.method, r.path) == (method, path)]
        assert len(matching) == 1, f"{method} {path}: {len(matching)} requests in {self.requests}"
        return matching[0]


@dataclass(frozen=True)
class ServedApi:
    """One REST app for a whole test module, served at `url` behind `log`; `template` is a
    database migrated to the newest revision holding only the bootstrap platform admin `admin`
    (token `admin_token`, home tenant "default"), copied for each test."""

    url: str
    app: FastAPI
    log: RequestLog
    template: Path
    admin_token: str


@contextmanager
def served_api(home: Path) -> Iterator[ServedApi]:
    """Build the REST app once (its routes take a while to build) and serve it on a free
    loopback port until the block ends; it starts no execution."""
    template = home / "template.db"
    url = f"sqlite:///{template}"
    upgrade_database(url)
    engine = make_engine(url)  # each test replaces it with its own copy
    app = create_app(
        Settings(database=DatabaseSettings(url=url)),
        session_factory=make_session_factory(engine),
        launcher=UnusedLauncher(),
        blob_store=LocalBlobStore(home / "blobs"),
    )
    admin = admin_token(app)
    engine.dispose()  # its last connection closed, the template's writes are all in its file
    log = RequestLog(app)
    try:
        with serve(log) as served_url:
            yield ServedApi(served_url, app, log, template, admin)
    finally:
        engine.dispose()


@dataclass
class ControlPlane:
    """A fresh control-plane API (its own database) behind `url`, with its platform admin
    `admin` (home tenant "default") and every request it was sent in `log`."""

    url: str
    app: FastAPI
    log: RequestLog
    admin_token: str

    @property
    def sessions(self) -> sessionmaker[Session]:
        factory: sessionmaker[Session] = self.app.state.session_factory
        return factory

    @property
    def requests(self) -> list[Recorded]:
        return self.log.requests

    def only(self, method: str, path: str) -> Recorded:
        return self.log.only(method, path)

    def api(self, method: str, path: str, json: Any = None) -> Any:
        """Call the app as its platform admin, around the request log (set-up and checks, not
        what the test exercises); the answer's JSON, which must be a success."""
        client = TestClient(self.app, headers=bearer(self.admin_token))
        response = client.request(method, path, json=json)
        assert response.is_success, response.text
        return response.json()

    def principal(
        self, name: str, *, tenant: str, role: Role, clusters: tuple[str, ...] = ()
    ) -> str:
        """A user `name` whose home is `tenant` (created if missing), holding `role` there;
        its token."""
        authorizer: Authorizer = self.app.state.authorizer
        return principal_token(
            self.sessions, authorizer, name, tenant=tenant, role=role, clusters=clusters
        )

    def tenants(self, *names: str) -> None:
        """Create the tenants `names` (those missing)."""
        with transaction(self.sessions) as session:
            for name in names:
                get_or_create_tenant(session, name)

    def grant(self, name: str, role: Role, tenant: str) -> None:
        """Grant the principal `name` `role` in `tenant` (`EVERY_TENANT`: in all of them)."""
        with self.sessions() as session:
            principal = principals_repo.get_principal(session, name)
            assert principal is not None, f"no principal {name}"
        authorizer: Authorizer = self.app.state.authorizer
        authorizer.grant(principal.id, role, tenant)


def fresh_control_plane(served: ServedApi, home: Path) -> Iterator[ControlPlane]:
    """Point the served app at a fresh copy of the template database for one test (its
    sessions and the RBAC over it), with an empty request log (a fixture body). Copied, not
    migrated and bootstrapped again: that would take longer than most tests."""
    database = home / "fleetflow.db"
    shutil.copyfile(served.template, database)
    engine = make_engine(f"sqlite:///{database}")
    served.app.state.session_factory = make_session_factory(engine)
    served.app.state.authorizer = Authorizer(engine)
    control_plane = ControlPlane(served.url, served.app, served.log, served.admin_token)
    served.log.requests.clear()
    try:
        yield control_plane
    finally:
        engine.dispose()
