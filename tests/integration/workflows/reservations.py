"""GPU tasks for the reservation tests: small one-GPU jobs that keep a cluster partly busy, a
large job that needs all of its GPUs, and a one-GPU job that holds its GPU until a file
appears."""

from __future__ import annotations

import os
import time

from fleetflow import Resources, task, workflow


@task(resources=Resources(gpu=1, gpu_type="A100", cpu=0.1))
def hold_one(i: int, seconds: float) -> int:
    time.sleep(seconds)
    return i


@task(resources=Resources(gpu=4, gpu_type="A100", cpu=0.1))
def hold_all(seconds: float) -> int:
    time.sleep(seconds)
    return 4


@workflow
def small_job(i: int, seconds: float) -> int:
    return hold_one(i=i, seconds=seconds)


@workflow
def large_job(seconds: float) -> int:
    return hold_all(seconds=seconds)


@task(resources=Resources(gpu=1, gpu_type="A100", cpu=0.1))
def hold_until(gate: str) -> int:
    """Hold one GPU until the test creates the file `gate` (at most 120 s)."""
    deadline = time.monotonic() + 120
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{gate} never appeared")
        time.sleep(0.05)
    return 1


@workflow
def gated_job(gate: str) -> int:
    return hold_until(gate=gate)
