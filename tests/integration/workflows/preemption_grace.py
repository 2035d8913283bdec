"""A GPU task for the preemption grace test (tests/integration/test_cohorts.py): its first
attempt traps SIGTERM, marks when it came and checkpoints in its grace, then leaves or carries
on (to be killed once the grace is over), noting every 0.1 s that it is still alive; the next
attempt returns what the checkpoint kept. Marker files go to `<marks>/<execution id>.*`."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from fleetflow import Resources, current_context, task, workflow


def _mark(path: str, text: str) -> None:
    """Write a marker whole or not at all: the kill can land at any instant, also between a
    plain write's truncation and its data (CI once read an empty `.alive`)."""
    Path(f"{path}.tmp").write_text(text)
    os.replace(f"{path}.tmp", path)


@task(resources=Resources(gpu=4, gpu_type="H100", cpu=0.1))
def trap_sigterm(marks: str, leave: bool) -> str:
    ctx = current_context()
    kept = ctx.checkpoint.read()
    if kept is not None:
        return kept.decode()
    base = Path(marks) / ctx.execution_id

    def trapped(_signum: int, _frame: object) -> None:
        _mark(f"{base}.term", repr(time.monotonic()))
        ctx.checkpoint.write(f"checkpointed in the grace of attempt {ctx.attempt_number}".encode())
        if leave:
            sys.exit(0)

    signal.signal(signal.SIGTERM, trapped)
    Path(f"{base}.ready").touch()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        _mark(f"{base}.alive", repr(time.monotonic()))
        time.sleep(0.1)
    return "never preempted"


@workflow
def graceful(marks: str, leave: bool) -> str:
    return trap_sigterm(marks=marks, leave=leave)
