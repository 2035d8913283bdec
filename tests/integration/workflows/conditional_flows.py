"""Workflows with conditionals, run through the whole stack (test_conditional.py)."""

from __future__ import annotations

import contextlib
import os
import time

from fleetflow import conditional, task, workflow


@task
def measure(n: int, seconds: float = 0.0, marker: str = "") -> int:
    """`n`, after writing `marker` (when given) and sleeping `seconds`: a step to restart the
    control plane during."""
    if marker:
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        with contextlib.suppress(PermissionError):
            os.chmod(marker, 0o666)
    time.sleep(seconds)
    return n


@task
def big(x: int) -> int:
    return x * 100


@task
def small(x: int) -> int:
    return -x


@task
def describe(v: int) -> str:
    return f"value {v}"


@workflow
def branching(n: int, seconds: float = 0.0, marker: str = "") -> str:
    m = measure(n=n, seconds=seconds, marker=marker)
    v = (
        conditional("size")
        .if_(m > 10)
        .then(big(x=m))
        .elif_(m < 0)
        .fail("negative sizes are refused")
        .else_()
        .then(small(x=m))
    )
    return describe(v=v)


@workflow
def on_inputs(n: int, loud: bool = False) -> int:
    """A conditional on inputs only: its branch nodes have no upstream node at all."""
    return (
        conditional("loudness")
        .if_(loud.is_true() & (n != 0))
        .then(big(x=n))
        .else_()
        .then(small(x=n))
    )
