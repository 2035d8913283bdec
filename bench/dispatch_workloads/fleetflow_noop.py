"""The benchmark's DAGs as Fleetflow workflows (see `bench/dispatch.py`).

This directory is the code bundle the agent's task processes import, so it holds only the
workload modules of the three systems, each importing nothing but its own framework.
"""

from __future__ import annotations

import time
from typing import Any

from fleetflow import Resources, map_task, task, workflow


@task
def stamp(path: str) -> float:
    """Write the wall-clock time at which the task body starts to `path`."""
    now = time.time()
    with open(path, "w") as f:
        f.write(repr(now))
    return now


# A no-op asks for little: the fan-out measures dispatch, not a 2-core machine's 2 CPU slots
# (a task asks for 1 CPU by default).
@task(resources=Resources(cpu="100m"))
def add_one(x: int) -> int:
    return x + 1


@workflow
def single(path: str) -> float:
    return stamp(path=path)


def make_chain(length: int) -> Any:
    """`length` calls of `add_one`, each consuming the previous output."""

    @workflow
    def chain(x: int = 0) -> int:
        for _ in range(length):
            x = add_one(x=x)
        return x

    return chain


def make_fan(width: int) -> Any:
    """`width` independent calls of `add_one` on the workflow input."""

    @workflow
    def fan(x: int = 0) -> int:
        last = x
        for _ in range(width):
            last = add_one(x=x)
        return last

    return fan


@task
def elements(n: int) -> list[int]:
    return list(range(n))


@workflow
def wide_map(n: int) -> list[int]:
    """`add_one` over `n` elements: one attempt per element (bench/large_map.py)."""
    return map_task(add_one)(x=elements(n=n))
