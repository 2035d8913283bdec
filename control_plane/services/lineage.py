"""Artifact lineage: which blobs a succeeded attempt produced, and from which blobs.

What an artifact is, case by case:

- A task attempt that SUCCEEDED produced each `File`, `Directory`, ndarray or DataFrame of its
  outputs that lies below its own prefix (where its runtime uploads what it writes). It is
  recorded in the transaction that commits the SUCCEEDED report (`AttemptLineage.record`,
  called by the agent service), with the attempt's execution, node, map element, task name
  and task digest, and one input edge per blob among the attempt's inputs. A blob an attempt
  returns but did not write (its input, passed through) is not its artifact: it already has a
  producer.
- An execution's input blobs (uploads, or another execution's outputs) are recorded when the
  execution is created, produced by the execution itself at node `inputs`, with no attempt
  (`record_execution_inputs`). An upload is content-addressed: the first execution that named
  it stays its producer.
- A task-cache hit, and a recovered execution's reused unit, run nothing and record nothing:
  their outputs are the blobs the original attempt wrote, whose artifacts name that attempt,
  so whatever is computed from them links back to the original producer.
- A map node's elements are attempts of their own: each records its blobs with its element
  index. The node's collected lists name the same blobs.
- A dynamic task's sub-DAG nodes (`<node>/<sub-node>`) and a reference node's child
  execution record their attempts' blobs like any other; a child execution's inputs are its
  parent's blobs, which already have producers, so lineage crosses into the child by URI.
- Inline values (numbers, strings, structs without blobs) are not artifacts: lineage follows
  blobs only. A blob computed from inline values alone has no upstream.

Recording costs nothing for a task whose outputs cannot hold blobs (known from its interface);
otherwise it reads the attempt's outputs document (and its inputs document when its inputs can
hold blobs) and makes two bulk inserts (`db/repositories/artifacts.py`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, lazyload

from control_plane.db.models import Execution, TaskAttempt, WorkflowVersion
from control_plane.db.repositories import artifacts as artifacts_repo
from control_plane.db.repositories import dynamic_tasks
from control_plane.parsed_specs import InvalidStoredSpecError, ParsedSpecs
from fleetflow.errors import FleetflowError
from fleetflow.files import blob_literals, has_blobs
from fleetflow.ir import LiteralType, TaskSpec, TypedInterface, TypeKind
from fleetflow.states import NO_MAP_INDEX
from fleetflow.storage import BlobStore, relative_key

log = logging.getLogger(__name__)

INPUTS_NODE = "inputs"
"""The node an execution's own input blobs are recorded at."""

_KINDS = {
    TypeKind.FILE: "file",
    TypeKind.DIRECTORY: "directory",
    TypeKind.NDARRAY: "array",
    TypeKind.DATAFRAME: "dataframe",
}
_KEPT = 256  # executions and tasks whose facts are kept at once


def blobs_in(literal: Any, literal_type: LiteralType, path: str) -> Iterator[tuple[str, str, str]]:
    """Every (path, kind, uri) of a blob inside `literal`, in value order: `kind` is `file`,
    `directory`, `array` or `dataframe`. Shapes are checked, not trusted (a task's outputs
    are the task's word): what does not fit its type, or names no URI, holds no blobs."""
    for blob_path, kind, blob in blob_literals(literal, literal_type, path):
        uri = blob.get("uri") if isinstance(blob, dict) else None
        if isinstance(uri, str) and uri:
            yield blob_path, _KINDS[kind], uri


def _interface_blobs(values: Any, interface_part: list[Any]) -> Iterator[tuple[str, str, str]]:
    if not isinstance(values, dict):
        return
    for variable in interface_part:
        if has_blobs(variable.type):
            yield from blobs_in(values.get(variable.name), variable.type, variable.name)


def _below(uri: str, prefix_uri: str) -> bool:
    """Whether `uri` names an object below `prefix_uri` (never one that climbs out with `..`:
    a task's outputs are the task's word)."""
    try:
        relative_key(uri, prefix_uri)
    except FleetflowError:
        return False
    return True


def record_execution_inputs(
    session: Session,
    tenant_id: str,
    execution_id: str,
    interface: TypedInterface,
    inputs: dict[str, Any],
) -> None:
    """Record the blobs among an execution's inputs, produced by the execution (node
    `inputs`, no attempt) unless an earlier producer is recorded."""
    found = [
        artifacts_repo.NewArtifact(
            uri=uri, kind=kind, execution_id=execution_id, node_id=INPUTS_NODE, output_name=path
        )
        for path, kind, uri in _interface_blobs(inputs, list(interface.inputs))
    ]
    artifacts_repo.record(session, tenant_id, found)


class AttemptLineage:
    """Records the artifacts of succeeded attempts; keeps what it learnt of executions and
    tasks (which never change) for the next ones. Safe across threads."""

    def __init__(self, blobs: BlobStore, specs: ParsedSpecs | None = None) -> None:
        self._blobs = blobs
        self._specs = specs or ParsedSpecs()
        self._executions: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._digests: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._lock = threading.Lock()

    def _execution(self, session: Session, execution_id: str) -> tuple[str, str]:
        """(tenant id, workflow version id) of the execution."""
        with self._lock:
            found = self._executions.get(execution_id)
        if found is None:
            execution = session.get_one(
                Execution,
                execution_id,
                options=[lazyload(Execution.attempts), lazyload(Execution.workflow)],
            )
            found = (execution.tenant_id, execution.workflow_spec_id)
            with self._lock:
                self._executions[execution_id] = found
                while len(self._executions) > _KEPT:
                    self._executions.popitem(last=False)
        return found

    def _task(self, session: Session, spec_id: str, name: str) -> TaskSpec | None:
        task = self._specs.get(session, spec_id).tasks.get(name)
        if task is None:  # a task of a dynamic task's sub-DAG
            task = dynamic_tasks.find(session, spec_id, [name]).get(name)
        return task

    def _digest(self, session: Session, spec_id: str, task: TaskSpec) -> str:
        """sha256 of the task's spec and of the code bundle it runs from: what identifies the
        version of the task that produced an artifact."""
        key = (spec_id, task.name)
        with self._lock:
            found = self._digests.get(key)
        if found is None:
            bundle = session.scalar(
                select(WorkflowVersion.bundle_digest).where(WorkflowVersion.id == spec_id)
            )
            material = f"{task.model_dump_json()}\0{bundle or ''}"
            found = hashlib.sha256(material.encode()).hexdigest()
            with self._lock:
                self._digests[key] = found
                while len(self._digests) > _KEPT:
                    self._digests.popitem(last=False)
        return found

    def record(self, session: Session, attempt: TaskAttempt) -> int:
        """Record the blobs the SUCCEEDED `attempt` produced, with its input blobs as their
        inputs, in `session`'s transaction; how many were found. A spec or a document that
        cannot be read is logged and records nothing: lineage never fails a report."""
        if attempt.cache_hit:
            return 0
        try:
            return self._record(session, attempt)
        except (
            FleetflowError,  # the blob store's: not found, refused, corrupt
            ValueError,
            TypeError,
            LookupError,
            InvalidStoredSpecError,
        ) as exc:
            log.warning("attempt %s: its lineage is not recorded: %s", attempt.id, exc)
            return 0

    def _record(self, session: Session, attempt: TaskAttempt) -> int:
        tenant_id, spec_id = self._execution(session, attempt.execution_id)
        task = self._task(session, spec_id, attempt.task_name)
        if task is None or task.dynamic or task.reference is not None:
            return 0
        if not any(has_blobs(output.type) for output in task.interface.outputs):
            return 0
        outputs = json.loads(self._blobs.get(attempt.outputs_uri))
        own = attempt.outputs_uri.rpartition("/")[0]
        produced = [
            blob
            for blob in _interface_blobs(outputs, list(task.interface.outputs))
            if _below(blob[2], own)
        ]
        if not produced:
            return 0
        inputs: tuple[tuple[str, str], ...] = ()
        if any(has_blobs(variable.type) for variable in task.interface.inputs):
            document = json.loads(self._blobs.get(attempt.inputs_uri))
            inputs = tuple(
                (path, uri)
                for path, _kind, uri in _interface_blobs(document, list(task.interface.inputs))
            )
        digest = self._digest(session, spec_id, task)
        element = None if attempt.map_index == NO_MAP_INDEX else attempt.map_index
        artifacts_repo.record(
            session,
            tenant_id,
            [
                artifacts_repo.NewArtifact(
                    uri=uri,
                    kind=kind,
                    execution_id=attempt.execution_id,
                    node_id=attempt.node_id,
                    output_name=path,
                    attempt_id=attempt.id,
                    element_index=element,
                    task_name=task.name,
                    task_digest=digest,
                    inputs=inputs,
                )
                for path, kind, uri in produced
            ],
        )
        return len(produced)
