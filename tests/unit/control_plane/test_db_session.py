"""The engine settings `control_plane.db.session.make_engine` chooses for SQLite, the embedded
stack's database: what each setting promises, asserted on a real database file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from control_plane.db.session import make_engine

SQLITE_SYNCHRONOUS_NORMAL = 1


def test_sqlite_runs_in_wal_mode_syncing_at_checkpoints_with_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with engine.connect() as connection:
        assert connection.scalar(text("PRAGMA journal_mode")) == "wal"
        assert connection.scalar(text("PRAGMA synchronous")) == SQLITE_SYNCHRONOUS_NORMAL
        assert connection.scalar(text("PRAGMA foreign_keys")) == 1
    # A file handle cannot be dropped on the way: no ping statement before every checkout.
    assert engine.pool._pre_ping is False


def test_a_commit_survives_the_process_being_killed_right_after_it(tmp_path: Path) -> None:
    """What `synchronous=NORMAL` keeps: a commit is in the WAL when it returns, so only the OS
    or the power failing can lose it, never a killed process (the crash tests kill ours)."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    with make_engine(url).begin() as connection:
        connection.execute(text("CREATE TABLE marks (n INTEGER)"))
    pid = os.fork()
    if pid == 0:  # the child commits, then dies by SIGKILL with nothing flushed or closed
        try:
            with make_engine(url).begin() as connection:
                connection.execute(text("INSERT INTO marks VALUES (42)"))
        finally:
            os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL

    with make_engine(url).connect() as connection:
        assert connection.scalar(text("SELECT n FROM marks")) == 42


def test_other_databases_keep_the_ping_that_finds_a_dropped_connection() -> None:
    engine = make_engine("postgresql+psycopg://user@127.0.0.1:1/none")
    assert engine.pool._pre_ping is True
    assert (
        make_engine("postgresql+psycopg://user@127.0.0.1:1/none", pre_ping=False).pool._pre_ping
        is False
    )


def test_the_session_factory_configures_every_model_before_any_query_runs() -> None:
    """SQLAlchemy configures mappers at the first query unless told earlier. A Temporal activity
    cancelled during that first query (its thread interrupted by an asynchronous exception)
    left the registry failed, and every later query of the worker raised `Cancelled`. The
    factory configures them up front; a fresh interpreter, where nothing queried yet, shows it."""
    probe = (
        "from control_plane.db.models import Execution\n"
        "from control_plane.db.session import make_engine, make_session_factory\n"
        "before = Execution.__mapper__.configured\n"
        "make_session_factory(make_engine('sqlite://'))\n"
        "print(before, Execution.__mapper__.configured)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split() == ["False", "True"]
