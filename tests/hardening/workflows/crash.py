"""A two-step chain and a fan-out for crash-consistency tests
(tests/hardening/test_crash_consistency.py).

Every run of a step's body creates `<marker_dir>/<tag>.<index>.<pid>.run` as it starts, so the
test counts how often each task really ran, whatever the platform recorded. A file per run, not
a line per run in a shared file: a retry runs as a user of its own and could not append to a
file the killed run created (mode 600 under the task umask) if that run died before widening it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from fleetflow import map_task, task, workflow


@task
def step(previous: str, tag: str, index: int, seconds: float, marker_dir: str) -> str:
    Path(marker_dir, f"{tag}.{index}.{os.getpid()}.run").touch()
    time.sleep(seconds)
    return f"{previous}>{index}"


@workflow
def two_steps(tag: str, seconds: float, marker_dir: str) -> str:
    """`<tag>>1>2`: the second step consumes the first one's output."""
    first = step(previous=tag, tag=tag, index=1, seconds=seconds, marker_dir=marker_dir)
    return step(previous=first, tag=tag, index=2, seconds=seconds, marker_dir=marker_dir)


@task
def indices(n: int) -> list[int]:
    return list(range(n))


@workflow
def fan_out(tag: str, n: int, seconds: float, marker_dir: str) -> list[str]:
    """`[<tag>>0, …, <tag>>n-1]`: one `step` per element, its index as the step's."""
    return map_task(step)(
        previous=tag, tag=tag, index=indices(n=n), seconds=seconds, marker_dir=marker_dir
    )
