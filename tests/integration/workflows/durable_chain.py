"""A chain of slow steps, for stopping the Temporal server in the middle of an execution
(tests/integration/test_temporal_restart.py). Each run of a step leaves a marker file, so the
test can tell how often each step really ran."""

from __future__ import annotations

import os
import time
from pathlib import Path

from fleetflow import task, workflow


@task
def step(previous: int, index: int, seconds: float, marker_dir: str) -> int:
    Path(marker_dir, f"step-{index}.{os.getpid()}.started").write_text(str(time.time()))
    time.sleep(seconds)
    return previous * 10 + index


@workflow
def chain(seconds: float, marker_dir: str) -> int:
    """1, 12, 123, 1234: four steps, each after the one before."""
    one = step(previous=0, index=1, seconds=seconds, marker_dir=marker_dir)
    two = step(previous=one, index=2, seconds=seconds, marker_dir=marker_dir)
    three = step(previous=two, index=3, seconds=seconds, marker_dir=marker_dir)
    return step(previous=three, index=4, seconds=seconds, marker_dir=marker_dir)
