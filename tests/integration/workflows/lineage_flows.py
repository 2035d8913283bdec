"""Workflows whose tasks write files, for artifact lineage (`test_lineage.py`): a three-step
pipeline from an uploaded file, a map whose elements each write a file, and a cached producer
whose consumer fails until a marker file exists (so that a recovery reuses the producer's
output), a dynamic task whose sub-DAG appends lines to a file, one task per line, and a
workflow that runs another registered one (`polish`, registered as version `v1` by the test)
as a child execution on its file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fleetflow import File, dynamic, map_task, reference_workflow, task, workflow


def _write(name: str, text: str) -> File:
    path = Path(tempfile.mkdtemp(prefix="lineage-")) / name
    path.write_text(text)
    return File(path)


@task
def clean(raw: File) -> File:
    return _write("cleaned.txt", raw.path.read_text().strip().lower())


@task
def featurize(cleaned: File) -> File:
    return _write("features.txt", ",".join(cleaned.path.read_text().split()))


@task
def train(features: File, epochs: int) -> File:
    return _write("model.txt", f"{features.path.read_text()} x{epochs}")


@workflow
def pipeline(raw: File, epochs: int = 2) -> File:
    """raw -> clean -> featurize -> train."""
    return train(features=featurize(cleaned=clean(raw=raw)), epochs=epochs)


@task
def shard_ids(n: int) -> list[int]:
    return list(range(n))


@task
def write_shard(i: int) -> File:
    return _write(f"shard-{i}.txt", f"shard {i}")


@workflow
def sharded(n: int) -> list[File]:
    """One file per element of a map."""
    return map_task(write_shard)(i=shard_ids(n=n))


@task(cache=True, cache_version="1")
def produce(seed: int) -> File:
    return _write("produced.txt", f"seed {seed}")


@task
def consume(source: File, marker: str) -> File:
    if not os.path.exists(marker):
        raise RuntimeError(f"no marker {marker} yet")
    return _write("consumed.txt", source.path.read_text().upper())


@workflow
def recoverable(seed: int, marker: str) -> File:
    """produce (cached) -> consume, which fails while the marker is absent."""
    return consume(source=produce(seed=seed), marker=marker)


@task
def append_line(source: File, line: str) -> File:
    return _write("annotated.txt", f"{source.path.read_text()}\n{line}")


@dynamic
def annotate(source: File, lines: list[str]) -> File:
    """One `append_line` per line, each on the previous one's file."""
    current = source
    for line in lines:
        current = append_line(source=current, line=line)
    return current


@workflow
def annotated(raw: File, lines: list[str]) -> File:
    return annotate(source=clean(raw=raw), lines=lines)


@workflow
def polish(cleaned: File) -> File:
    """Run as a child execution by `referencing`."""
    return featurize(cleaned=cleaned)


@reference_workflow(name="lineage_flows.polish", version="v1")
def polish_v1(cleaned: File) -> File: ...


@workflow
def referencing(raw: File) -> File:
    """clean -> (child execution: featurize) -> train."""
    return train(features=polish_v1(cleaned=clean(raw=raw)), epochs=1)
