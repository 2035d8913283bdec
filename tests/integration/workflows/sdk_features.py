"""Workflows for the Python client and `fleetflow run --remote`: typed outputs (a dataclass, a
NamedTuple, a File), File and Directory inputs, a map node, a failure, a long task to cancel."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal, NamedTuple

from fleetflow import Directory, File, map_task, task, workflow


class Color(StrEnum):
    RED = "red"
    GREEN = "green"


@dataclass
class Stats:
    count: int
    total: int
    mean: float


class Report(NamedTuple):
    stats: Stats
    squares: list[int]
    text: File


class EditedInPlace(NamedTuple):
    folder: Directory
    note: File


@task
def numbers(n: int) -> list[int]:
    return list(range(n))


@task
def square(x: int, offset: int) -> int:
    return x * x + offset


@task
def describe(values: list[int]) -> Stats:
    return Stats(count=len(values), total=sum(values), mean=sum(values) / max(len(values), 1))


@task
def write_text(stats: Stats, title: str) -> File:
    path = Path(f"{title}.txt")
    path.write_text(f"{title}: {stats.count} values, total {stats.total}\n")
    return File(path)


@workflow
def report(n: int = 4, offset: int = 0, title: str = "report") -> Report:
    """Square 0..n-1 in a map node, summarise them, write a text file."""
    squares = map_task(square, concurrency=3)(x=numbers(n=n), offset=offset)
    stats = describe(values=squares)
    return Report(stats=stats, squares=squares, text=write_text(stats=stats, title=title))


@task
def count_words(data: File) -> int:
    return len(data.path.read_text().split())


@task
def sizes(folder: Directory) -> dict[str, int]:
    return {p.relative_to(folder.path).as_posix(): p.stat().st_size for p in folder.files()}


@workflow
def word_count(data: File) -> int:
    return count_words(data=data)


@workflow
def folder_sizes(folder: Directory) -> dict[str, int]:
    return sizes(folder=folder)


@task
def edit_in_place(folder: Directory, note: File) -> EditedInPlace:
    """Changes what it received, in place, and returns it (issue 16: remotely the output used
    to name the unedited upload)."""
    (folder.path / "a.txt").write_text("edited")
    (folder.path / "added.txt").write_text("new")
    note.path.write_text(note.path.read_text() + " and more")
    return EditedInPlace(folder=folder, note=note)


@task
def contents(folder: Directory, note: File) -> dict[str, str]:
    found = {p.relative_to(folder.path).as_posix(): p.read_text() for p in folder.files()}
    return {**found, "note": note.path.read_text()}


@workflow
def edited_in_place(folder: Directory, note: File) -> dict[str, str]:
    edited = edit_in_place(folder=folder, note=note)
    return contents(folder=edited.folder, note=edited.note)


@task
def tally(
    tags: set[str], weights: dict[int, float], stage: Literal["train", "eval"]
) -> tuple[frozenset[str], dict[Color, int]]:
    return frozenset(t.upper() for t in tags), {Color.RED: len(weights), Color.GREEN: len(stage)}


@workflow
def newer_types(
    tags: set[str], weights: dict[int, float], stage: Literal["train", "eval"] = "train"
) -> tuple[frozenset[str], dict[Color, int]]:
    upper, counts = tally(tags=tags, weights=weights, stage=stage)
    return upper, counts


@task
def explode(n: int) -> int:
    raise ValueError(f"cannot handle {n}")


@workflow
def failing(n: int = 3) -> int:
    return explode(n=n)


@task
def nap(seconds: float, marker: str) -> float:
    Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)
    return seconds


@workflow
def sleepy(seconds: float, marker: str) -> float:
    return nap(seconds=seconds, marker=marker)
