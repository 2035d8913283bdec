"""The tasks dynamic tasks' sub-DAGs run beyond their workflow version's spec (`DynamicTask`)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.db.models import DynamicTask
from fleetflow.ir import TaskSpec


def record(session: Session, workflow_spec_id: str, tasks: Iterable[TaskSpec]) -> None:
    """Record `tasks` for the version, those not yet recorded.

    Raises:
        ValueError: a task of the same name was recorded with another spec (the same bundle
            gives a task one spec: a sub-DAG claiming otherwise is forged).
    """
    wanted = {task.name: task for task in tasks}
    if not wanted:
        return
    known = find(session, workflow_spec_id, wanted)
    for name, task in wanted.items():
        if name not in known:
            spec = task.model_dump(mode="json")
            session.add(DynamicTask(workflow_spec_id=workflow_spec_id, task_name=name, spec=spec))
        elif known[name] != task:
            raise ValueError(f"task '{name}' differs from the task of that name it ran before")
    session.flush()


def find(session: Session, workflow_spec_id: str, names: Iterable[str]) -> dict[str, TaskSpec]:
    """The recorded tasks among `names`, by name."""
    rows = session.scalars(
        select(DynamicTask).where(
            DynamicTask.workflow_spec_id == workflow_spec_id,
            DynamicTask.task_name.in_(list(names)),
        )
    )
    return {row.task_name: TaskSpec.model_validate(row.spec) for row in rows}
