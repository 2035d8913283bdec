"""A three-task typed pipeline: make data -> train -> evaluate.

Run it locally:   fleetflow run examples/hello.py hello_pipeline --n 20
Run it remotely:  fleetflow run --remote examples/hello.py hello_pipeline --n 20
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from fleetflow import Resources, task, workflow


@dataclass
class Model:
    slope: float
    intercept: float


@dataclass
class Metrics:
    mse: float
    n_points: int
    model: Model


@task
def make_data(n: int, seed: int) -> list[float]:
    """Noisy points on the line y = 3x + 1, flattened as [x0, y0, x1, y1, ...]."""
    rng = random.Random(seed)
    points: list[float] = []
    for i in range(n):
        x = i / max(n - 1, 1)
        points += [x, 3 * x + 1 + rng.gauss(0, 0.05)]
    return points


@task(resources=Resources(cpu=1, memory="256Mi"), retries=1)
def train(points: list[float], epochs: int) -> Model:
    """Least squares by gradient descent, so there is something to train."""
    xs, ys = points[0::2], points[1::2]
    slope = intercept = 0.0
    for _ in range(epochs):
        grad_s = sum((slope * x + intercept - y) * x for x, y in zip(xs, ys, strict=True))
        grad_i = sum(slope * x + intercept - y for x, y in zip(xs, ys, strict=True))
        slope -= 0.5 * grad_s / len(xs)
        intercept -= 0.5 * grad_i / len(xs)
    return Model(slope=round(slope, 3), intercept=round(intercept, 3))


@task
def evaluate(points: list[float], model: Model) -> Metrics:
    xs, ys = points[0::2], points[1::2]
    errors = [(model.slope * x + model.intercept - y) ** 2 for x, y in zip(xs, ys, strict=True)]
    return Metrics(mse=round(sum(errors) / len(errors), 5), n_points=len(xs), model=model)


@workflow
def hello_pipeline(n: int = 20, epochs: int = 500, seed: int = 7) -> Metrics:
    points = make_data(n=n, seed=seed)
    model = train(points=points, epochs=epochs)
    return evaluate(points=points, model=model)
