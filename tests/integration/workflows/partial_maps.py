"""Workflows with a `map_task(..., min_success_ratio=...)`: run remotely (in chunks: the test
stack's map chunk is 4 elements) and compared with local runs."""

from __future__ import annotations

import functools
from typing import NamedTuple

from fleetflow import map_task, task, workflow


class Scored(NamedTuple):
    scores: list[int | None]
    present: int


@task
def numbers(n: int) -> list[int]:
    return list(range(n))


@task(retries=1)
def fragile(x: int, k: int = 1) -> int:
    """Fails, on every try, for 3 and 8 (mod 10)."""
    if x % 10 in (3, 8):
        raise ValueError(f"cannot score {x}")
    return x * k


@task
def count_present(values: list[int | None]) -> int:
    return sum(v is not None for v in values)


@workflow
def tolerant(n: int = 10) -> Scored:
    """Elements 3 and 8 fail, in two of the three chunks of 4: 8 of 10 is enough."""
    scaled = functools.partial(fragile, k=10)
    scores = map_task(scaled, concurrency=3, min_success_ratio=0.8)(x=numbers(n=n))
    return Scored(scores=scores, present=count_present(values=scores))


@workflow
def demanding(n: int = 10) -> int:
    """The same failures, but 0.9 of 10 allows only one."""
    scores = map_task(fragile, min_success_ratio=0.9)(x=numbers(n=n))
    return count_present(values=scores)


@workflow
def lenient(n: int = 4) -> list[int | None]:
    """Half may fail: run with 4 elements, one map unit each, no chunk."""
    return map_task(fragile, min_success_ratio=0.5)(x=numbers(n=n))
