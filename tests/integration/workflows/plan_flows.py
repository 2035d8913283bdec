"""A workflow launched through a launch plan from the CLI
(tests/integration/test_launch_plan_runs.py): inputs of several types, some fixed or defaulted
by the plan, the rest given as typed flags."""

from __future__ import annotations

from fleetflow import task, workflow


@task
def scale(x: int, factor: int, label: str, enabled: bool) -> str:
    return f"{label}:{x * factor}:{enabled}"


@workflow
def planned(x: int, factor: int = 2, label: str = "run", enabled: bool = False) -> str:
    return scale(x=x, factor=factor, label=label, enabled=enabled)
