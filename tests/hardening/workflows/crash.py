"""A two-step chain for crash-consistency tests (tests/hardening/test_crash_consistency.py).

Every run of a step's body appends its pid to `<marker_dir>/<tag>.<index>.runs` as it starts,
so the test counts how often each task really ran, whatever the platform recorded.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from fleetflow import task, workflow


@task
def step(previous: str, tag: str, index: int, seconds: float, marker_dir: str) -> str:
    runs = Path(marker_dir, f"{tag}.{index}.runs")
    with runs.open("a") as f:
        f.write(f"{os.getpid()}\n")
    with contextlib.suppress(PermissionError):  # a retry runs as a user of its own
        runs.chmod(0o666)
    time.sleep(seconds)
    return f"{previous}>{index}"


@workflow
def two_steps(tag: str, seconds: float, marker_dir: str) -> str:
    """`<tag>>1>2`: the second step consumes the first one's output."""
    first = step(previous=tag, tag=tag, index=1, seconds=seconds, marker_dir=marker_dir)
    return step(previous=first, tag=tag, index=2, seconds=seconds, marker_dir=marker_dir)
