"""Workflows passing `numpy.ndarray` and `pandas.DataFrame` values between tasks, as a workflow
input (uploaded when launched remotely), inside a dataclass, mapped over a list, and as
workflow outputs. Run locally and remotely, they must give the same values (issue 16)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from fleetflow import map_task, task, workflow


@dataclass
class Table:
    frame: pd.DataFrame
    columns: list[np.ndarray]


class Result(NamedTuple):
    scaled: np.ndarray
    frame: pd.DataFrame
    parts: list[np.ndarray]
    check: str


@task
def scale(weights: np.ndarray, by: float) -> np.ndarray:
    return weights * by


@task
def make_table(n: int) -> Table:
    frame = pd.DataFrame(
        {
            "id": np.arange(n, dtype=np.int64),
            "label": [f"row-{i}" for i in range(n)],
            "ok": [i % 2 == 0 for i in range(n)],
            "at": pd.date_range("2024-01-01", periods=n, freq="h"),
        }
    )
    return Table(frame=frame, columns=[np.full(n, i, dtype=np.int16) for i in range(2)])


@task
def split(weights: np.ndarray) -> list[np.ndarray]:
    return [np.ascontiguousarray(row) for row in weights]


@task
def norm(part: np.ndarray) -> np.ndarray:
    return np.array([np.linalg.norm(part)], dtype=np.float64)


@task
def join(table: Table, scaled: np.ndarray) -> pd.DataFrame:
    frame = table.frame.assign(first=scaled[: len(table.frame), 0], col=table.columns[1])
    return frame.set_index("label")


@task
def check(frame: pd.DataFrame, parts: list[np.ndarray]) -> str:
    """What a task reading the values sees: their types, dtypes and shapes."""
    dtypes = ",".join(f"{name}:{dtype}" for name, dtype in frame.dtypes.items())
    shapes = ",".join(f"{p.dtype}{p.shape}" for p in parts)
    return f"{type(frame).__name__}[{dtypes}] index={frame.index.name} parts={shapes}"


@workflow
def arrays(weights: np.ndarray, by: float = 2.0) -> Result:
    scaled = scale(weights=weights, by=by)
    frame = join(table=make_table(n=3), scaled=scaled)
    parts = map_task(norm)(part=split(weights=scaled))
    return Result(scaled=scaled, frame=frame, parts=parts, check=check(frame=frame, parts=parts))
