"""The task cache: outputs of cacheable tasks, found by a hash of what determines them."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

import fleetflow.cache
from control_plane.db.models import TaskCacheEntry, utcnow
from control_plane.db.repositories._insert import insert_ignoring_conflicts
from fleetflow.ir import TaskSpec


def cache_key(tenant_id: str, task: TaskSpec, inputs: dict[str, Any]) -> str:
    """The SDK's key (`fleetflow.cache.cache_key`) scoped to the tenant: another tenant's task
    of the same name and inputs never finds these outputs, nor plants its own for this one."""
    return fleetflow.cache.cache_key(task, inputs, scope=f"tenant:{tenant_id}")


def find_cached(session: Session, key: str) -> TaskCacheEntry | None:
    return session.get(TaskCacheEntry, key)


def remember(
    session: Session, key: str, task: TaskSpec, *, outputs_uri: str, attempt_id: str
) -> None:
    """Record outputs for `key`; the first writer wins, later ones are no-ops."""
    insert_ignoring_conflicts(
        session,
        TaskCacheEntry,
        {
            "key": key,
            "task_name": task.name,
            "cache_version": task.cache_version or "",
            "outputs_uri": outputs_uri,
            "source_attempt_id": attempt_id,
            "created_at": utcnow(),
        },
    )
