"""Rate limits and brute-force lockouts move into the database, shared by replicas.

Token buckets (`throttle_buckets`) and lockouts (`throttle_lockouts`) keyed by scope and key
(a tenant, a client address); used when `FLEETFLOW_LIMITS_STORE` is `database`, the default on
PostgreSQL (control_plane/auth/throttle_db.py). Nothing to carry over: limits kept in memory
before the upgrade start afresh, as they did on every restart.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # No index on the time columns: one would make every take (an UPDATE of updated_at) a
    # non-HOT update on PostgreSQL; the occasional purge scans its scope instead.
    op.create_table(
        "throttle_buckets",
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key"),
    )
    op.create_table(
        "throttle_lockouts",
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("locked_until", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key"),
    )


def downgrade() -> None:
    op.drop_table("throttle_lockouts")
    op.drop_table("throttle_buckets")
