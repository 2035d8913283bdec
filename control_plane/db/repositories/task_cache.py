"""The task cache: outputs of cacheable tasks, found by a hash of what determines them."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy.orm import Session

from control_plane.db.models import TaskCacheEntry, utcnow
from control_plane.db.repositories._insert import insert_ignoring_conflicts
from fleetflow.ir import TaskSpec


def cache_key(task: TaskSpec, inputs: dict[str, Any]) -> str:
    """Same task name, cache version, interface and input literals -> same key."""
    material = {
        "task": task.name,
        "cache_version": task.cache_version,
        "interface": task.interface.model_dump(mode="json"),
        "inputs": inputs,
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


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
