"""Independent plain tasks and one that sums them, for the finish notifier's held successes
(tests/integration/test_end_to_end.py)."""

from __future__ import annotations

from fleetflow import task, workflow


@task
def inc(x: int) -> int:
    return x + 1


@task
def total(a: int, b: int, c: int, d: int, e: int) -> int:
    return a + b + c + d + e


@workflow
def fan(x: int) -> int:
    """Five `inc` of `x` at once, then their sum."""
    return total(a=inc(x=x), b=inc(x=x), c=inc(x=x), d=inc(x=x), e=inc(x=x))
