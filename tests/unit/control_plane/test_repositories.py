"""Tenant, workflow-version and execution repositories on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from control_plane.db.models import Execution
from control_plane.db.repositories import tenancy
from control_plane.db.repositories.executions import (
    create_execution,
    get_execution,
    list_executions,
)
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.repositories.workflows import (
    WorkflowVersionConflictError,
    default_version,
    get_workflow_version,
    list_workflow_versions,
    register_workflow_version,
)
from control_plane.db.session import make_engine, make_session_factory
from fleetflow.ir import WorkflowSpec
from fleetflow.states import ExecutionState

BUNDLE_A = "a" * 64
BUNDLE_B = "b" * 64


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    engine = make_engine(database_url)
    with make_session_factory(engine)() as session:
        yield session
    engine.dispose()


def test_get_or_create_tenant_is_idempotent(session: Session) -> None:
    first = get_or_create_tenant(session, "research")
    tenancy.grant_cluster(session, first, tenancy.EVERY_CLUSTER)
    session.commit()
    again = get_or_create_tenant(session, "research")
    tenancy.grant_cluster(session, again, tenancy.EVERY_CLUSTER)
    assert again.id == first.id and first.id.startswith("tn-")
    assert get_or_create_tenant(session, "other").id != first.id


def test_default_version_hashes_spec_and_bundle(workflow_spec: WorkflowSpec) -> None:
    expected = hashlib.sha256((workflow_spec.digest() + BUNDLE_A).encode()).hexdigest()[:12]
    assert default_version(workflow_spec, BUNDLE_A) == expected
    assert default_version(workflow_spec, BUNDLE_B) != expected


def test_register_is_idempotent(session: Session, workflow_spec: WorkflowSpec) -> None:
    tenant = get_or_create_tenant(session, "t")
    tenancy.grant_cluster(session, tenant, tenancy.EVERY_CLUSTER)
    first = register_workflow_version(session, tenant.id, workflow_spec, BUNDLE_A, None)
    session.commit()
    assert first.version == default_version(workflow_spec, BUNDLE_A)
    assert first.name == workflow_spec.name
    assert WorkflowSpec.model_validate(first.spec) == workflow_spec
    again = register_workflow_version(session, tenant.id, workflow_spec, BUNDLE_A, None)
    assert again.id == first.id
    assert len(list_workflow_versions(session, tenant.id)) == 1


def test_explicit_version_cannot_change_content(
    session: Session, workflow_spec: WorkflowSpec
) -> None:
    tenant = get_or_create_tenant(session, "t")
    tenancy.grant_cluster(session, tenant, tenancy.EVERY_CLUSTER)
    register_workflow_version(session, tenant.id, workflow_spec, BUNDLE_A, "v1")
    with pytest.raises(WorkflowVersionConflictError, match="version v1"):
        register_workflow_version(session, tenant.id, workflow_spec, BUNDLE_B, "v1")
    changed = workflow_spec.model_copy(update={"function": "other"})
    with pytest.raises(WorkflowVersionConflictError):
        register_workflow_version(session, tenant.id, changed, BUNDLE_A, "v1")


def test_latest_version_and_lookup(session: Session, workflow_spec: WorkflowSpec) -> None:
    tenant = get_or_create_tenant(session, "t")
    tenancy.grant_cluster(session, tenant, tenancy.EVERY_CLUSTER)
    old = register_workflow_version(session, tenant.id, workflow_spec, BUNDLE_A, None)
    session.commit()
    new = register_workflow_version(session, tenant.id, workflow_spec, BUNDLE_B, None)
    session.commit()
    assert old.version != new.version
    name = workflow_spec.name
    assert get_workflow_version(session, tenant.id, name, None) == new
    assert get_workflow_version(session, tenant.id, name, old.version) == old
    assert get_workflow_version(session, tenant.id, name, "missing") is None
    assert get_workflow_version(session, tenant.id, "no.such.workflow", None) is None
    other = get_or_create_tenant(session, "other")
    tenancy.grant_cluster(session, other, tenancy.EVERY_CLUSTER)
    assert get_workflow_version(session, other.id, name, None) is None
    listed = list_workflow_versions(session, tenant.id, name=name)
    assert [row.id for row in listed] == [new.id, old.id]
    assert list_workflow_versions(session, tenant.id, limit=1, offset=1) == [old]


def test_create_and_read_executions(session: Session, workflow_spec: WorkflowSpec) -> None:
    tenant = get_or_create_tenant(session, "t")
    tenancy.grant_cluster(session, tenant, tenancy.EVERY_CLUSTER)
    workflow = register_workflow_version(session, tenant.id, workflow_spec, BUNDLE_A, None)
    created = [create_execution(session, tenant.id, workflow, {"n": i}) for i in range(3)]
    session.commit()
    first = created[0]
    assert first.id.startswith("ex-")
    assert first.status == ExecutionState.QUEUED.value
    session.expunge_all()

    loaded = get_execution(session, tenant.id, first.id)
    assert isinstance(loaded, Execution)
    assert loaded.inputs == {"n": 0}
    assert loaded.workflow.name == workflow_spec.name
    assert loaded.attempts == []
    assert loaded.outputs is None and loaded.started_at is None

    other = get_or_create_tenant(session, "other")
    tenancy.grant_cluster(session, other, tenancy.EVERY_CLUSTER)
    assert get_execution(session, other.id, first.id) is None
    assert list_executions(session, other.id) == []

    newest_first = [e.id for e in list_executions(session, tenant.id)]
    assert set(newest_first) == {e.id for e in created}
    assert [e.id for e in list_executions(session, tenant.id, limit=2, offset=1)] == newest_first[
        1:
    ]
    queued = list_executions(session, tenant.id, status=ExecutionState.QUEUED)
    assert len(queued) == 3
    assert list_executions(session, tenant.id, status=ExecutionState.RUNNING) == []


def test_execution_must_use_the_tenants_workflow(
    session: Session, workflow_spec: WorkflowSpec
) -> None:
    owner = get_or_create_tenant(session, "owner")
    tenancy.grant_cluster(session, owner, tenancy.EVERY_CLUSTER)
    workflow = register_workflow_version(session, owner.id, workflow_spec, BUNDLE_A, None)
    intruder = get_or_create_tenant(session, "intruder")
    tenancy.grant_cluster(session, intruder, tenancy.EVERY_CLUSTER)
    with pytest.raises(ValueError, match="does not belong"):
        create_execution(session, intruder.id, workflow, {"n": 1})
