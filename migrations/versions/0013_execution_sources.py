"""Executions started again from another: `relaunched_from` (same inputs, same or latest
version of its workflow) or `recovered_from` (same version and inputs; the nodes that succeeded
in the source are not run again, their outputs are reused). NULL, as for every execution
created before this revision: one launched afresh.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain SQL, valid on SQLite and PostgreSQL, that needs no reads (renders offline).
    op.execute("ALTER TABLE executions ADD COLUMN relaunched_from VARCHAR(64)")
    op.execute("ALTER TABLE executions ADD COLUMN recovered_from VARCHAR(64)")


def downgrade() -> None:
    # Batch mode, as 0009: SQLite before 3.35 cannot drop a column in place.
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("recovered_from")
        batch.drop_column("relaunched_from")
