"""A feature-engineering pipeline using the richer types and wiring of the SDK: unions, a
dataclass holding Files, a tuple output, sets, an enum-keyed dict, `Literal`, lists and dicts of
promises and `map_task` of a `functools.partial`.

    fleetflow run examples/typed_values.py feature_report --rows 12
    fleetflow run --remote examples/typed_values.py feature_report --rows 12
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Literal

from fleetflow import File, map_task, task, workflow


class Split(Enum):
    TRAIN = "train"
    TEST = "test"


@dataclass
class Dataset:
    """Two CSV files and how many rows they hold: Files travel inside a dataclass."""

    train: File
    test: File
    rows: int


def _write(lines: list[str], name: str) -> File:
    path = Path(tempfile.mkdtemp()) / name
    path.write_text("\n".join(lines) + "\n")
    return File(path)


@task
def make_dataset(rows: int) -> Dataset:
    values = [f"{i},{(i * 7) % 10}" for i in range(rows)]
    cut = max(1, rows * 3 // 4)
    return Dataset(_write(values[:cut], "train.csv"), _write(values[cut:], "test.csv"), rows)


@task
def column_stats(data: Dataset) -> tuple[float, int]:
    """The mean and the number of distinct values of the label column (outputs o0, o1)."""
    labels = [int(line.split(",")[1]) for line in data.train.path.read_text().split()]
    return round(sum(labels) / len(labels), 3), len(set(labels))


@task
def split_sizes(data: Dataset) -> dict[Split, int]:
    return {
        Split.TRAIN: len(data.train.path.read_text().split()),
        Split.TEST: len(data.test.path.read_text().split()),
    }


@task
def bucket(value: int, width: int) -> int | str:
    """A bucket number, or "overflow" past three buckets: a union output."""
    index = value // width
    return index if index < 3 else "overflow"


@task
def summarise(
    mean: float,
    distinct: int,
    sizes: dict[Split, int],
    buckets: list[int | str],
    tags: set[str],
    mode: Literal["short", "long"],
) -> str:
    overflow = sum(1 for b in buckets if b == "overflow")
    text = f"mean={mean} distinct={distinct} train={sizes[Split.TRAIN]} test={sizes[Split.TEST]}"
    if mode == "long":
        text += f" buckets={buckets} overflow={overflow} tags={sorted(tags)}"
    return text


@workflow
def feature_report(rows: int = 12, width: int = 4, mode: Literal["short", "long"] = "long") -> str:
    data = make_dataset(rows=rows)
    mean, distinct = column_stats(data=data)
    sizes = split_sizes(data=data)
    # A partial binds the width for every element; the list holds promises and constants.
    buckets = map_task(functools.partial(bucket, width=width))(value=[distinct, rows, 1])
    return summarise(
        mean=mean,
        distinct=distinct,
        sizes=sizes,
        buckets=buckets,
        tags={"csv", "synthetic"},
        mode=mode,
    )
