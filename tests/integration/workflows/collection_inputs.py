"""Workflows that build lists and dicts from promises in their body and map a
`functools.partial` of a task: run remotely and compared with local runs."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import NamedTuple

from fleetflow import File, map_task, task, workflow


class Gathered(NamedTuple):
    totals: list[int]
    described: str
    scaled: list[int]
    files: list[File]
    joined: str


@task
def number(v: int) -> int:
    return v


@task
def total(xs: list[int]) -> int:
    return sum(xs)


@task
def describe(scores: dict[str, int], nested: list[list[int]]) -> str:
    pairs = ",".join(f"{key}={value}" for key, value in sorted(scores.items()))
    return f"{pairs}|{nested}"


@task
def scale(x: int, k: int) -> int:
    return x * k


@task
def write(name: str, text: str) -> File:
    path = Path(name)
    path.write_text(text)
    return File(path)


@task
def read_all(files: list[File]) -> str:
    return " ".join(f"{f.name}:{f.path.read_text()}" for f in files)


@workflow
def gathered(n: int = 3) -> Gathered:
    """A list and a dict of promises as inputs (nested too), a map of a partial with a
    promise bound, File outputs passed on in a list, and lists of promises returned."""
    a, b = number(v=n), number(v=10)
    summed = total(xs=[a, b, 4])
    described = describe(scores={"a": a, "sum": summed, "one": 1}, nested=[[a, b], [], [5]])
    scaled = map_task(functools.partial(scale, k=b), concurrency=2)(x=[a, summed, 2])
    first, second = write(name="first.txt", text="one"), write(name="second.txt", text="two")
    return Gathered(
        totals=[summed, a, 7],
        described=described,
        scaled=scaled,
        files=[first, second],
        joined=read_all(files=[second, first]),
    )
