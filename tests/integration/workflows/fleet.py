"""Workflows for the three-cluster tests: tasks steered by cluster labels, and tasks that hold
their cluster long enough to be cancelled."""

from __future__ import annotations

import os
import time
from pathlib import Path

from fleetflow import Resources, map_task, task, workflow


def _mark(marker_dir: str, name: str) -> None:
    Path(marker_dir, f"{name}-{os.getpid()}").touch()


@task(resources=Resources(labels={"zone": "east"}))
def in_east(marker_dir: str) -> str:
    _mark(marker_dir, "east")
    return "east"


@task(resources=Resources(labels={"zone": "west"}))
def in_west(marker_dir: str) -> str:
    _mark(marker_dir, "west")
    return "west"


@task
def anywhere(a: str, b: str) -> str:
    return f"{a}+{b}"


@workflow
def zones(marker_dir: str) -> str:
    return anywhere(a=in_east(marker_dir=marker_dir), b=in_west(marker_dir=marker_dir))


@task
def indices(n: int) -> list[int]:
    return list(range(n))


@task
def linger(i: int, marker_dir: str) -> int:
    """Marks that element `i` runs (pid in the name), then holds its cluster for a minute."""
    _mark(marker_dir, f"linger{i}")
    time.sleep(60)
    return i


@workflow
def lingering_fan_out(n: int, marker_dir: str) -> list[int]:
    return map_task(linger)(i=indices(n=n), marker_dir=marker_dir)
