"""The tasks dynamic tasks' sub-DAGs run beyond their workflow version's spec (`DynamicTask`)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.db.models import DynamicTask, utcnow
from control_plane.db.repositories._insert import insert_ignoring_conflicts
from fleetflow.ir import TaskSpec


def record(session: Session, workflow_spec_id: str, tasks: Iterable[TaskSpec]) -> None:
    """Record `tasks` for the version, those not yet recorded (a concurrent recording of
    the same task is no conflict: the first one's row stays).

    Raises:
        ValueError: a task of the same name was recorded with another spec (the same bundle
            gives a task one spec: a sub-DAG claiming otherwise is forged).
    """
    wanted = {task.name: task for task in tasks}
    if not wanted:
        return
    insert_ignoring_conflicts(
        session,
        DynamicTask,
        [
            {
                "workflow_spec_id": workflow_spec_id,
                "task_name": name,
                "spec": task.model_dump(mode="json"),
                "created_at": utcnow(),
            }
            for name, task in wanted.items()
        ],
    )
    known = find(session, workflow_spec_id, wanted)
    for name, task in wanted.items():
        if known.get(name) != task:
            raise ValueError(f"task '{name}' differs from the task of that name run before")


def find(session: Session, workflow_spec_id: str, names: Iterable[str]) -> dict[str, TaskSpec]:
    """The recorded tasks among `names`, by name."""
    rows = session.scalars(
        select(DynamicTask).where(
            DynamicTask.workflow_spec_id == workflow_spec_id,
            DynamicTask.task_name.in_(list(names)),
        )
    )
    return {row.task_name: TaskSpec.model_validate(row.spec) for row in rows}
