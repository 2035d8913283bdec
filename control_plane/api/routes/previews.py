"""Execution previews: what creating an execution would do now, without creating anything.

`POST /api/v1/executions/preview` takes the body `POST /api/v1/executions` takes, validates it
the same way (the same code), and answers, for each task of the workflow, the clusters it fits
on, the one an attempt would be placed on now (and its GPU type), and why the others are
excluded. `fleetflow run --remote --dry-run` prints it.
"""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from control_plane.api.auth import ExecutionsRead
from control_plane.api.deps import BlobStoreDep, SessionDep, SettingsDep
from control_plane.db.models import Tenant
from control_plane.db.repositories import tenancy
from control_plane.placement import Candidate, Strategy, Usage, place
from control_plane.placement.admission import Limits, Load, quota_problem
from control_plane.placement.gangs import (
    exceeds_whole_quota_of,
    gang_no_fit_reason,
    gang_reason,
    task_group_resources,
)
from control_plane.quota import limits_of, tenant_loads
from control_plane.scheduling.snapshot import placement_candidates
from control_plane.schemas.common import ErrorResponse
from control_plane.schemas.executions import ExecutionCreate
from control_plane.schemas.previews import (
    EligibleCluster,
    ExcludedCluster,
    ExecutionPreview,
    ResourcesPublic,
    TaskPreview,
)
from control_plane.services.executions import validate_execution_request
from control_plane.settings import Settings
from fleetflow.ir import TaskSpec, WorkflowSpec
from fleetflow.storage import BlobStore

router = APIRouter(prefix="/executions", tags=["executions"])


def quota_verdict(limits: Limits | None, load: Load, task: TaskSpec) -> str:
    """What the tenant's quota says of one more attempt of `task` now."""
    if limits is None:
        return "fits: the tenant has no quota"
    never = exceeds_whole_quota_of(limits, task.name, task)
    if never is not None:
        return f"refused: {never}"
    usage = Usage.of(task_group_resources(task), None)
    now = quota_problem(limits, load, usage, new_execution=True)
    if now and task.replicas > 1:
        now = gang_reason(now, task.resources, task.replicas)
    return f"waits: {now}" if now else "fits within the quota now"


def task_preview(
    task: TaskSpec,
    nodes: list[str],
    candidates: list[Candidate],
    strategy: Strategy,
    *,
    quota: str,
    not_granted: list[str],
) -> TaskPreview:
    """Where one attempt of `task` would be placed now (among the clusters granted)."""
    decision = place(task_group_resources(task), candidates, strategy)
    resources = task.resources
    waiting_reason = decision.reason or None
    if decision.cluster is None and task.replicas > 1:  # a gang: in its own terms
        waiting_reason = gang_no_fit_reason(resources, task.replicas, candidates)
    return TaskPreview(
        task=task.name,
        nodes=nodes,
        resources=ResourcesPublic(
            cpu=resources.cpu,
            memory_bytes=resources.memory_bytes,
            gpu=resources.gpu,
            gpu_types=resources.gpu_types if resources.gpu > 0 else [],
            labels=resources.labels,
        ),
        replicas=task.replicas,
        cluster=decision.cluster,
        gpu_type=decision.gpu_type,
        waiting_reason=waiting_reason,
        eligible=[
            EligibleCluster(cluster=name, gpu_types=list(types))
            for name, types in decision.eligible.items()
        ],
        excluded=[
            ExcludedCluster(cluster=name, reason=reason)
            for name, reason in decision.excluded.items()
        ]
        + [
            ExcludedCluster(cluster=name, reason="not granted to the tenant")
            for name in not_granted
        ],
        quota=quota,
    )


def _preview(
    session: Session,
    tenant: Tenant,
    body: ExecutionCreate,
    blob_store: BlobStore,
    settings: Settings,
) -> ExecutionPreview:
    workflow, inputs = validate_execution_request(session, tenant, body, blob_store)
    spec = WorkflowSpec.model_validate(workflow.spec)
    grants = set(tenancy.granted_clusters(session, tenant))
    candidates, not_granted = [], []
    for _, candidate in placement_candidates(
        session, heartbeat_grace=settings.grpc.heartbeat_grace, include_offline=True
    ):
        if tenancy.may_use(grants, candidate.name):
            candidates.append(candidate)
        else:
            not_granted.append(candidate.name)
    quota = tenancy.get_quota(session, tenant)
    limits = limits_of(quota) if quota is not None else None
    load = tenant_loads(session, [tenant.id]).get(tenant.id, Load())
    nodes: dict[str, list[str]] = {}
    for node in spec.nodes:
        nodes.setdefault(node.task, []).append(node.id)
    strategy = settings.placement.strategy
    return ExecutionPreview(
        workflow=workflow.name,
        version=workflow.version,
        inputs=inputs,
        strategy=strategy,
        tasks=[
            task_preview(
                spec.tasks[name],
                node_ids,
                candidates,
                strategy,
                quota=quota_verdict(limits, load, spec.tasks[name]),
                not_granted=not_granted,
            )
            for name, node_ids in nodes.items()
        ],
    )


@router.post(
    "/preview",
    responses={404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
)
async def preview_execution(
    body: ExecutionCreate,
    session: SessionDep,
    caller: ExecutionsRead,
    blob_store: BlobStoreDep,
    settings: SettingsDep,
) -> ExecutionPreview:
    """Preview an execution without creating it: the same validation as creating one, then
    for each task the clusters it fits on now, where an attempt would be placed (and on which
    GPU type), and why each other cluster is excluded.

    Nothing is written. The answer is a snapshot: capacity and quota use change as attempts
    start and end. Clusters not granted to the tenant are listed as excluded.
    """
    return await run_in_threadpool(_preview, session, caller.tenant, body, blob_store, settings)
