"""The tasks of dynamic tasks' sub-DAGs, recorded per workflow version, on SQLite and
PostgreSQL: placement reads their resources, a forged twin of a recorded task is refused."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from control_plane.db.repositories import dynamic_tasks, tenancy
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.repositories.workflows import register_workflow_version
from control_plane.db.session import make_engine, make_session_factory
from control_plane.scheduling.snapshot import task_resources
from fleetflow import ir


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    engine = make_engine(database_url)
    with make_session_factory(engine)() as session:
        yield session
    engine.dispose()


def _task(name: str, gpu: int = 0) -> ir.TaskSpec:
    return ir.TaskSpec(
        name=name,
        module="flows",
        function=name.rsplit(".", 1)[-1],
        interface=ir.TypedInterface(),
        resources=ir.Resources(cpu=2, gpu=gpu),
    )


def test_recorded_tasks_are_found_by_leasing_and_placement(
    session: Session, workflow_spec: ir.WorkflowSpec
) -> None:
    tenant = get_or_create_tenant(session, "t")
    tenancy.grant_cluster(session, tenant, tenancy.EVERY_CLUSTER)
    version = register_workflow_version(session, tenant.id, workflow_spec, "a" * 64, None)
    session.commit()
    square = _task("flows.square_on_gpu", gpu=2)
    dynamic_tasks.record(session, version.id, [square])
    dynamic_tasks.record(session, version.id, [square])  # again, from another execution
    session.commit()
    assert dynamic_tasks.find(session, version.id, ["flows.square_on_gpu", "x"]) == {
        square.name: square
    }
    found = task_resources(session, [(version.id, square.name)])
    assert found[(version.id, square.name)].gpu == 2
    with pytest.raises(ValueError, match="differs from the task of that name run before"):
        dynamic_tasks.record(session, version.id, [_task("flows.square_on_gpu", gpu=64)])
