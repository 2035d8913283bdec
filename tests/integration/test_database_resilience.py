"""A real PostgreSQL dropping connections: the pool replaces idle ones before use, a
transaction that loses its connection runs again (`retry_transient`), and the REST API answers
503 + Retry-After, never 500, when a request's transaction is cut off."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from control_plane.api.app import create_app
from control_plane.db.migrate import upgrade_database
from control_plane.db.session import (
    is_transient,
    make_engine,
    make_session_factory,
    retry_transient,
    transaction,
)
from control_plane.settings import DatabaseSettings, Settings
from fleetflow.storage import LocalBlobStore
from tests.integration.auth import admin_client
from tests.integration.test_api import FakeLauncher

pytestmark = pytest.mark.postgres


@pytest.fixture
def engine(postgres_database_factory: Callable[[], str]) -> Iterator[Engine]:
    url = postgres_database_factory()
    upgrade_database(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def terminate_other_backends(engine: Engine) -> int:
    """What a database restart does to the connections of `engine`'s database, from a
    connection of its own."""
    killer = make_engine(engine.url.render_as_string(hide_password=False))
    try:
        with killer.connect() as connection:
            killed = connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
    finally:
        killer.dispose()
    return int(killed)


def test_pooled_connections_cut_while_idle_are_replaced(engine: Engine) -> None:
    sessions = make_session_factory(engine)
    with transaction(sessions) as session:
        session.execute(text("SELECT 1"))
    with engine.connect() as spare, engine.connect():
        spare.execute(text("SELECT 1"))  # two connections idle in the pool afterwards
    assert terminate_other_backends(engine) >= 1
    with transaction(sessions) as session:  # pre-ping: a fresh connection, no error
        assert session.execute(text("SELECT 1")).scalar_one() == 1


def test_a_transaction_cut_off_midway_runs_again(engine: Engine) -> None:
    sessions = make_session_factory(engine)
    killer = make_engine(engine.url.render_as_string(hide_password=False))
    tries = []

    def work() -> int:
        tries.append(1)
        with transaction(sessions) as session:
            pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
            if len(tries) == 1:  # the database drops this connection mid-transaction
                with killer.connect() as other:
                    other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            return int(session.execute(text("SELECT 41 + 1")).scalar_one())

    assert retry_transient(work) == 42
    assert len(tries) == 2
    killer.dispose()


def test_errors_that_are_not_transient_are_not_retried(engine: Engine) -> None:
    sessions = make_session_factory(engine)
    tries = []

    def work() -> None:
        tries.append(1)
        with transaction(sessions) as session:
            session.execute(text("SELECT * FROM no_such_table"))

    with pytest.raises(Exception) as info:
        retry_transient(work)
    assert not is_transient(info.value) and len(tries) == 1


def test_the_api_answers_503_when_its_transaction_is_cut_off(
    engine: Engine, tmp_path: Path
) -> None:
    sessions: sessionmaker[Session] = make_session_factory(engine)
    app: FastAPI = create_app(
        Settings(database=DatabaseSettings(url=str(engine.url))),
        session_factory=sessions,
        launcher=FakeLauncher(),
        blob_store=LocalBlobStore(tmp_path / "blobs"),
    )

    def cut_off() -> None:
        raise OperationalError(
            "SELECT 1", {}, Exception("terminating connection"), connection_invalidated=True
        )

    app.add_api_route("/cut-off", cut_off)
    with admin_client(app, raise_server_exceptions=False) as client:
        response = client.get("/cut-off")
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json() == {"detail": "the database is briefly unavailable: retry"}
        terminate_other_backends(engine)
        assert client.get("/api/v1/executions").status_code == 200  # the pool recovered
