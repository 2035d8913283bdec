"""Hostile numbers in a workflow spec (issue 13, findings 5 and 6).

A timeout past int32, negative, NaN, infinite or huge resources: registration refuses each with
a 422 naming the field. One stored anyway (before the check, or written around it) fails on its
own: its attempt when it is leased, while the other attempts on the cluster still lease; its
execution, without retries, when an activity reads the spec.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from temporalio.exceptions import ApplicationError

from control_plane.db.models import Execution, TaskAttempt, WorkflowVersion, new_id, utcnow
from control_plane.db.repositories import attempts as attempts_repo
from control_plane.db.repositories.executions import create_execution
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.session import transaction
from control_plane.orchestration.activities import ExecutionActivities
from control_plane.orchestration.workflows import AttemptFinished, FinishExecutionInput
from fleetflow import ir
from fleetflow.errors import InvalidOptionError
from fleetflow.ir import WorkflowSpec
from fleetflow.resources import Resources
from fleetflow.states import AttemptState, ExecutionState
from fleetflow.storage import LocalBlobStore
from tests.hardening.world import World, build_world, unlimited
from tests.integration.test_agent_service import (  # noqa: F401 (fixtures)
    BUNDLE_DIGEST,
    PREPARE,
    Harness,
    harness,
    spec,
)
from tests.integration.test_api import assert_error

_HOSTILE = "__hostile__"


def _with_task_value(base: WorkflowSpec, path: str, value: object) -> WorkflowSpec:
    """`base` with `tasks[PREPARE].<path>` set to `value`, unvalidated (as if stored earlier)."""
    task = base.tasks[PREPARE]
    if path.startswith("resources."):
        resources = task.resources.model_copy(update={path.removeprefix("resources."): value})
        task = task.model_copy(update={"resources": resources})
    else:
        task = task.model_copy(update={path: value})
    return base.model_copy(update={"tasks": {**base.tasks, PREPARE: task}})


def _registration_body(world: World, base: WorkflowSpec, path: str, raw_value: str) -> str:
    """The registration request as JSON text with `raw_value` written verbatim at `path`, so
    that values JSON cannot normally carry (`NaN`, `Infinity`) reach the API as sent."""
    spec_json = base.model_dump(mode="json")
    owner = spec_json["tasks"][PREPARE]
    *parents, name = path.split(".")
    for parent in parents:
        owner = owner[parent]
    owner[name] = _HOSTILE
    body = {"spec": spec_json, "bundle_digest": world.digest, "version": "v2"}
    text = json.dumps(body)
    assert text.count(f'"{_HOSTILE}"') == 1
    return text.replace(f'"{_HOSTILE}"', raw_value)


def _versions(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(WorkflowVersion)) or 0)


@pytest.mark.parametrize(
    ("path", "raw_value", "message"),
    [
        ("timeout_seconds", str(2**31), f"less than or equal to {ir.MAX_TIMEOUT_SECONDS}"),
        ("timeout_seconds", "1e18", f"less than or equal to {ir.MAX_TIMEOUT_SECONDS}"),
        # Past int64 pydantic refuses a float for an int by itself; kept as a guard.
        ("timeout_seconds", "1e20", "exceeded maximum size"),
        ("timeout_seconds", "-5", "greater than 0"),
        ("retries", str(10**9), f"less than or equal to {ir.MAX_RETRIES}"),
        ("resources.cpu", "-1000", "greater than or equal to 0"),
        ("resources.cpu", "NaN", "finite number"),
        ("resources.cpu", "Infinity", "finite number"),
        ("resources.cpu", "-Infinity", "finite number"),
        ("resources.cpu", "1e300", f"less than or equal to {ir.MAX_CPU_CORES:g}"),
        ("resources.gpu", "-4", "greater than or equal to 0"),
        ("resources.gpu", str(2**31), f"less than or equal to {ir.MAX_GPUS}"),
        ("resources.gpu", "NaN", "finite number"),
        ("resources.memory_bytes", "-1", "greater than or equal to 0"),
        ("resources.memory_bytes", str(2**70), f"less than or equal to {ir.MAX_MEMORY_BYTES}"),
        ("resources.memory_bytes", "1e18", f"less than or equal to {ir.MAX_MEMORY_BYTES}"),
    ],
)
def test_registration_refuses_a_number_outside_its_range_naming_the_field(
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    workflow_spec: WorkflowSpec,
    path: str,
    raw_value: str,
    message: str,
) -> None:
    world = build_world(session_factory, tmp_path, workflow_spec, unlimited())
    before = _versions(session_factory)
    with world.client(world.alpha_dev) as alpha:
        answer = alpha.post(
            "/api/v1/workflows",
            content=_registration_body(world, workflow_spec, path, raw_value),
            headers={"Content-Type": "application/json"},
        )
    field = f"spec.tasks.{PREPARE}.{path}"
    body = assert_error(answer, 422, field)
    (error,) = [e for e in body["errors"] if e["field"] == field]
    assert message in error["message"], error
    assert _versions(session_factory) == before


def test_registration_accepts_every_number_at_its_bound(
    session_factory: sessionmaker[Session], tmp_path: Path, workflow_spec: WorkflowSpec
) -> None:
    world = build_world(session_factory, tmp_path, workflow_spec, unlimited())
    task = workflow_spec.tasks[PREPARE].model_copy(
        update={
            "timeout_seconds": ir.MAX_TIMEOUT_SECONDS,
            "retries": ir.MAX_RETRIES,
            "resources": ir.Resources(
                cpu=ir.MAX_CPU_CORES, memory_bytes=ir.MAX_MEMORY_BYTES, gpu=ir.MAX_GPUS
            ),
        }
    )
    at_bounds = workflow_spec.model_copy(update={"tasks": {**workflow_spec.tasks, PREPARE: task}})
    with world.client(world.alpha_dev) as alpha:
        answer = alpha.post(
            "/api/v1/workflows",
            json={
                "spec": at_bounds.model_dump(mode="json"),
                "bundle_digest": world.digest,
                "version": "v2",
            },
        )
    assert answer.status_code == 201, answer.text


# --- what slips through: stored specs that no longer validate ---------------------------------


def _store_execution(session: Session, stored: WorkflowSpec, version: str) -> str:
    """An execution of `stored` written straight to the database, past registration's checks."""
    tenant = get_or_create_tenant(session, "research")
    workflow = WorkflowVersion(
        id=new_id("wf"),
        tenant_id=tenant.id,
        name=stored.name,
        version=version,
        spec=stored.model_dump(mode="json"),
        bundle_digest=BUNDLE_DIGEST,
        created_at=utcnow(),
    )
    session.add(workflow)
    session.flush()
    return create_execution(session, tenant.id, workflow, {"n": 3}).id


async def test_an_attempt_whose_spec_does_not_fit_the_lease_fails_alone(
    harness: Harness,  # noqa: F811 (the fixture)
) -> None:
    await harness.register()
    hostile = _with_task_value(harness.spec, "timeout_seconds", 2**31)
    hostile_execution = await harness.db(lambda s: _store_execution(s, hostile, "hostile"))
    first = await harness.db(harness.create_attempt)

    def create_hostile_attempt(session: Session) -> TaskAttempt:
        return attempts_repo.create_attempt(
            session,
            execution_id=hostile_execution,
            node_id="n0",
            task_name=PREPARE,
            attempt_number=1,
            inputs_uri=harness.blobs.put(f"executions/{hostile_execution}/in.json", b"{}"),
            outputs_uri=harness.blobs.uri(f"executions/{hostile_execution}/out.json"),
        )

    bad = await harness.db(create_hostile_attempt)
    last = await harness.db(harness.create_attempt)
    await harness.scheduler.place()

    # One lease call: the good attempts on either side of the bad one are handed out.
    assignments = await harness.lease()
    assert sorted(a.attempt_id for a in assignments) == sorted([first.id, last.id])
    assert all(a.timeout_seconds == 120 for a in assignments)

    failed = await harness.attempt(bad.id)
    assert failed.status == AttemptState.FAILED.value
    assert failed.error_message is not None
    assert f"attempt {bad.id} of node n0 cannot be leased" in failed.error_message
    assert f"tasks.{PREPARE}.timeout_seconds" in failed.error_message
    assert f"less than or equal to {ir.MAX_TIMEOUT_SECONDS}" in failed.error_message
    # Through the outbox, like any failure: its workflow hears it once, with the reason.
    assert harness.sink.calls == [
        (hostile_execution, AttemptFinished(bad.id, "FAILED", failed.error_message))
    ]
    # Nothing is left to lease, and the cluster's next lease works.
    assert await harness.lease() == []
    later = await harness.db(harness.create_attempt)
    await harness.scheduler.place()
    assert [a.attempt_id for a in await harness.lease()] == [later.id]


@pytest.fixture
def activities(session_factory: sessionmaker[Session], tmp_path: Path) -> ExecutionActivities:
    return ExecutionActivities(session_factory, LocalBlobStore(tmp_path / "blobs"))


def _execution(sessions: sessionmaker[Session], execution_id: str) -> Execution:
    with sessions() as session:
        return session.get_one(Execution, execution_id)


@pytest.mark.parametrize(
    ("path", "value"),
    [("resources.cpu", -1000.0), ("resources.gpu", -4), ("timeout_seconds", 2**31)],
)
def test_an_execution_of_an_invalid_stored_spec_fails_without_retrying(
    session_factory: sessionmaker[Session],
    activities: ExecutionActivities,
    workflow_spec: WorkflowSpec,
    path: str,
    value: Any,
) -> None:
    hostile = _with_task_value(workflow_spec, path, value)
    with transaction(session_factory) as session:
        execution_id = _store_execution(session, hostile, "hostile")
    with pytest.raises(ApplicationError) as raised:
        activities.begin_execution(execution_id)
    assert raised.value.non_retryable
    assert raised.value.type == "InvalidWorkflowSpec"
    assert f"tasks.{PREPARE}.{path}" in raised.value.message
    execution = _execution(session_factory, execution_id)
    assert execution.status == ExecutionState.FAILED.value
    assert execution.error is not None
    assert execution.error["message"] == raised.value.message


def test_an_execution_of_an_invalid_stored_spec_can_be_cancelled(
    session_factory: sessionmaker[Session],
    activities: ExecutionActivities,
    workflow_spec: WorkflowSpec,
) -> None:
    hostile = _with_task_value(workflow_spec, "resources.cpu", -1000.0)
    with transaction(session_factory) as session:
        execution_id = _store_execution(session, hostile, "hostile")
    activities.finish_execution(FinishExecutionInput(execution_id, "CANCELLED"))
    assert _execution(session_factory, execution_id).status == ExecutionState.CANCELLED.value


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cpu": 2000}, "at most 1024 cores"),
        ({"cpu": "2000000m"}, "at most 1024 cores"),
        ({"memory": "100Ti"}, "at most 64Ti"),
        ({"memory": 2**70}, "at most 64Ti"),
        ({"gpu": 2**31}, f"gpu must be at most {ir.MAX_GPUS}"),
    ],
)
def test_the_sdk_refuses_resources_past_the_bounds_at_decoration_time(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        Resources(**options)
