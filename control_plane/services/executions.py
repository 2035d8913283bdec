"""Creating an execution: one transaction that validates the request, claims its idempotency
key, checks the tenant's quota and stores the QUEUED execution, then commits (or rolls back);
and the launcher that then starts it.

The REST route only parses the request, calls `create_execution`, launches what it returns and
answers in HTTP; the preview validates with `validate_execution_request`, the same code. Errors
are `ExecutionRequestError`s, which the API renders (404 for an unknown workflow, 422 for the
rest), each naming what is wrong.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.orm import Session

from control_plane.blob_layout import execution_prefix, input_blob_prefixes, inputs_key
from control_plane.db.models import Execution, Tenant, WorkflowVersion, new_id, utcnow
from control_plane.db.repositories import executions as executions_repo
from control_plane.db.repositories import tenancy
from control_plane.db.repositories.workflows import get_workflow_version
from control_plane.large_values import load_values, store_values
from control_plane.placement.gangs import exceeds_whole_quota_of
from control_plane.quota import limits_of
from control_plane.schemas.common import FieldError
from control_plane.schemas.executions import ExecutionCreate
from control_plane.services.execution_inputs import InputValidationError, validate_execution_inputs
from control_plane.services.lineage import record_execution_inputs
from control_plane.services.tenant_blobs import Refused, TenantBlobs
from fleetflow.api_models.notifications import NotificationRule
from fleetflow.files import blob_literals
from fleetflow.ir import TypedInterface, WorkflowSpec
from fleetflow.states import ExecutionState
from fleetflow.storage import BlobStore

IDEMPOTENCY_HEADER = "Idempotency-Key"


class ExecutionLauncher(Protocol):
    """Starts the orchestration of a persisted, QUEUED execution (Temporal in production).

    Must be idempotent: starting an execution that is already started is not an error.
    """

    async def start_execution(self, execution_id: str) -> bool:
        """Start the execution's workflow; False when it was already started (idempotent)."""
        ...

    async def cancel_execution(self, execution_id: str) -> None:
        """Ask the execution's workflow to cancel; a no-op when it is not running."""
        ...


class RootsFirstLauncher:
    """An `ExecutionLauncher` that starts an execution's first tasks itself, beside the
    workflow's start (`ExecutionActivities.start_roots`): they are placed while Temporal
    starts the workflow, whose first `start_attempts` then finds them."""

    def __init__(self, inner: ExecutionLauncher, start_roots: Callable[[str], object]) -> None:
        self._inner = inner
        self._start_roots = start_roots

    async def start_execution(self, execution_id: str) -> bool:
        roots = asyncio.create_task(asyncio.to_thread(self._start_roots, execution_id))
        try:
            return await self._inner.start_execution(execution_id)
        finally:
            await roots

    async def cancel_execution(self, execution_id: str) -> None:
        await self._inner.cancel_execution(execution_id)


class ExecutionRequestError(Exception):
    """A request that cannot create an execution: the message says why, `errors` names each
    field at fault; `status_code`, what the API answers."""

    status_code = 422

    def __init__(self, message: str, errors: Sequence[FieldError] | None = None) -> None:
        super().__init__(message)
        self.errors = list(errors) if errors else None


class WorkflowNotRegistered(ExecutionRequestError):
    """The request names a workflow (version) the tenant has not registered."""

    status_code = 404


class ExecutionNotFound(ExecutionRequestError):
    """A relaunch or recovery names no execution of the tenant (another tenant's reads the
    same: its existence is not told)."""

    status_code = 404


class NotRecoverable(ExecutionRequestError):
    """A recovery of an execution that did not fail or was not cancelled."""

    status_code = 409


@dataclass(frozen=True)
class Creation:
    """What `create_execution` did: created `execution`, or found the one an earlier request
    with the same idempotency key created (`replayed`)."""

    execution: Execution
    replayed: bool


def validate_execution_request(
    session: Session, tenant: Tenant, body: ExecutionCreate, blob_store: BlobStore
) -> tuple[WorkflowVersion, dict[str, Any]]:
    """The workflow version an execution request names and its validated inputs; creation and
    its preview share it.

    Raises:
        WorkflowNotRegistered: no such workflow (version) in the tenant.
        ExecutionRequestError: naming each wrong input.
    """
    workflow = get_workflow_version(session, tenant.id, body.workflow, body.version)
    if workflow is None:
        which = f"version {body.version} of workflow" if body.version else "workflow"
        raise WorkflowNotRegistered(
            f"{which} {body.workflow} is not registered: register it first (fleetflow register)"
        )
    interface = TypedInterface.model_validate(workflow.spec["interface"])
    try:
        inputs = validate_execution_inputs(
            interface,
            body.inputs,
            blob_prefixes=tuple(
                blob_store.uri(prefix) + "/" for prefix in input_blob_prefixes(tenant.name)
            ),
        )
        check_input_blobs(session, tenant, interface, inputs, blob_store)
    except InputValidationError as exc:
        raise ExecutionRequestError(
            f"invalid inputs for workflow {workflow.name} version {workflow.version}: {exc}",
            exc.errors,
        ) from None
    return workflow, inputs


def check_input_blobs(
    session: Session,
    tenant: Tenant,
    interface: TypedInterface,
    inputs: dict[str, Any],
    blob_store: BlobStore,
) -> None:
    """Every File and Directory input names a blob the tenant may read: its uploads, or the
    outputs of its own executions (not another tenant's, nor a path that climbs out with `..`,
    which a task would otherwise read on the tenant's behalf).

    Raises:
        InputValidationError: naming each input that does not; every refusal reads alike, so
            it does not tell whether another tenant's execution exists.
    """
    readable = TenantBlobs(session, tenant, blob_store)
    errors: list[FieldError] = []
    for variable in interface.inputs:
        name = variable.name
        for path, _kind, blob in blob_literals(inputs.get(name), variable.type, f"inputs.{name}"):
            uri = str(blob["uri"])
            try:
                readable.check(uri)
            except Refused:
                # Worded as `validate_execution_inputs` words a URI of no blob store.
                message = (
                    f"{uri!r} is not a blob of this control plane: upload the file (the CLI "
                    "and Client do) and pass the URI they return"
                )
                errors.append(FieldError(field=path, message=message))
    if errors:
        raise InputValidationError(errors)


def check_whole_quota(session: Session, tenant: Tenant, workflow: WorkflowVersion) -> None:
    """Refuse a workflow a task of which could never start within the tenant's quota.

    Raises:
        ExecutionRequestError: naming the task and the limit.
    """
    limits = limits_of(tenancy.get_quota(session, tenant))
    for name, task in sorted(WorkflowSpec.model_validate(workflow.spec).tasks.items()):
        if task.reference is not None:  # a stub: its child execution is checked when it starts
            continue
        problem = exceeds_whole_quota_of(limits, name, task)
        if problem is not None:
            raise ExecutionRequestError(
                f"{problem}. Ask a platform admin to raise the quota, or request less."
            )


def request_hash(body: ExecutionCreate, source: Source | None = None) -> str:
    """sha256 of the request as the API understands it: key order, spacing and defaults
    spelled out or left out make no difference. A relaunch or recovery (`source`) differs
    from a launch, and from each other, on the same body."""
    request = body.model_dump(mode="json")
    if not request.get("notifications"):  # as requests hashed before notifications existed
        request.pop("notifications", None)
    if source is not None:
        request["source"] = source.columns()
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Source:
    """The execution a new one is started again from (`relaunch_execution`)."""

    execution_id: str
    recover: bool

    def columns(self) -> dict[str, str]:
        return {("recovered_from" if self.recover else "relaunched_from"): self.execution_id}


RELAUNCH_VERSIONS = ("same", "latest")
RECOVERABLE = (ExecutionState.FAILED, ExecutionState.CANCELLED)


def create_execution(
    session: Session,
    tenant: Tenant,
    body: ExecutionCreate,
    blob_store: BlobStore,
    *,
    idempotency_key: str | None,
    idempotency_key_ttl: timedelta = timedelta(hours=24),
    source: Source | None = None,
    launched_by: str | None = None,
) -> Creation:
    """Create a QUEUED execution in one transaction, committed; or find the one an earlier
    request with `idempotency_key` created (keys younger than `idempotency_key_ttl` only).
    With `source`, it records the execution it is started again from; with `launched_by`,
    the principal (name) whose request launched it.

    Raises:
        ExecutionRequestError: the request is invalid, exceeds the quota as a whole, or reuses
            the key of a different request; nothing is written.
    """
    try:
        return _create_execution(
            session,
            tenant,
            body,
            blob_store,
            idempotency_key,
            idempotency_key_ttl,
            source,
            launched_by,
        )
    except BaseException:
        session.rollback()
        raise


def relaunch_execution(
    session: Session,
    tenant: Tenant,
    execution_id: str,
    blob_store: BlobStore,
    *,
    recover: bool = False,
    version: str = "same",
    idempotency_key: str | None = None,
    idempotency_key_ttl: timedelta = timedelta(hours=24),
    launched_by: str | None = None,
) -> Creation:
    """Start the tenant's execution `execution_id` again, on the same inputs and priority: of
    the same version of its workflow, or (`version="latest"`) of the latest one. With
    `recover` (same version only), of a FAILED or CANCELLED execution: the new execution
    reuses the outputs of every node (and map element) that succeeded in it, and runs the
    rest. Validated, checked against the quota and idempotent like `create_execution`.

    Raises:
        ExecutionNotFound: no such execution in the tenant.
        NotRecoverable: `recover` of an execution that neither failed nor was cancelled.
        ExecutionRequestError: an unknown `version` choice, or inputs the latest version
            does not accept.
    """
    if version not in RELAUNCH_VERSIONS:
        message = f"must be one of {', '.join(RELAUNCH_VERSIONS)}, not {version!r}"
        raise ExecutionRequestError(
            f"invalid version: {message}", [FieldError(field="version", message=message)]
        )
    source = executions_repo.get_execution(session, tenant.id, execution_id)
    if source is None:
        raise ExecutionNotFound(f"execution {execution_id} not found")
    if recover and ExecutionState(source.status) not in RECOVERABLE:
        raise NotRecoverable(
            f"execution {execution_id} is {source.status}: only a FAILED or CANCELLED execution "
            "is recovered (`relaunch` starts any execution again)"
        )
    body = ExecutionCreate(
        workflow=source.workflow.name,
        version=source.workflow.version if version == "same" else None,
        inputs=load_values(source.inputs, blob_store) or {},
        priority=source.priority,
        notifications=[NotificationRule.model_validate(r) for r in source.notifications or []],
    )
    return create_execution(
        session,
        tenant,
        body,
        blob_store,
        idempotency_key=idempotency_key,
        idempotency_key_ttl=idempotency_key_ttl,
        source=Source(execution_id, recover),
        launched_by=launched_by,
    )


def _create_execution(
    session: Session,
    tenant: Tenant,
    body: ExecutionCreate,
    blob_store: BlobStore,
    idempotency_key: str | None,
    idempotency_key_ttl: timedelta,
    source: Source | None,
    launched_by: str | None = None,
) -> Creation:
    fingerprint = request_hash(body, source)
    keys_not_before = utcnow() - idempotency_key_ttl  # older keys have expired
    if idempotency_key is not None:
        earlier = _replay(session, tenant, idempotency_key, fingerprint, keys_not_before)
        if earlier is not None:
            return Creation(earlier, replayed=True)
    workflow, inputs = validate_execution_request(session, tenant, body, blob_store)
    check_whole_quota(session, tenant, workflow)
    execution_id = new_id("ex")
    stored = store_values(
        inputs, blob_store, inputs_key(execution_prefix(tenant.name, execution_id))
    )
    execution = executions_repo.create_execution(
        session,
        tenant.id,
        workflow,
        stored,
        execution_id=execution_id,
        priority=body.priority,
        notifications=[rule.model_dump(mode="json") for rule in body.notifications],
        launched_by=launched_by,
        **(source.columns() if source else {}),
    )
    interface = TypedInterface.model_validate(workflow.spec["interface"])
    record_execution_inputs(session, tenant.id, execution_id, interface, inputs)
    if idempotency_key is not None:
        holder = executions_repo.claim_idempotency_key(
            session,
            tenant.id,
            idempotency_key,
            fingerprint,
            execution_id,
            not_before=keys_not_before,
        )
        if holder.execution_id != execution_id:  # a concurrent request with the key won
            session.rollback()
            earlier = _replay(session, tenant, idempotency_key, fingerprint, keys_not_before)
            assert earlier is not None
            return Creation(earlier, replayed=True)
    session.commit()
    return Creation(execution, replayed=False)


def _replay(
    session: Session, tenant: Tenant, key: str, fingerprint: str, not_before: datetime
) -> Execution | None:
    """The execution an earlier request with `key` (at or after `not_before`: younger keys
    only) created; refused if that request differed."""
    used = executions_repo.get_idempotency_key(session, tenant.id, key, not_before=not_before)
    if used is None:
        return None
    if used.request_hash != fingerprint:
        message = (
            f"{IDEMPOTENCY_HEADER} {key!r} was used for a different request (execution "
            f"{used.execution_id}): use a new key for a new execution"
        )
        raise ExecutionRequestError(
            message, [FieldError(field=IDEMPOTENCY_HEADER, message=message)]
        )
    execution = executions_repo.get_execution(session, tenant.id, used.execution_id)
    assert execution is not None
    return execution
