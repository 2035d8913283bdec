"""One-GPU tasks for the quota tests: each marks when it runs and holds its GPU a while."""

from __future__ import annotations

import time

from fleetflow import Resources, map_task, task, workflow


@task
def indices(n: int) -> list[int]:
    return list(range(n))


@task(resources=Resources(gpu=1, gpu_type="A100", cpu=0.1))
def hold_gpu(i: int, seconds: float) -> int:
    time.sleep(seconds)
    return i


@workflow
def gpu_jobs(n: int, seconds: float) -> list[int]:
    return map_task(hold_gpu)(i=indices(n=n), seconds=seconds)
