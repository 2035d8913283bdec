"""`client.launchplans`: launch plans (a workflow version with fixed and default inputs, labels,
a priority and an optional schedule), launching them, and running their schedules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fleetflow.api_models.executions import ExecutionPublic
from fleetflow.api_models.launch_plans import (
    Backfill,
    LaunchPlanCreate,
    LaunchPlanPublic,
    OverlapPolicy,
    ScheduleSpec,
)
from fleetflow.api_models.notifications import NotificationRule
from fleetflow.client.transport import Transport, path_part

LaunchPlanList = list[LaunchPlanPublic]


class LaunchPlans:
    """Launch plans of the tenant."""

    def __init__(self, transport: Transport):
        self._transport = transport

    @staticmethod
    def path(name: str) -> str:
        return f"/api/v1/launchplans/{path_part(name)}"

    def create(
        self,
        name: str,
        workflow: str,
        *,
        version: str | None = None,
        fixed_inputs: dict[str, Any] | None = None,
        default_inputs: dict[str, Any] | None = None,
        schedule: ScheduleSpec | None = None,
        labels: dict[str, str] | None = None,
        priority: int = 0,
        notifications: list[NotificationRule] | None = None,
    ) -> LaunchPlanPublic:
        """Create a launch plan of a registered workflow (`version`: default the latest), or
        replace the inactive plan of its name. Inputs are JSON literals.

            client.launchplans.create(
                "nightly", "train.pipeline", fixed_inputs={"dataset": "s3://…"},
                schedule=ScheduleSpec(cron="0 3 * * *", timezone="Europe/Paris"),
            )
        """
        body = LaunchPlanCreate(
            name=name,
            workflow=workflow,
            version=version,
            fixed_inputs=fixed_inputs or {},
            default_inputs=default_inputs or {},
            schedule=schedule,
            labels=labels or {},
            priority=priority,
            notifications=notifications or [],
        )
        return self._transport.call(
            "POST",
            "/api/v1/launchplans",
            LaunchPlanPublic,
            json=body.model_dump(mode="json", exclude_none=True),
        )

    def list(self) -> LaunchPlanList:
        return self._transport.call("GET", "/api/v1/launchplans", LaunchPlanList)

    def get(self, name: str) -> LaunchPlanPublic:
        return self._transport.call("GET", self.path(name), LaunchPlanPublic)

    def launch(self, name: str, inputs: dict[str, Any] | None = None) -> ExecutionPublic:
        """Launch the plan now; `inputs` override its defaults (never its fixed inputs)."""
        return self._transport.call(
            "POST", f"{self.path(name)}/launch", ExecutionPublic, json={"inputs": inputs or {}}
        )

    def _post(self, name: str, action: str, **kwargs: Any) -> LaunchPlanPublic:
        return self._transport.call(
            "POST", f"{self.path(name)}/{action}", LaunchPlanPublic, **kwargs
        )

    def activate(self, name: str) -> LaunchPlanPublic:
        """Start the plan's schedule (idempotent)."""
        return self._post(name, "activate")

    def deactivate(self, name: str) -> LaunchPlanPublic:
        """Delete the plan's schedule (idempotent); executions it launched run on."""
        return self._post(name, "deactivate")

    def pause(self, name: str) -> LaunchPlanPublic:
        return self._post(name, "pause")

    def resume(self, name: str) -> LaunchPlanPublic:
        return self._post(name, "resume")

    def backfill(
        self,
        name: str,
        start: datetime,
        end: datetime,
        *,
        overlap: OverlapPolicy = OverlapPolicy.ALLOW_ALL,
    ) -> LaunchPlanPublic:
        """Launch now every time the schedule names in [start, end); once each, however
        often the range is backfilled."""
        body = Backfill(start=start, end=end, overlap=overlap)
        return self._post(name, "backfill", json=body.model_dump(mode="json"))
