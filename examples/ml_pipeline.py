"""An ML-shaped pipeline using the whole SDK surface: data prep -> train (fan-out over
hyper-parameters) -> evaluate, with dataclasses, a File, map_task, an Optional and a NamedTuple.

    fleetflow run examples/ml_pipeline.py ml_pipeline --n 40
    fleetflow run --remote examples/ml_pipeline.py ml_pipeline --n 40
"""

from __future__ import annotations

import csv
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from fleetflow import File, Resources, map_task, task, workflow


@dataclass
class Model:
    learning_rate: float
    slope: float
    intercept: float


@dataclass
class Evaluation:
    best: Model
    mse: float
    note: str | None


class Split(NamedTuple):
    train: File
    test: File


def _write(rows: list[tuple[float, float]], name: str) -> File:
    path = Path(tempfile.mkdtemp()) / name
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return File(path)


def _read(data: File) -> list[tuple[float, float]]:
    with open(data.path, newline="") as f:
        return [(float(x), float(y)) for x, y in csv.reader(f)]


@task
def prepare(n: int, seed: int) -> Split:
    """Noisy points on y = 2x - 1, split 3:1 into CSV files."""
    rng = random.Random(seed)
    rows = [(x / n, 2 * x / n - 1 + rng.gauss(0, 0.02)) for x in range(n)]
    cut = len(rows) * 3 // 4
    return Split(train=_write(rows[:cut], "train.csv"), test=_write(rows[cut:], "test.csv"))


@task(resources=Resources(cpu=1, memory="256Mi"), retries=1)
def train(data: File, learning_rate: float) -> Model:
    rows = _read(data)
    slope = intercept = 0.0
    for _ in range(300):
        grad_s = sum((slope * x + intercept - y) * x for x, y in rows) / len(rows)
        grad_i = sum(slope * x + intercept - y for x, y in rows) / len(rows)
        slope -= learning_rate * grad_s
        intercept -= learning_rate * grad_i
    return Model(learning_rate, round(slope, 4), round(intercept, 4))


@task
def evaluate(models: list[Model], data: File, max_mse: float | None) -> Evaluation:
    rows = _read(data)

    def mse(m: Model) -> float:
        return sum((m.slope * x + m.intercept - y) ** 2 for x, y in rows) / len(rows)

    best = min(models, key=mse)
    score = round(mse(best), 6)
    note = None if max_mse is None or score <= max_mse else f"mse {score} above {max_mse}"
    return Evaluation(best=best, mse=score, note=note)


@workflow
def ml_pipeline(
    n: int = 40,
    seed: int = 3,
    learning_rates: list[float] = [0.1, 0.5, 1.0],  # noqa: B006 (a default, never mutated)
    max_mse: float | None = None,
) -> Evaluation:
    split = prepare(n=n, seed=seed)
    models = map_task(train, concurrency=2)(data=split.train, learning_rate=learning_rates)
    return evaluate(models=models, data=split.test, max_mse=max_mse)
