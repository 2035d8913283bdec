"""A sweep that tolerates failed elements, on numpy arrays: `map_task` over a
`functools.partial` with `min_success_ratio` (a failed element is `None` in the output list),
and a `numpy.ndarray` passed between tasks (stored as one `.npy` file). Needs numpy
(`pip install numpy`; the SDK does not depend on it).

    fleetflow run examples/robust_sweep.py robust_sweep --n 40
    fleetflow run --remote examples/robust_sweep.py robust_sweep --n 40

The learning rate 2.0 diverges: its element fails, 3 of 4 succeed, and `min_success_ratio=0.5`
lets the node succeed. `executions get` says `3/4 elements succeeded`.
"""

from __future__ import annotations

import functools

import numpy as np

from fleetflow import map_task, task, workflow

LEARNING_RATES = [0.1, 0.5, 2.0, 0.9]


@task
def make_features(n: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, num=n)


@task
def fit(features: np.ndarray, scale: float, learning_rate: float) -> float:
    """A stand-in for training: diverges above a learning rate of 1."""
    if learning_rate > 1.0:
        raise ValueError(f"learning rate {learning_rate} diverges")
    return round(float(np.mean(features)) * scale * (1.0 - learning_rate / 2), 6)


@task
def pick_best(losses: list[float | None]) -> str:
    kept = [(loss, i) for i, loss in enumerate(losses) if loss is not None]
    loss, index = min(kept)
    return f"{len(kept)}/{len(losses)} fits; best learning rate {LEARNING_RATES[index]}: {loss}"


@workflow
def robust_sweep(n: int = 40, scale: float = 2.0) -> str:
    features = make_features(n=n)
    # The partial binds the constant `scale` for every element; `features` is a promise.
    losses = map_task(functools.partial(fit, scale=scale), min_success_ratio=0.5)(
        features=[features] * len(LEARNING_RATES), learning_rate=LEARNING_RATES
    )
    return pick_best(losses=losses)
