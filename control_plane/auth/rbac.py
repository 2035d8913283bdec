"""Roles and what they allow, enforced by casbin (RBAC with domains: a tenant is a domain).

The model is `rbac_model.conf`; the policies live in the `casbin_rule` table through the
`sqlalchemy-adapter` package. Role permissions (`p` lines) are seeded from `ROLE_PERMISSIONS`
at start-up; role grants (`g` lines) are what admins change at run time. Every check first
compares a cheap fingerprint of the table (row count, highest id) with the one it loaded, so a
grant or revocation made through any control-plane replica applies on the next request, with
no restart and no cache to wait out.

Subjects and roles live in disjoint namespaces in the policy: a principal is `principal:<id>`
(its id, never its name), a role is `role:<name>`. casbin treats a subject equal to a role name
as holding that role, so a user who could name itself `platform-admin` would otherwise become
one; with the prefixes no name a user picks can reach a role's string. Callers pass principal
ids and `Role`s; only this module builds policy strings.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

import casbin
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from sqlalchemy_adapter import Adapter

from control_plane.db.models import CasbinRule
from fleetflow.api_models.tenancy import Role

MODEL_PATH = Path(__file__).with_name("rbac_model.conf")
EVERY_TENANT = "*"


class Obj(StrEnum):
    """What a permission is about. Routes name one of these with an action."""

    WORKFLOWS = "workflows"  # workflow versions and their code bundles
    EXECUTIONS = "executions"  # executions, their uploads, previews and logs
    CLUSTERS = "clusters"  # clusters as a tenant sees them (read only for tenants)
    QUOTA = "quota"  # the tenant's limits and current usage
    USAGE = "usage"  # accounting history and dashboards
    MEMBERS = "members"  # users, service accounts, tokens and roles inside the tenant
    # Webhook delivery logs and the signing key: the tenant's admins only (rules themselves
    # come with launch plans and executions, under their rights).
    NOTIFICATIONS = "notifications"
    SECRETS = "secrets"  # the tenant's secrets: names to read, values to write (never read)
    PLATFORM = "platform"  # tenants, quotas, clusters and grants, the audit log


class Act(StrEnum):
    READ = "read"
    WRITE = "write"


ANY = "*"
_READ_ONLY = (Obj.CLUSTERS, Obj.QUOTA, Obj.USAGE)

ROLE_PERMISSIONS: dict[Role, tuple[tuple[str, str], ...]] = {
    Role.PLATFORM_ADMIN: ((ANY, ANY),),
    Role.TENANT_ADMIN: (
        *(
            (obj.value, ANY)
            for obj in (Obj.WORKFLOWS, Obj.EXECUTIONS, Obj.MEMBERS, Obj.NOTIFICATIONS, Obj.SECRETS)
        ),
        *((obj.value, Act.READ.value) for obj in _READ_ONLY),
    ),
    Role.DEVELOPER: (
        *((obj.value, ANY) for obj in (Obj.WORKFLOWS, Obj.EXECUTIONS, Obj.SECRETS)),
        *((obj.value, Act.READ.value) for obj in (*_READ_ONLY, Obj.MEMBERS)),
    ),
    Role.VIEWER: tuple(
        (obj.value, Act.READ.value)
        for obj in (Obj.WORKFLOWS, Obj.EXECUTIONS, *_READ_ONLY, Obj.MEMBERS, Obj.SECRETS)
    ),
}


_PRINCIPAL = "principal:"
_ROLE = "role:"


def subject_of(principal_id: str) -> str:
    """The policy subject of a principal: its id, in the principals' namespace."""
    return _PRINCIPAL + principal_id


def role_subject(role: Role | str) -> str:
    """The policy string of a role, in the roles' namespace."""
    return _ROLE + str(role)


def _fingerprint(session: Session) -> tuple[int, int]:
    count, highest = session.execute(select(func.count(), func.max(CasbinRule.id))).one()
    return int(count or 0), int(highest or 0)


class Authorizer:
    """Answers "may principal P do ACT on OBJ in tenant T?" and changes role grants.

    Thread-safe: the REST API checks from its worker threads.
    """

    def __init__(self, engine: Engine) -> None:
        # The policy is loaded at the first check, not here: building the API needs no database.
        self._enforcer = casbin.Enforcer(str(MODEL_PATH))
        self._enforcer.set_adapter(Adapter(engine, db_class=CasbinRule, create_table=False))
        self._lock = threading.RLock()
        self._loaded: tuple[int, int] | None = None

    def seed_role_permissions(self) -> None:
        """Make the `p` lines exactly `ROLE_PERMISSIONS` (idempotent; run at start-up)."""
        wanted = {
            (role_subject(role), EVERY_TENANT, obj, act)
            for role, permissions in ROLE_PERMISSIONS.items()
            for obj, act in permissions
        }
        with self._lock:
            self._enforcer.load_policy()
            present = {tuple(rule) for rule in self._enforcer.get_policy()}
            for rule in present - wanted:
                self._enforcer.remove_policy(*rule)
            for rule in sorted(wanted - present):
                self._enforcer.add_policy(*rule)
            self._loaded = None  # reload on the next check

    def refresh(self, session: Session) -> None:
        """Reload the policy if the table changed since it was loaded."""
        seen = _fingerprint(session)
        with self._lock:
            if seen != self._loaded:
                self._enforcer.load_policy()
                self._loaded = seen

    def allowed(self, session: Session, principal_id: str, tenant: str, obj: Obj, act: Act) -> bool:
        self.refresh(session)
        with self._lock:
            return bool(
                self._enforcer.enforce(subject_of(principal_id), tenant, obj.value, act.value)
            )

    def roles(self, session: Session, principal_id: str) -> list[tuple[str, str]]:
        """(role, tenant) pairs granted to the principal; tenant "*" means every tenant."""
        self.refresh(session)
        with self._lock:
            grants = self._enforcer.get_filtered_grouping_policy(0, subject_of(principal_id))
        return sorted(
            (rule[1].removeprefix(_ROLE), rule[2]) for rule in grants if rule[1].startswith(_ROLE)
        )

    def has_any_role_in(self, session: Session, principal_id: str, tenant: str) -> bool:
        return any(dom in (tenant, EVERY_TENANT) for _, dom in self.roles(session, principal_id))

    def principals_with_roles(self, session: Session, tenant: str) -> dict[str, list[str]]:
        """principal id -> roles held in `tenant` itself (not the global ones)."""
        self.refresh(session)
        with self._lock:
            grants = self._enforcer.get_filtered_grouping_policy(2, tenant)
        members: dict[str, list[str]] = {}
        for subject, role, _ in grants:
            if subject.startswith(_PRINCIPAL) and role.startswith(_ROLE):
                members.setdefault(subject.removeprefix(_PRINCIPAL), []).append(
                    role.removeprefix(_ROLE)
                )
        return members

    def grant(self, principal_id: str, role: Role, tenant: str) -> bool:
        """True when the grant is new."""
        return self._change_grant(self._enforcer.add_grouping_policy, principal_id, role, tenant)

    def revoke(self, principal_id: str, role: Role, tenant: str) -> bool:
        """True when there was such a grant."""
        return self._change_grant(self._enforcer.remove_grouping_policy, principal_id, role, tenant)

    def _change_grant(
        self, change: Callable[..., Any], principal_id: str, role: Role, tenant: str
    ) -> bool:
        """Add or remove (`change`) a grant; True when that changed the policy."""
        with self._lock:
            changed = bool(change(subject_of(principal_id), role_subject(role), tenant))
            self._loaded = None
        return changed
