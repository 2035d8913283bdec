"""Sub-workflows: one training sub-pipeline (split, fit, score) reused by two workflows.

A `@workflow` called in another workflow's body runs as part of it: its nodes are inlined into
the caller's DAG under the call's id (`n1-train_and_score/n0-split`), type-checked at the call
like a task call. Run it locally or on the platform, the same way:

    fleetflow run examples/subworkflows.py compare_regularisation --n 200
    fleetflow run --remote examples/subworkflows.py retrain_if_drifted --n 200 --drift 0.8
(`fleetflow executions get <id>` then shows each call's nodes under it, as a tree.)
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from fleetflow import conditional, task, workflow


@dataclass
class Split:
    train: list[float]  # flattened [x0, y0, x1, y1, ...]
    test: list[float]


@dataclass
class Model:
    slope: float
    penalty: float


@task
def make_data(n: int, seed: int, drift: float = 0.0) -> list[float]:
    """Noisy points on the line y = (3 + drift)x, flattened as [x0, y0, x1, y1, ...]."""
    rng = random.Random(seed)
    points: list[float] = []
    for _ in range(n):
        x = rng.uniform(0, 10)
        points += [x, (3 + drift) * x + rng.gauss(0, 0.5)]
    return points


@task
def split(data: list[float], test_fraction: float) -> Split:
    pairs = len(data) // 2
    cut = 2 * int(pairs * (1 - test_fraction))
    return Split(train=data[:cut], test=data[cut:])


@task
def fit(split: Split, penalty: float) -> Model:
    """Ridge regression through the origin."""
    xs, ys = split.train[0::2], split.train[1::2]
    slope = sum(x * y for x, y in zip(xs, ys, strict=True)) / (sum(x * x for x in xs) + penalty)
    return Model(slope=slope, penalty=penalty)


@task
def score(model: Model, split: Split) -> float:
    """Mean squared error on the test points (lower is better)."""
    xs, ys = split.test[0::2], split.test[1::2]
    errors = [(model.slope * x - y) ** 2 for x, y in zip(xs, ys, strict=True)]
    return round(sum(errors) / max(len(errors), 1), 4)


@task
def reference_error(data: list[float], slope: float) -> float:
    """How well the deployed slope still fits the data."""
    xs, ys = data[0::2], data[1::2]
    errors = [(slope * x - y) ** 2 for x, y in zip(xs, ys, strict=True)]
    return round(sum(errors) / max(len(errors), 1), 4)


# The reusable sub-pipeline: split, fit, score.
@workflow
def train_and_score(data: list[float], penalty: float = 0.0, test_fraction: float = 0.25) -> float:
    parts = split(data=data, test_fraction=test_fraction)
    return score(model=fit(split=parts, penalty=penalty), split=parts)


@task
def best(errors: dict[str, float]) -> str:
    name = min(errors, key=lambda key: errors[key])
    return f"best: {name} (error {errors[name]:g})"


# First user: the same sub-pipeline twice, with different settings.
@workflow
def compare_regularisation(n: int = 200, seed: int = 1) -> str:
    data = make_data(n=n, seed=seed)
    return best(
        errors={
            "none": train_and_score(data=data),
            "strong": train_and_score(data=data, penalty=5000.0),
        }
    )


# Second user: the sub-pipeline inside a branch, only when the deployed model drifted.
@workflow
def retrain_if_drifted(n: int = 200, drift: float = 0.0, deployed_slope: float = 3.0) -> float:
    data = make_data(n=n, seed=2, drift=drift)
    current = reference_error(data=data, slope=deployed_slope)
    return (
        conditional("drifted")
        .if_(current > 1.0)
        .then(train_and_score(data=data, test_fraction=0.5))
        .else_()
        .then(reference_error(data=data, slope=deployed_slope))
    )


if __name__ == "__main__":
    print(compare_regularisation(n=200))
    print(retrain_if_drifted(n=200, drift=0.8), retrain_if_drifted(n=200))
