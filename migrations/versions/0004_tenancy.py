"""Tenancy: principals and API tokens, casbin policies, quotas, cluster grants, audit log;
execution priority and admission; attempts record the resources they hold.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str, *, nullable: bool) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "principals",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=True),
        _timestamp("created_at", nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_index("ix_principals_tenant_id", "principals", ["tenant_id"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("principal_id", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.String(length=128), nullable=False),
        _timestamp("created_at", nullable=False),
        _timestamp("expires_at", nullable=True),
        _timestamp("revoked_at", nullable=True),
        _timestamp("last_used_at", nullable=True),
        sa.ForeignKeyConstraint(["principal_id"], ["principals.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("ix_api_tokens_principal_id", "api_tokens", ["principal_id"])
    op.create_table(
        "casbin_rule",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        *(sa.Column(c, sa.String(length=255), nullable=True) for c in _CASBIN_COLUMNS),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "tenant_quotas",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("gpu", sa.Integer(), nullable=True),
        sa.Column("gpu_per_type", sa.JSON(), nullable=False),
        sa.Column("cpu", sa.Float(), nullable=True),
        sa.Column("memory_bytes", sa.BigInteger(), nullable=True),
        sa.Column("max_running_executions", sa.Integer(), nullable=True),
        sa.Column("max_running_tasks", sa.Integer(), nullable=True),
        _timestamp("updated_at", nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("tenant_id"),
    )
    op.create_table(
        "cluster_grants",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("cluster", sa.String(length=128), nullable=False),
        _timestamp("created_at", nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"]),
        sa.PrimaryKeyConstraint("tenant_id", "cluster"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        _timestamp("at", nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=256), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.add_column(
        "executions", sa.Column("priority", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column("executions", _timestamp("admitted_at", nullable=True))
    op.add_column(
        "task_attempts", sa.Column("gpu", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column("task_attempts", sa.Column("cpu", sa.Float(), nullable=False, server_default="0"))
    op.add_column(
        "task_attempts",
        sa.Column("memory_bytes", sa.BigInteger(), nullable=False, server_default="0"),
    )


_CASBIN_COLUMNS = ("ptype", "v0", "v1", "v2", "v3", "v4", "v5")


def downgrade() -> None:
    with op.batch_alter_table("task_attempts") as batch:
        for column in ("memory_bytes", "cpu", "gpu"):
            batch.drop_column(column)
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("admitted_at")
        batch.drop_column("priority")
    op.drop_index("ix_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("cluster_grants")
    op.drop_table("tenant_quotas")
    op.drop_table("casbin_rule")
    op.drop_index("ix_api_tokens_principal_id", table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_index("ix_principals_tenant_id", table_name="principals")
    op.drop_table("principals")
