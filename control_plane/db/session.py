"""Engine and session factory. SQLite (embedded default) and PostgreSQL (production).

Connections are pooled and pre-pinged, so a connection the database dropped while idle is
replaced before use. A transaction that loses its connection, or that PostgreSQL aborts as a
serialization failure or deadlock, is safe to run again from the start: `retry_transient` does
that for units of work that are whole transactions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, configure_mappers, sessionmaker
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# PostgreSQL SQLSTATEs after which the same transaction may succeed when run again:
# serialization failure, deadlock, the server shutting down or restarting, connection errors.
_TRANSIENT_SQLSTATES = frozenset(
    {"40001", "40P01", "57P01", "57P02", "57P03", "08000", "08001", "08003", "08004", "08006"}
)


def make_engine(url: str, *, pre_ping: bool = True) -> Engine:
    """Create an engine with per-backend settings that matter for concurrency.

    `pre_ping=False` saves a round trip per checkout, for callers that run one statement at a
    time and run it again on a dropped connection themselves (the throttle store)."""
    sqlite = url.startswith("sqlite")
    # A SQLite connection is a file handle: nothing on the way can drop it, so a ping per
    # checkout would only cost a statement.
    kwargs: dict[str, Any] = {"pool_pre_ping": pre_ping and not sqlite}
    if sqlite:
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    engine = create_engine(url, **kwargs)
    if sqlite:

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL syncs at checkpoints, not at every commit: a commit survives
            # any crash of a process (the crash tests kill them), and only the OS or the power
            # failing may lose the last ones. SQLite is the embedded stack's database, whose
            # Temporal test server keeps its state in memory anyway; production runs PostgreSQL.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory whose models are configured now, in the caller's thread.

    SQLAlchemy configures mappers lazily, at the first query. A Temporal activity cancelled in
    that moment (its thread interrupted by an asynchronous exception) would leave the registry
    failed for the rest of the process, so that every later query raises: configuring here,
    before any activity runs, keeps a cancellation from breaking a process's models."""
    from control_plane.db import models  # noqa: F401  (every model registered before configuring)

    configure_mappers()
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on error."""
    with factory() as session, session.begin():
        yield session


def is_transient(exc: BaseException) -> bool:
    """Whether running the failed transaction again from the start may succeed."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if code in _TRANSIENT_SQLSTATES:
        return True
    return "database is locked" in str(exc.orig)  # SQLite past its busy timeout


def retry_transient(work: Callable[[], T], *, attempts: int = 5) -> T:
    """Run `work` (a whole transaction: it opens and commits its own session), again from
    the start after a transient database error, up to `attempts` times with backoff."""
    retrying = Retrying(
        retry=retry_if_exception(is_transient),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential_jitter(multiplier=0.05, max=2.0, jitter=0.05),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    )
    return retrying(work)
