"""Launch plans: creating one (its inputs checked against the workflow's interface) and turning
it into an execution request, by hand or for a scheduled time.

A launch goes through `services.executions.create_execution`, as an API request does: the same
validation, quota check and idempotency. A scheduled launch's idempotency key is the plan's
id and the scheduled time, so a fire Temporal repeats never makes a second execution.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.db.models import LaunchPlan, Tenant, WorkflowVersion, new_id
from control_plane.db.repositories.workflows import get_workflow_version
from control_plane.schemas.common import FieldError
from control_plane.schemas.executions import ExecutionCreate
from control_plane.services.execution_inputs import InputValidationError, validate_execution_inputs
from control_plane.services.executions import ExecutionRequestError, WorkflowNotRegistered
from fleetflow.api_models.launch_plans import (
    KICKOFF_INPUT,
    LaunchPlanCreate,
    LaunchPlanPublic,
    ScheduleSpec,
)
from fleetflow.api_models.notifications import NotificationRule, NotificationRulePublic
from fleetflow.ir import TypedInterface

_MISSING = "missing required input"


class LaunchPlanActive(Exception):
    """The plan to replace is active: deactivate it first."""


def get_launch_plan(session: Session, tenant_id: str, name: str) -> LaunchPlan | None:
    return session.scalar(
        select(LaunchPlan).where(LaunchPlan.tenant_id == tenant_id, LaunchPlan.name == name)
    )


def list_launch_plans(session: Session, tenant_id: str) -> list[LaunchPlan]:
    return list(
        session.scalars(
            select(LaunchPlan).where(LaunchPlan.tenant_id == tenant_id).order_by(LaunchPlan.name)
        )
    )


def launch_plan_public(plan: LaunchPlan) -> LaunchPlanPublic:
    return LaunchPlanPublic(
        id=plan.id,
        name=plan.name,
        workflow=plan.workflow.name,
        version=plan.workflow.version,
        fixed_inputs=plan.fixed_inputs,
        default_inputs=plan.default_inputs,
        schedule=ScheduleSpec.model_validate(plan.schedule) if plan.schedule else None,
        labels=plan.labels,
        priority=plan.priority,
        active=plan.active,
        paused=plan.paused,
        created_at=plan.created_at,
        notifications=[
            NotificationRulePublic.of(NotificationRule.model_validate(rule))
            for rule in plan.notifications or []
        ],
    )


def _kickoff_takes(interface: TypedInterface) -> bool:
    """Whether the workflow takes the scheduled time (`kickoff_time: datetime`)."""
    return any(
        v.name == KICKOFF_INPUT and v.type.describe() == "datetime" for v in interface.inputs
    )


def _check_inputs(workflow: WorkflowVersion, body: LaunchPlanCreate) -> None:
    """Fixed and default inputs are inputs of the workflow, of its types; a scheduled plan
    gives every required input (but the scheduled time's).

    Raises:
        ExecutionRequestError: naming each problem by field.
    """
    interface = TypedInterface.model_validate(workflow.spec["interface"])
    errors: list[FieldError] = []
    for name in sorted(set(body.fixed_inputs) & set(body.default_inputs)):
        errors.append(
            FieldError(field=f"fixed_inputs.{name}", message="both fixed and defaulted: pick one")
        )
    for field, given in (
        ("fixed_inputs", body.fixed_inputs),
        ("default_inputs", body.default_inputs),
    ):
        try:
            validate_execution_inputs(interface, given)
        except InputValidationError as exc:
            for error in exc.errors:
                if error.message.startswith(_MISSING):
                    continue
                errors.append(
                    FieldError(
                        field=field + error.field.removeprefix("inputs"), message=error.message
                    )
                )
    if body.schedule is not None:
        given = {**body.fixed_inputs, **body.default_inputs}
        if _kickoff_takes(interface):
            given[KICKOFF_INPUT] = datetime.now(UTC).isoformat()
        try:
            validate_execution_inputs(interface, given)
        except InputValidationError as exc:
            for error in exc.errors:
                if error.message.startswith(_MISSING):
                    errors.append(
                        FieldError(
                            field=error.field,
                            message=f"{error.message}: a scheduled plan must fix or default it",
                        )
                    )
    if errors:
        raise ExecutionRequestError(
            f"invalid launch plan {body.name} for workflow {workflow.name} version "
            f"{workflow.version}: " + "; ".join(f"{e.field}: {e.message}" for e in errors),
            errors,
        )


def save_launch_plan(session: Session, tenant: Tenant, body: LaunchPlanCreate) -> LaunchPlan:
    """Create the plan, or replace the inactive one of its name; committed.

    Raises:
        WorkflowNotRegistered: the tenant has no such workflow (version).
        ExecutionRequestError: an input is unknown, mistyped or missing.
        LaunchPlanActive: the plan to replace is active.
    """
    workflow = get_workflow_version(session, tenant.id, body.workflow, body.version)
    if workflow is None:
        which = f"version {body.version} of workflow" if body.version else "workflow"
        raise WorkflowNotRegistered(
            f"{which} {body.workflow} is not registered: register it first (fleetflow register)"
        )
    _check_inputs(workflow, body)
    earlier = get_launch_plan(session, tenant.id, body.name)
    if earlier is not None:
        if earlier.active:
            raise LaunchPlanActive(
                f"launch plan {body.name} is active: deactivate it first "
                f"(fleetflow launchplans deactivate {body.name})"
            )
        session.delete(earlier)
        session.flush()
    plan = LaunchPlan(
        id=new_id("lp"),
        tenant_id=tenant.id,
        name=body.name,
        workflow_spec_id=workflow.id,
        fixed_inputs=body.fixed_inputs,
        default_inputs=body.default_inputs,
        schedule=body.schedule.model_dump(mode="json") if body.schedule else None,
        labels=body.labels,
        priority=body.priority,
        active=False,
        paused=False,
        notifications=[rule.model_dump(mode="json") for rule in body.notifications] or None,
    )
    session.add(plan)
    session.commit()
    return plan


def execution_request(
    plan: LaunchPlan, inputs: dict[str, Any], scheduled_at: datetime | None = None
) -> ExecutionCreate:
    """The execution request of a launch of `plan` with `inputs` (at `scheduled_at`, for a
    scheduled one): its defaults, overridden by `inputs`, and its fixed inputs.

    Raises:
        ExecutionRequestError: `inputs` names a fixed input.
    """
    overridden = sorted(set(inputs) & set(plan.fixed_inputs))
    if overridden:
        errors = [
            FieldError(field=f"inputs.{name}", message="fixed by the launch plan")
            for name in overridden
        ]
        raise ExecutionRequestError(
            f"launch plan {plan.name} fixes {', '.join(overridden)}: a launch cannot change "
            "them (create a plan that defaults them instead)",
            errors,
        )
    merged = {**plan.default_inputs, **inputs, **plan.fixed_inputs}
    if scheduled_at is not None:
        interface = TypedInterface.model_validate(plan.workflow.spec["interface"])
        if _kickoff_takes(interface):
            merged[KICKOFF_INPUT] = scheduled_at.astimezone(UTC).isoformat()
    return ExecutionCreate(
        workflow=plan.workflow.name,
        version=plan.workflow.version,
        inputs=merged,
        priority=plan.priority,
        notifications=[NotificationRule.model_validate(r) for r in plan.notifications or []],
    )


def schedule_idempotency_key(plan: LaunchPlan, scheduled_at: datetime) -> str:
    """One execution per plan and scheduled time, however often the time fires."""
    return f"schedule:{plan.id}:{scheduled_at.astimezone(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}"
