"""Artifact lineage: each blob a task attempt produced (or an execution was given), who
produced it, and the blobs it was computed from.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "artifacts",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("uri", sa.String(length=1024), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("execution_id", sa.String(length=64), nullable=False),
        sa.Column("node_id", sa.String(length=256), nullable=False),
        sa.Column("attempt_id", sa.String(length=64), nullable=True),
        sa.Column("element_index", sa.Integer(), nullable=True),
        sa.Column("task_name", sa.String(length=256), nullable=True),
        sa.Column("task_digest", sa.String(length=64), nullable=True),
        sa.Column("output_name", sa.String(length=512), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "uri"),
    )
    op.create_index("ix_artifacts_execution_id", "artifacts", ["execution_id"], unique=False)
    op.create_table(
        "artifact_inputs",
        sa.Column("artifact_id", sa.String(length=64), nullable=False),
        sa.Column("input_name", sa.String(length=512), nullable=False),
        sa.Column("input_uri", sa.String(length=1024), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["artifact_id"], ["artifacts.id"]),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("artifact_id", "input_name", "input_uri"),
    )
    op.create_index(
        "ix_artifact_inputs_tenant_id_input_uri",
        "artifact_inputs",
        ["tenant_id", "input_uri"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_artifact_inputs_tenant_id_input_uri", table_name="artifact_inputs")
    op.drop_table("artifact_inputs")
    op.drop_index("ix_artifacts_execution_id", table_name="artifacts")
    op.drop_table("artifacts")
