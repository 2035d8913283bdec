"""Indexes for the control plane's hot reads when an execution has thousands of attempts.

Each placement pass and each outbox round read task attempts; with only single-column indexes
their cost grew with every attempt ever run (found in the 10,000-element map run):
- the oldest PENDING attempts (`scheduling/snapshot.py`, at most 500 a pass) were sorted at
  every pass: (status, created_at) hands them over in order, and serves every status-only
  lookup the status index did;
- what finished on a cluster since its last heartbeat scanned every attempt the cluster ever
  ran: (cluster_id, finished_at) reads the recent ones, and serves cluster-only lookups;
- the finish notifier's unsignalled attempts scanned the table: a partial index holds only
  the finished ones not yet signalled.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


UNSIGNALLED = "signalled_at IS NULL AND finished_at IS NOT NULL"


def upgrade() -> None:
    op.create_index("ix_task_attempts_status_created_at", "task_attempts", ["status", "created_at"])
    op.drop_index("ix_task_attempts_status", table_name="task_attempts")
    op.create_index(
        "ix_task_attempts_cluster_id_finished_at", "task_attempts", ["cluster_id", "finished_at"]
    )
    op.drop_index("ix_task_attempts_cluster_id", table_name="task_attempts")
    op.create_index(
        "ix_task_attempts_unsignalled",
        "task_attempts",
        ["finished_at"],
        sqlite_where=sa.text(UNSIGNALLED),
        postgresql_where=sa.text(UNSIGNALLED),
    )


def downgrade() -> None:
    op.drop_index("ix_task_attempts_unsignalled", table_name="task_attempts")
    op.create_index("ix_task_attempts_cluster_id", "task_attempts", ["cluster_id"])
    op.drop_index("ix_task_attempts_cluster_id_finished_at", table_name="task_attempts")
    op.create_index("ix_task_attempts_status", "task_attempts", ["status"])
    op.drop_index("ix_task_attempts_status_created_at", table_name="task_attempts")
