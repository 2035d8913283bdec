"""Workflows that exercise platform features end to end: map fan-out, caching, cancellation."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

from fleetflow import map_task, task, workflow


def _append(marker: str, line: str) -> None:
    """Append to a marker file that later attempts, each run as a user of its own, append to
    too: its first writer opens it to them."""
    with open(marker, "a") as f:
        f.write(line)
    with contextlib.suppress(PermissionError):
        os.chmod(marker, 0o666)


@task
def numbers(n: int) -> list[int]:
    return list(range(n))


@task(retries=1)
def square(x: int, offset: int) -> int:
    return x * x + offset


@task
def total(values: list[int]) -> int:
    return sum(values)


@workflow
def squares(n: int = 5, offset: int = 0) -> int:
    return total(values=map_task(square, concurrency=2)(x=numbers(n=n), offset=offset))


@task(cache=True, cache_version="1")
def expensive(seed: int, marker: str) -> float:
    """Appends to `marker` each time it really runs, so a test can count dispatches."""
    _append(marker, "ran\n")
    return seed / 7


@workflow
def cached_pipeline(seed: int, marker: str) -> float:
    return expensive(seed=seed, marker=marker)


@task
def nap(seconds: float, marker: str) -> float:
    Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)
    return seconds


@workflow
def sleepy(seconds: float, marker: str) -> float:
    return nap(seconds=seconds, marker=marker)


@task
def first_try_hangs(marker: str) -> int:
    """The first attempt records its pid and hangs (to be killed); later ones finish at once.
    Returns how many attempts got this far."""
    path = Path(marker)
    runs = path.read_text().splitlines() if path.exists() else []
    _append(marker, f"{os.getpid()}\n")
    if not runs:
        time.sleep(300)
    return len(runs) + 1


@workflow
def survives_agent_loss(marker: str) -> int:
    return first_try_hangs(marker=marker)


@task
def hold(i: int, marker_dir: str) -> int:
    """Marks that element `i` runs (pid in the name), then takes long enough for a test to
    kill its agent while it runs."""
    Path(marker_dir, f"{i}-{os.getpid()}").touch()
    time.sleep(5)
    return i


@workflow
def spread(n: int, marker_dir: str) -> list[int]:
    return map_task(hold)(i=numbers(n=n), marker_dir=marker_dir)


@task
def many(n: int) -> list[int]:
    return list(range(n))


@workflow
def large_output(n: int) -> list[int]:
    return many(n=n)


@workflow
def large_input(values: list[int]) -> int:
    return total(values=values)


@task
def chatty(lines: int, pause: float) -> int:
    """Prints a line, waits, prints the rest: its output is readable while it runs."""
    print("line 0", flush=True)
    time.sleep(pause)
    for i in range(1, lines):
        print(f"line {i}", flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    return lines


@workflow
def talkative(lines: int, pause: float) -> int:
    return chatty(lines=lines, pause=pause)
