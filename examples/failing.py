"""A workflow whose second task raises: the execution ends FAILED with the traceback."""

from __future__ import annotations

from fleetflow import task, workflow


@task
def load(n: int) -> list[int]:
    return list(range(n))


@task
def explode(values: list[int]) -> int:
    raise ValueError(f"cannot handle {len(values)} values")


@workflow
def failing_pipeline(n: int = 3) -> int:
    return explode(values=load(n=n))
