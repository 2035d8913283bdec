"""Task attempts name the Temporal workflow to tell when they finish.

A map node of more than `map_chunk` elements runs as child workflows of at most that many units
each (orchestration/workflows.py, `MapChunkWorkflow`); each chunk creates its own attempts and
waits for their `attempt_finished` signals, so the finish notifier must signal the chunk, not
the execution's workflow. NULL, as for every attempt created before this revision: the
execution's own workflow, whose id is the execution id.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain SQL, valid on SQLite and PostgreSQL, that needs no reads (renders offline).
    op.execute("ALTER TABLE task_attempts ADD COLUMN workflow_id VARCHAR(400)")


def downgrade() -> None:
    # Batch mode, as 0002 and 0003: SQLite before 3.35 cannot drop a column in place.
    with op.batch_alter_table("task_attempts") as batch:
        batch.drop_column("workflow_id")
