"""Task attempts record the GPU type placement chose for them.

Revision ID: 0002
Revises: 0001
Create Date: 2025-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("task_attempts", sa.Column("gpu_type", sa.String(length=64), nullable=True))


def downgrade() -> None:
    # Batch mode: SQLite before 3.35 cannot drop a column in place.
    with op.batch_alter_table("task_attempts") as batch:
        batch.drop_column("gpu_type")
