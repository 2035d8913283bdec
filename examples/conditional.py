"""Branches decided when the workflow runs: train a big or a small model by the data's size,
and refuse an empty data set.

Run it locally:   fleetflow run examples/conditional.py sized_training --n 500
Run it remotely:  fleetflow run --remote examples/conditional.py sized_training --n 500
(`fleetflow executions get <id>` then shows the branch not taken as SKIPPED.)
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from fleetflow import conditional, task, workflow


@dataclass
class Model:
    kind: str
    slope: float


@task
def make_data(n: int, seed: int) -> list[float]:
    """Noisy points on the line y = 3x, flattened as [x0, y0, x1, y1, ...]."""
    rng = random.Random(seed)
    points: list[float] = []
    for _ in range(n):
        x = rng.uniform(0, 10)
        points += [x, 3 * x + rng.gauss(0, 0.5)]
    return points


@task
def count(data: list[float]) -> int:
    return len(data) // 2


@task
def train_big(data: list[float]) -> Model:
    """Least squares through the origin on every point."""
    xs, ys = data[0::2], data[1::2]
    slope = sum(x * y for x, y in zip(xs, ys, strict=True)) / sum(x * x for x in xs)
    return Model(kind="big", slope=slope)


@task
def train_small(data: list[float]) -> Model:
    """The median ratio y/x: good enough for a few points."""
    xs, ys = data[0::2], data[1::2]
    ratios = sorted(y / x for x, y in zip(xs, ys, strict=True) if x)
    return Model(kind="small", slope=ratios[len(ratios) // 2])


@task
def report(model: Model) -> str:
    return f"{model.kind} model, slope {model.slope:.2f}"


@workflow
def sized_training(n: int = 500, seed: int = 0, force_small: bool = False) -> str:
    data = make_data(n=n, seed=seed)
    size = count(data=data)
    model = (
        conditional("model size")
        .if_(size == 0)
        .fail("no data: n must be positive")
        .elif_((size >= 100) & force_small.is_false())
        .then(train_big(data=data))
        .else_()
        .then(train_small(data=data))
    )
    return report(model=model)


if __name__ == "__main__":
    print(sized_training(n=500))
    print(sized_training(n=20))
