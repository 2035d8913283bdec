"""`INSERT … ON CONFLICT DO NOTHING` for the two supported backends.

Get-or-create under concurrency without savepoints: the losing writer's insert is a no-op and
it reads the winner's row afterwards.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Executable
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_ignoring_conflicts(
    session: Session, model: type[Any], values: dict[str, Any] | list[dict[str, Any]]
) -> None:
    """Insert one row (or each of a list, in one statement executed for all of them) unless
    it violates a unique constraint; then do nothing for that row."""
    dialect = session.get_bind().dialect.name
    statement: Executable
    if dialect == "postgresql":
        statement = postgresql.insert(model).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(model).on_conflict_do_nothing()
    else:
        raise ValueError(f"unsupported database backend {dialect!r}: use SQLite or PostgreSQL")
    if isinstance(values, dict):
        session.execute(statement.values(**values))
    elif values:
        session.execute(statement, values)
