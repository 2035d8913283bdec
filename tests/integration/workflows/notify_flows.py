"""Workflows whose executions notify webhooks: one fails, one succeeds
(tests/integration/test_notifications.py)."""

from __future__ import annotations

from fleetflow import task, workflow


@task
def explode(x: int) -> int:
    raise ValueError(f"exploded on {x}")


@task
def double(x: int) -> int:
    return 2 * x


@workflow
def failing(x: int) -> int:
    return explode(x=x)


@workflow
def fine(x: int) -> int:
    return double(x=x)
