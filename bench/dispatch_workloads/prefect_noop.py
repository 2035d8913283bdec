"""The benchmark's DAGs as Prefect 3 flows, deployed to a process work pool by
`bench/dispatch_prefect.py`: each flow run is a process the worker starts, and the flow's
tasks run in it as Prefect task runs (tracked by the server)."""

from __future__ import annotations

import time

from prefect import flow, task


@task
def stamp(path: str) -> float:
    """Write the wall-clock time at which the task body starts to `path`."""
    now = time.time()
    with open(path, "w") as f:
        f.write(repr(now))
    return now


@task
def add_one(x: int) -> int:
    return x + 1


@flow
def single(path: str) -> float:
    return stamp(path=path)


@flow
def chain(size: int, x: int = 0) -> int:
    for _ in range(size):
        x = add_one(x=x)
    return x


@flow
def fan(size: int, x: int = 0) -> int:
    futures = [add_one.submit(x=x) for _ in range(size)]
    return [future.result() for future in futures][-1]
