"""Cohorts: tenants lending each other GPU quota; attempts running on borrowed quota.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cohorts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "cohort_members",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("cohort_id", sa.String(length=64), nullable=False),
        sa.Column("shares", sa.JSON(), nullable=False),
        sa.Column("preempt_within_tenant", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.ForeignKeyConstraint(["cohort_id"], ["cohorts.id"]),
        sa.PrimaryKeyConstraint("tenant_id"),
    )
    op.create_index("ix_cohort_members_cohort_id", "cohort_members", ["cohort_id"], unique=False)
    with op.batch_alter_table("task_attempts") as batch:
        batch.add_column(
            sa.Column("borrowed_gpus", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("task_attempts") as batch:
        batch.drop_column("borrowed_gpus")
    op.drop_index("ix_cohort_members_cohort_id", table_name="cohort_members")
    op.drop_table("cohort_members")
    op.drop_table("cohorts")
