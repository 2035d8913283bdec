"""Executions started by a node of another execution: a reference to a registered workflow.

A node whose task is a `@reference_workflow` stub runs the referenced workflow version as a
child execution (orchestration/workflows.py); the child's row names its parent execution and
the node that started it. NULL, as for every execution created before this revision: a
top-level execution, started by the API.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain SQL, valid on SQLite and PostgreSQL, that needs no reads (renders offline).
    op.execute("ALTER TABLE executions ADD COLUMN parent_execution_id VARCHAR(64)")
    op.execute("ALTER TABLE executions ADD COLUMN parent_node_id VARCHAR(128)")
    op.create_index(
        "ix_executions_parent_execution_id", "executions", ["parent_execution_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_executions_parent_execution_id", table_name="executions")
    # Batch mode, as 0009: SQLite before 3.35 cannot drop a column in place.
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("parent_node_id")
        batch.drop_column("parent_execution_id")
