"""Role grants name principals by id and roles by name in disjoint namespaces.

Before, a grant read `g, <principal name>, <role>, <tenant>` and casbin treated a subject equal
to a role name as holding that role: a user named `platform-admin` was one. Now a grant reads
`g, principal:<id>, role:<name>, <tenant>` and a permission `p, role:<name>, …`
(control_plane/auth/rbac.py). Grants of names that no longer exist are dropped.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Plain SQL, valid on SQLite and PostgreSQL, that needs no reads: it renders in offline mode.


def upgrade() -> None:
    op.execute(
        "UPDATE casbin_rule SET v0 = 'role:' || v0 WHERE ptype = 'p' AND v0 NOT LIKE 'role:%'"
    )
    op.execute(
        "UPDATE casbin_rule SET "
        "v0 = 'principal:' || (SELECT p.id FROM principals p WHERE p.name = casbin_rule.v0), "
        "v1 = 'role:' || v1 "
        "WHERE ptype = 'g' AND v0 NOT LIKE 'principal:%' "
        "AND v0 IN (SELECT name FROM principals)"
    )
    op.execute("DELETE FROM casbin_rule WHERE ptype = 'g' AND v0 NOT LIKE 'principal:%'")


def downgrade() -> None:
    op.execute("UPDATE casbin_rule SET v0 = substr(v0, 6) WHERE ptype = 'p' AND v0 LIKE 'role:%'")
    op.execute(
        "UPDATE casbin_rule SET "
        "v0 = (SELECT p.name FROM principals p WHERE 'principal:' || p.id = casbin_rule.v0), "
        "v1 = substr(v1, 6) "
        "WHERE ptype = 'g' AND v0 LIKE 'principal:%' "
        "AND v0 IN (SELECT 'principal:' || id FROM principals)"
    )
    op.execute("DELETE FROM casbin_rule WHERE ptype = 'g' AND v0 LIKE 'principal:%'")
