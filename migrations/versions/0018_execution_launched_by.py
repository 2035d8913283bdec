"""Executions: who launched them (`executions.launched_by`, a principal's name), so that the
API and the console filter by it. NULL for every execution created before this revision, and
for those a schedule or a parent execution starts.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain SQL, valid on SQLite and PostgreSQL, that needs no reads (renders offline).
    op.execute("ALTER TABLE executions ADD COLUMN launched_by VARCHAR(128)")
    op.execute("CREATE INDEX ix_executions_launched_by ON executions (launched_by)")


def downgrade() -> None:
    op.drop_index("ix_executions_launched_by", table_name="executions")
    # Batch mode, as 0009: SQLite before 3.35 cannot drop a column in place.
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("launched_by")
