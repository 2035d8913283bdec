"""GPU tasks for the cohort tests: a long training loop that checkpoints every step and leaves
a marker file per step (`<marks>/<element>.step-<step>.attempt-<n>`, in a directory every task
user may write), and a short job."""

from __future__ import annotations

import json
import time
from pathlib import Path

from fleetflow import Resources, current_context, map_task, task, workflow


@task
def indices(n: int) -> list[int]:
    return list(range(n))


@task(resources=Resources(gpu=2, gpu_type="H100", cpu=0.1))
def train(i: int, steps: int, step_seconds: float, marks: str) -> int:
    """Runs `steps` steps from the last checkpoint; returns the step it started from."""
    ctx = current_context()
    start = int(json.loads(ctx.checkpoint.read() or b'{"step": 0}')["step"])
    for step in range(start, steps):
        (Path(marks) / f"{i}.step-{step}.attempt-{ctx.attempt_number}").touch()
        time.sleep(step_seconds)
        ctx.checkpoint.write(json.dumps({"step": step + 1}).encode())
    return start


@workflow
def training(n: int, steps: int, step_seconds: float, marks: str) -> list[int]:
    return map_task(train)(i=indices(n=n), steps=steps, step_seconds=step_seconds, marks=marks)


@task(resources=Resources(gpu=2, gpu_type="H100", cpu=0.1))
def short_job(i: int, seconds: float) -> int:
    time.sleep(seconds)
    return i


@workflow
def short_jobs(n: int, seconds: float) -> list[int]:
    return map_task(short_job)(i=indices(n=n), seconds=seconds)


@task(resources=Resources(gpu=4, gpu_type="H100", cpu=0.1))
def whole_box(seconds: float, marks: str) -> int:
    """Holds all four GPUs of a box; its attempt number is its mark."""
    ctx = current_context()
    (Path(marks) / f"{ctx.execution_id}.attempt-{ctx.attempt_number}").touch()
    time.sleep(seconds)
    return ctx.attempt_number


@workflow
def one_box(seconds: float, marks: str) -> int:
    return whole_box(seconds=seconds, marks=marks)
