"""Waiting attempts are read in creation order from an index.

Placement reads the oldest PENDING attempts (`scheduling/snapshot.py`, at most 500 a pass).
With the status index alone, the database sorts every PENDING row at each pass: with a
10,000-element map queued, that sort was the largest part of a pass. An index on (status,
created_at) hands them over in order and serves every status-only lookup the old one did.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_task_attempts_status_created_at", "task_attempts", ["status", "created_at"])
    op.drop_index("ix_task_attempts_status", table_name="task_attempts")


def downgrade() -> None:
    op.create_index("ix_task_attempts_status", "task_attempts", ["status"])
    op.drop_index("ix_task_attempts_status_created_at", table_name="task_attempts")
