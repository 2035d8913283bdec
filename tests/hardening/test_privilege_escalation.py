"""Privilege escalation through names (issue 13, finding 1).

casbin treats a subject equal to a role's name as holding that role, so a tenant admin who
created a user named `platform-admin` made a platform admin. The policy now keeps subjects
(`principal:<id>`) and roles (`role:<name>`) apart, and role-like names are refused anyway.
These tests try the attack through the API, then check the policy itself with principals whose
names are taken from the role and tenant vocabularies, created past the API's name checks.
"""

from __future__ import annotations

import itertools
import json
import uuid
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from control_plane.auth.rbac import EVERY_TENANT, ROLE_PERMISSIONS, Act, Authorizer, Obj
from control_plane.db.repositories import principals as principals_repo
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.session import transaction
from fleetflow.api_models.tenancy import Role
from fleetflow.ir import WorkflowSpec
from tests.hardening.test_api_limits import make_world
from tests.hardening.world import examples
from tests.integration.auth import principal_token
from tests.integration.test_api import assert_error

TENANTS = ("alpha", "beta")
ROLE_NAMES = tuple(role.value for role in Role)


def test_a_tenant_admin_cannot_mint_a_platform_admin_by_name(
    session_factory: sessionmaker[Session], tmp_path: Path, workflow_spec: WorkflowSpec
) -> None:
    world = make_world(session_factory, tmp_path, workflow_spec)
    authorizer = world.app.state.authorizer
    alpha_admin = principal_token(
        session_factory, authorizer, "alpha-admin", tenant="alpha", role=Role.TENANT_ADMIN
    )
    with world.client(alpha_admin) as admin:
        for name in (*ROLE_NAMES, "Platform-Admin", "system"):
            for kind in ("user", "service"):
                created = admin.post(
                    "/api/v1/admin/tenants/alpha/users",
                    json={"name": name, "role": "developer", "kind": kind},
                )
                body = assert_error(created, 422)
                assert "is not available as a user name" in body["detail"], body
        # What the attack went on to do: none of it is open to the tenant admin.
        assert admin.get("/api/v1/admin/tenants").status_code == 403
        assert admin.get("/api/v1/admin/audit").status_code == 403
        assert admin.put("/api/v1/admin/tenants/beta/quota", json={"gpu": 9}).status_code == 403


def test_a_taken_name_is_answered_like_a_reserved_one(
    session_factory: sessionmaker[Session], tmp_path: Path, workflow_spec: WorkflowSpec
) -> None:
    """A tenant admin learns nothing about other tenants' users from a refused name."""
    world = make_world(session_factory, tmp_path, workflow_spec)
    alpha_admin = principal_token(
        session_factory,
        world.app.state.authorizer,
        "alpha-admin",
        tenant="alpha",
        role=Role.TENANT_ADMIN,
    )
    with world.client(alpha_admin) as admin:
        taken = admin.post(
            "/api/v1/admin/tenants/alpha/users", json={"name": "beta-dev", "role": "viewer"}
        )
        reserved = admin.post(
            "/api/v1/admin/tenants/alpha/users", json={"name": "viewer", "role": "viewer"}
        )
    assert taken.status_code == reserved.status_code == 422
    as_if_reserved = json.loads(json.dumps(reserved.json()).replace("'viewer'", "'beta-dev'"))
    assert taken.json() == as_if_reserved
    assert "'beta-dev' is not available as a user name" in taken.json()["detail"]


def _expected(grants: set[tuple[str, str]], tenant: str, obj: Obj, act: Act) -> bool:
    """What `grants` allow, from ROLE_PERMISSIONS alone (independent of casbin)."""
    for role_name, domain in grants:
        if domain not in (tenant, EVERY_TENANT):
            continue
        for p_obj, p_act in ROLE_PERMISSIONS[Role(role_name)]:
            if p_obj in ("*", obj.value) and p_act in ("*", act.value):
                return True
    return False


_vocabulary = st.sampled_from(
    [*ROLE_NAMES, *TENANTS, EVERY_TENANT, "role:platform-admin", "principal:x", "admin"]
)
_names = st.lists(_vocabulary, min_size=1, max_size=4, unique=True)
_grant = st.tuples(st.sampled_from(ROLE_NAMES), st.sampled_from((*TENANTS, EVERY_TENANT)))


@settings(
    max_examples=examples(25),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    names=_names,
    grants=st.lists(st.sets(_grant, max_size=2), min_size=4, max_size=4),
)
def test_no_principal_gains_a_permission_it_was_not_granted(
    session_factory: sessionmaker[Session], names: list[str], grants: list[set[tuple[str, str]]]
) -> None:
    """Principals named like roles, tenants or policy prefixes, created past the API's checks,
    hold exactly what their grants give, and a grant to one never reaches another."""
    engine: Engine = session_factory.kw["bind"]
    authorizer = Authorizer(engine)
    authorizer.seed_role_permissions()
    held: dict[str, set[tuple[str, str]]] = {}
    with transaction(session_factory) as session:
        home = get_or_create_tenant(session, "alpha")
        for tenant in TENANTS:
            get_or_create_tenant(session, tenant)
        for index, name in enumerate(names):
            # The name itself as the attacker chose it; suffixed (uniquely: hypothesis may draw
            # the same example twice) only when an earlier example of this database took it.
            taken = principals_repo.get_principal(session, name) is not None
            principal = principals_repo.create_principal(
                session,
                f"{name}-{uuid.uuid4().hex[:12]}" if taken else name,
                "user",
                home,
                created_by=None,
            )
            held[principal.id] = grants[index % len(grants)]
    for principal_id, principal_grants in held.items():
        for role_name, domain in principal_grants:
            authorizer.grant(principal_id, Role(role_name), domain)
    with session_factory() as session:
        for principal_id, principal_grants in held.items():
            for tenant, obj, act in itertools.product((*TENANTS, EVERY_TENANT), Obj, Act):
                assert authorizer.allowed(session, principal_id, tenant, obj, act) == _expected(
                    principal_grants, tenant, obj, act
                ), (principal_id, principal_grants, tenant, obj, act)
    # Clean up this example's grants: the database is shared by the examples.
    for principal_id, principal_grants in held.items():
        for role_name, domain in principal_grants:
            authorizer.revoke(principal_id, Role(role_name), domain)
