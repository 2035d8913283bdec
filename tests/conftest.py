"""Fixtures shared by every test tier: databases on SQLite and PostgreSQL, a sample spec."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.migrate import upgrade_database
from control_plane.db.session import make_engine, make_session_factory
from fleetflow.ir import (
    InputBinding,
    LiteralType,
    Node,
    NodeOutputBinding,
    TaskSpec,
    TypedInterface,
    TypeKind,
    Variable,
    WorkflowSpec,
)
from tests.tiers import load_script, tier_unavailable

if TYPE_CHECKING:  # imported by the fixtures that serve the API, not by every test
    from tests.api_server import ControlPlane, ServedApi


@pytest.fixture
def exchange_dir() -> Iterator[Path]:
    """A directory both the test and its tasks may write: tasks run as users of their own
    (an agent running as root must), who cannot reach pytest's owner-only `tmp_path`."""
    path = Path(tempfile.mkdtemp(prefix="fleetflow-exchange-"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A throw-away PostgreSQL server for the whole session (infra/scripts/postgres.py).

    Skips, loudly, only when PostgreSQL cannot be installed or started on this machine; set
    FLEETFLOW_REQUIRE_POSTGRES=1 (CI) to make that an error instead.
    """
    tooling = load_script("infra/scripts/postgres.py")
    try:
        server = tooling.start_postgres()
    except tooling.PostgresUnavailableError as exc:
        tier_unavailable(
            f"POSTGRESQL TESTS SKIPPED - PostgreSQL is unavailable: {exc}",
            "FLEETFLOW_REQUIRE_POSTGRES",
        )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: Any) -> str:
    """SQLAlchemy URL of the session's (empty, unmigrated) PostgreSQL database."""
    url: str = postgres_server.url()
    return url


@pytest.fixture(scope="session")
def postgres_database_factory(postgres_server: Any) -> Callable[[], str]:
    """Call it to create one more empty (unmigrated) database on the session's server."""

    def create() -> str:
        url: str = postgres_server.create_database(f"test_{uuid.uuid4().hex[:16]}")
        return url

    return create


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database, migrated to the newest revision, for each test and each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fleetflow.db'}"
        upgrade_database(url)
        yield url
        return
    server = request.getfixturevalue("postgres_server")
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = server.create_database(name)
    try:
        upgrade_database(url)
        yield url
    finally:
        server.drop_database(name)


@pytest.fixture
def session_factory(database_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on the fresh, migrated database of `database_url`."""
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def _int() -> LiteralType:
    return LiteralType(kind=TypeKind.INTEGER)


def _float() -> LiteralType:
    return LiteralType(kind=TypeKind.FLOAT)


@pytest.fixture
def workflow_spec() -> WorkflowSpec:
    """A two-task spec, built by hand from the IR: pipeline(n: int, lr: float = 0.1) -> float.

    `prepare(n) -> list[int]` feeds `fit(data, lr) -> float`.
    """
    int_list = LiteralType(kind=TypeKind.LIST, item=_int())
    prepare = TaskSpec(
        name="examples.train.prepare",
        module="examples.train",
        function="prepare",
        interface=TypedInterface(
            inputs=[Variable(name="n", type=_int())],
            outputs=[Variable(name="o0", type=int_list)],
        ),
    )
    fit = TaskSpec(
        name="examples.train.fit",
        module="examples.train",
        function="fit",
        interface=TypedInterface(
            inputs=[Variable(name="data", type=int_list), Variable(name="lr", type=_float())],
            outputs=[Variable(name="o0", type=_float())],
        ),
        retries=2,
    )
    return WorkflowSpec(
        name="examples.train.pipeline",
        module="examples.train",
        function="pipeline",
        interface=TypedInterface(
            inputs=[
                Variable(name="n", type=_int()),
                Variable(name="lr", type=_float(), default=0.1, has_default=True),
            ],
            outputs=[Variable(name="o0", type=_float())],
        ),
        tasks={prepare.name: prepare, fit.name: fit},
        nodes=[
            Node(id="n0", task=prepare.name, inputs={"n": InputBinding(input="n")}),
            Node(
                id="n1",
                task=fit.name,
                inputs={
                    "data": NodeOutputBinding(node_id="n0", output="o0"),
                    "lr": InputBinding(input="lr"),
                },
            ),
        ],
        outputs={"o0": NodeOutputBinding(node_id="n1", output="o0")},
    )


@pytest.fixture(scope="module")
def served_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApi]:
    """The real REST app, built and served once per test module (tests/api_server.py)."""
    from tests.api_server import served_api

    with served_api(tmp_path_factory.mktemp("api")) as served:
        yield served


@pytest.fixture
def control_plane_api(served_api: ServedApi, tmp_path: Path) -> Iterator[ControlPlane]:
    """The real REST API over HTTP, on a fresh SQLite database for each test."""
    from tests.api_server import fresh_control_plane

    home = tmp_path / "control-plane"
    home.mkdir()
    yield from fresh_control_plane(served_api, home)
