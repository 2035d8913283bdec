"""Workflows for watching executions from the CLI and the client: outputs that are files and
directories, map elements that print, a task that prints and then fails, a long task."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from fleetflow import Directory, File, map_task, task, workflow


@dataclass
class Notes:
    title: str
    text: File


class Artifacts(NamedTuple):
    model: File
    data: Directory
    shards: list[File]
    notes: Notes


@task
def make_artifacts(n: int) -> Artifacts:
    """A file, a directory with a subdirectory, `n` shard files and a dataclass holding a file."""
    Path("model.bin").write_bytes(bytes(range(256)) * 4)
    data = Path("data")
    (data / "sub").mkdir(parents=True, exist_ok=True)
    (data / "a.txt").write_text("alpha\n")
    (data / "sub" / "b.txt").write_text("beta\n")
    shards = []
    for i in range(n):
        shard = Path(f"shard-{i}.txt")
        shard.write_text(f"shard {i}\n")
        shards.append(File(shard))
    Path("notes.md").write_text("# notes\n")
    return Artifacts(
        model=File("model.bin"),
        data=Directory(data),
        shards=shards,
        notes=Notes(title="notes", text=File("notes.md")),
    )


@workflow
def artifacts(n: int = 2) -> Artifacts:
    return make_artifacts(n=n)


@task
def indices(n: int) -> list[int]:
    return list(range(n))


@task
def chatter(i: int, lines: int) -> int:
    for k in range(lines):
        print(f"element {i} says {k}", flush=True)
    return i


@workflow
def chorus(n: int = 3, lines: int = 2) -> list[int]:
    """A map node whose elements each print `lines` lines."""
    return map_task(chatter)(i=indices(n=n), lines=lines)


@task
def speak(lines: int) -> int:
    for k in range(lines):
        print(f"line {k}", flush=True)
    return lines


@workflow
def monologue(lines: int = 3) -> int:
    """One task printing `lines` lines."""
    return speak(lines=lines)


@task(retries=1)
def stumble(message: str) -> int:
    print(f"about to fail: {message}", flush=True)
    raise RuntimeError(message)


@workflow
def doomed(message: str = "boom") -> int:
    """Fails twice (once retried), printing a line each time."""
    return stumble(message=message)


@task
def doze(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@workflow
def drowsy(seconds: float = 300.0) -> float:
    return doze(seconds=seconds)


@task
def size_of(data: File) -> int:
    return len(data.path.read_bytes())


@workflow
def measure(data: File) -> int:
    """Reads a File input: what it may name is checked when the execution is created."""
    return size_of(data=data)
