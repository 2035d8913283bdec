"""Workflow specs as the control plane reads them on hot paths: parsed once per version.

A version's spec never changes once registered (`db/repositories/workflows.py` only inserts),
so a parsed one stays true. The activities of every execution step and the agents' leases
read the spec of the attempt's version; validating it each time (pydantic, every node and
type) cost more than the rest of a lease.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.db.models import WorkflowVersion
from fleetflow.ir import WorkflowSpec


class InvalidStoredSpecError(Exception):
    """The execution's stored spec does not validate (stored before registration checked it,
    or written around it): retrying cannot help. `problems` names each field and why."""

    def __init__(self, problems: str) -> None:
        super().__init__(f"the workflow's spec is invalid: {problems}")
        self.problems = problems


def describe_errors(exc: ValidationError) -> str:
    """A validation error's problems on one line: `loc: msg; loc: msg`."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
    )


class ParsedSpecs:
    """The parsed `WorkflowSpec` of the `limit` workflow versions used last, by version id.

    A version's spec never changes once registered (`repositories/workflows.py` only inserts),
    so a parsed one stays true; its readers never change it. A stored spec that does not
    validate is not kept: it raises `InvalidStoredSpecError` every time. Safe across threads."""

    def __init__(self, limit: int = 64) -> None:
        self._limit = limit
        self._specs: OrderedDict[str, WorkflowSpec] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session: Session, version_id: str) -> WorkflowSpec:
        with self._lock:
            spec = self._specs.get(version_id)
            if spec is not None:
                self._specs.move_to_end(version_id)
                return spec
        stored = session.scalar(
            select(WorkflowVersion.spec).where(WorkflowVersion.id == version_id)
        )
        if stored is None:
            raise LookupError(f"workflow version {version_id} does not exist")
        try:
            spec = WorkflowSpec.model_validate(stored)
        except ValidationError as exc:
            raise InvalidStoredSpecError(describe_errors(exc)) from None
        with self._lock:
            self._specs[version_id] = spec
            self._specs.move_to_end(version_id)
            while len(self._specs) > self._limit:
                self._specs.popitem(last=False)
        return spec
