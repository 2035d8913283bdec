"""Workflows that fail until a marker file exists, and count how often each task really runs
(one line per run in `<marker>.<task>`): `test_relaunch.py` recovers them."""

from __future__ import annotations

import contextlib
import os

from fleetflow import map_task, task, workflow


def _count(marker: str, name: str) -> None:
    """One line in `<marker>.<name>` per run; tasks run as users of their own: its first
    writer opens it to them."""
    path = f"{marker}.{name}"
    with open(path, "a") as f:
        f.write("ran\n")
    with contextlib.suppress(PermissionError):
        os.chmod(path, 0o666)


@task
def prepare(n: int, marker: str) -> int:
    _count(marker, "prepare")
    return n + 1


@task
def flaky(x: int, marker: str) -> int:
    _count(marker, "flaky")
    if not os.path.exists(marker):
        raise RuntimeError(f"no marker {marker} yet")
    return x * 10


@task
def conclude(y: int, marker: str) -> int:
    _count(marker, "conclude")
    return y + 1


@workflow
def chain(n: int, marker: str) -> int:
    """prepare -> flaky -> conclude: flaky fails while the marker is absent."""
    return conclude(y=flaky(x=prepare(n=n, marker=marker), marker=marker), marker=marker)


@task
def numbers(n: int) -> list[int]:
    return list(range(n))


@task
def odd_fails(x: int, marker: str) -> int:
    """Element x: its odd ones fail while the marker is absent."""
    _count(marker, f"element{x}")
    if x % 2 and not os.path.exists(marker):
        raise RuntimeError(f"element {x}: no marker {marker} yet")
    return x * x


@task
def total(values: list[int | None]) -> int:
    missing = [i for i, value in enumerate(values) if value is None]
    if missing:
        raise RuntimeError(f"elements {missing} failed")
    return sum(value or 0 for value in values)


@workflow
def mapped(n: int, marker: str) -> int:
    """Every element runs (half may fail, so the map waits for all); `total` then fails while
    an element failed."""
    return total(values=map_task(odd_fails, min_success_ratio=0.5)(x=numbers(n=n), marker=marker))
