"""Dynamic nodes' sub-DAGs as `expand_dynamic` (`orchestration/activities.py`) checked and
stored them (`<node>/dynamic/spec.json`, nodes named `<node>/...`), read back for the sub-DAG
route and the console's graph."""

from __future__ import annotations

import json
from collections.abc import Collection

from pydantic import ValidationError
from sqlalchemy.orm import Session

from control_plane.blob_layout import execution_prefix, node_prefix
from control_plane.db.models import Execution, Tenant
from fleetflow.api_models.executions import SubDag, SubDagNode
from fleetflow.inlining import SEPARATOR
from fleetflow.ir import WorkflowSpec
from fleetflow.storage import BlobNotFoundError, BlobStore


class SubDagError(Exception):
    """Why a node's sub-DAG cannot be given: `status` 404 (no such node, or none built yet)
    or 409 (the node is not dynamic)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def sub_dag_key(session: Session, execution: Execution, node_id: str) -> str:
    """Where `expand_dynamic` stores the sub-DAG of the dynamic node `node_id`."""
    tenant = session.get_one(Tenant, execution.tenant_id).name
    return f"{node_prefix(execution_prefix(tenant, execution.id), node_id)}/dynamic/spec.json"


def _stored(
    session: Session, execution: Execution, blob_store: BlobStore, node_id: str
) -> WorkflowSpec | None:
    """The stored sub-DAG of `node_id`; None when it has built none (yet)."""
    try:
        raw = blob_store.get(blob_store.uri(sub_dag_key(session, execution, node_id)))
        return WorkflowSpec.model_validate(json.loads(raw))
    except (BlobNotFoundError, ValueError, ValidationError):
        return None


def _dynamic_ids(spec: WorkflowSpec) -> list[str]:
    """The spec's nodes that build a sub-DAG (a dynamic task's, not mapped)."""
    return [n.id for n in spec.nodes if spec.tasks[n.task].dynamic and n.map is None]


def find_sub_dag(
    session: Session, execution: Execution, blob_store: BlobStore, node_id: str
) -> WorkflowSpec:
    """The sub-DAG the node `node_id` built: the node is looked up in the workflow's spec,
    then in the sub-DAG of the dynamic node it is named under, down nested dynamic nodes
    (a `/` in an id is no proof of a sub-DAG: inlined sub-workflows' nodes have one too).

    Raises:
        SubDagError: no such node, a node that is not dynamic, or no sub-DAG built yet.
    """
    spec = WorkflowSpec.model_validate(execution.workflow.spec)
    while node_id not in {n.id for n in spec.nodes} | {f.id for f in spec.failures}:
        parents = [d for d in _dynamic_ids(spec) if node_id.startswith(f"{d}{SEPARATOR}")]
        inner = _stored(session, execution, blob_store, max(parents, key=len)) if parents else None
        if inner is None:
            raise SubDagError(404, f"execution {execution.id} has no node '{node_id}'")
        spec = inner
    node = next((n for n in spec.nodes if n.id == node_id), None)
    if node is None or not spec.tasks[node.task].dynamic or node.map is not None:
        what = f"runs task '{node.task}'" if node is not None else "is a failure handler"
        mapped = " over a map" if node is not None and node.map is not None else ""
        raise SubDagError(
            409, f"node '{node_id}' {what}{mapped}, which is not dynamic: it builds no sub-DAG"
        )
    sub = _stored(session, execution, blob_store, node_id)
    if sub is None:
        raise SubDagError(
            404, f"node '{node_id}' has built no sub-DAG yet (it does once its attempt succeeds)"
        )
    return sub


def public_sub_dag(execution_id: str, node_id: str, sub: WorkflowSpec) -> SubDag:
    """The sub-DAG as the API answers it: its nodes with their edges inside it."""
    ids = {n.id for n in sub.nodes}
    return SubDag(
        execution_id=execution_id,
        node_id=node_id,
        nodes=[
            SubDagNode(
                id=n.id,
                task=n.task,
                upstream=[u for u in dict.fromkeys(n.upstream) if u in ids],
                is_map=n.map is not None,
                dynamic=sub.tasks[n.task].dynamic and n.map is None,
            )
            for n in sub.nodes
        ],
    )


def built_sub_dags(
    session: Session,
    execution: Execution,
    blob_store: BlobStore,
    started: Collection[str],
) -> dict[str, SubDag]:
    """Every sub-DAG built so far, nested ones too, by dynamic node: read only for the
    dynamic nodes in `started` (those with attempts: the others have built none)."""
    found: dict[str, SubDag] = {}
    pending = [WorkflowSpec.model_validate(execution.workflow.spec)]
    while pending:
        spec = pending.pop()
        for node_id in _dynamic_ids(spec):
            if node_id not in started or node_id in found:
                continue
            sub = _stored(session, execution, blob_store, node_id)
            if sub is not None:
                found[node_id] = public_sub_dag(execution.id, node_id, sub)
                pending.append(sub)
    return found
