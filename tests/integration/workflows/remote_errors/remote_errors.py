"""Workflows whose tasks fail in their author's code, for `test_remote_tracebacks.py`: one
raises two calls deep (in a module of a subpackage), one returns a value of the wrong type.
Both print and log first, so their attempt logs hold the author's lines and the runtime's."""

from __future__ import annotations

import logging

from remote_errors_lib.maths import mean

from fleetflow import task, workflow


@task
def load(n: int) -> list[float]:
    print(f"loading {n} values")
    return [float(i) for i in range(n)]


@task
def summarise(values: list[float], skip: int) -> float:
    print(f"summarising {len(values) - skip} of {len(values)} values")
    logging.getLogger("remote_errors").info("calling mean")
    return mean(values[skip:])


@workflow
def crashing(n: int = 3) -> float:
    return summarise(values=load(n=n), skip=n)


@task
def count(values: list[float]) -> int:
    return f"{len(values)} values"  # type: ignore[return-value]


@workflow
def miscounting(n: int = 2) -> int:
    return count(values=load(n=n))
