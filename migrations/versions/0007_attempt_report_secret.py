"""Task attempts keep the SHA-256 of their lease's report secret.

Each lease hands the agent a fresh random secret (`Assignment.report_secret`); the control plane
keeps only its hash, and accepts a status report only with the secret (agent_api/service.py).
Attempts leased before this revision have none (NULL) and keep the older checks, so an upgrade
with attempts in flight loses none of their reports.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain SQL, valid on SQLite and PostgreSQL, that needs no reads: it renders in offline
    # mode. Existing rows get NULL: leased before secrets, they keep the older checks.
    op.execute("ALTER TABLE task_attempts ADD COLUMN report_secret_sha256 VARCHAR(64)")


def downgrade() -> None:
    # Batch mode, as 0002 and 0003: SQLite before 3.35 cannot drop a column in place.
    with op.batch_alter_table("task_attempts") as batch:
        batch.drop_column("report_secret_sha256")
