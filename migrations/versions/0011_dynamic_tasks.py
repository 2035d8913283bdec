"""The tasks of dynamic tasks' sub-DAGs that their workflow version's spec does not list.

A `@dynamic` task builds its sub-DAG when it runs; the tasks it calls need not appear in the
workflow's spec. When the control plane accepts a sub-DAG it records those tasks here, by
workflow version, so that placement (resources) and leasing (the assignment) find them.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dynamic_tasks",
        sa.Column("workflow_spec_id", sa.String(length=64), nullable=False),
        sa.Column("task_name", sa.String(length=256), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["workflow_spec_id"], ["workflow_specs.id"]),
        sa.PrimaryKeyConstraint("workflow_spec_id", "task_name"),
    )


def downgrade() -> None:
    op.drop_table("dynamic_tasks")
