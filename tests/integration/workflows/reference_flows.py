"""Workflows that call other registered workflows by name and version (`@reference_workflow`),
for tests/integration/test_reference_workflows.py. The tests register the referenced ones
first (`child`, `failing_child`, `slow_child`) under the versions the stubs name."""

from __future__ import annotations

import time
from pathlib import Path

from fleetflow import reference_workflow, task, workflow


@task
def scale(x: int, factor: float) -> float:
    return x * factor


@task
def boom(x: int) -> int:
    raise ValueError(f"the child cannot take {x}")


@task
def pause(seconds: float, marker: str) -> int:
    Path(marker).write_text("started")
    time.sleep(seconds)
    return 7


@task
def add_one(y: float) -> float:
    return y + 1


@workflow
def child(x: int, factor: float) -> float:
    return scale(x=x, factor=factor)


@workflow
def failing_child(x: int) -> int:
    return boom(x=x)


@workflow
def slow_child(seconds: float, marker: str) -> int:
    return pause(seconds=seconds, marker=marker)


@reference_workflow(name="reference_flows.child", version="v1")
def child_v1(x: int, factor: float) -> float: ...


@reference_workflow(name="reference_flows.failing_child", version="v1")
def failing_v1(x: int) -> int: ...


@reference_workflow(name="reference_flows.slow_child", version="v1")
def slow_v1(seconds: float, marker: str) -> int: ...


@reference_workflow(name="reference_flows.child", version="v1")
def child_mistyped(x: str, factor: float) -> float: ...


@reference_workflow(name="reference_flows.child", version="tenant-b")
def child_of_tenant_b(x: int, factor: float) -> float: ...


@workflow
def parent(x: int) -> float:
    return add_one(y=child_v1(x=x, factor=2.5))


@task
def twice(x: int) -> int:
    return 2 * x


@workflow
def parent_after_a_task(x: int) -> float:
    """Its first task admits it as a running execution before its child starts."""
    return child_v1(x=twice(x=x), factor=1.5)


@workflow
def parent_of_failing(x: int) -> int:
    return failing_v1(x=x)


@workflow
def parent_of_slow(seconds: float, marker: str) -> int:
    return slow_v1(seconds=seconds, marker=marker)


@workflow
def parent_mistyped(x: str) -> float:
    return child_mistyped(x=x, factor=1.0)


@workflow
def hostile(x: int) -> float:
    return child_of_tenant_b(x=x, factor=1.0)
