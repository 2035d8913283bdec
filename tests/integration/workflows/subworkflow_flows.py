"""Workflows calling sub-workflows, run through the whole stack (test_subworkflows.py)."""

from __future__ import annotations

import contextlib
import os
import time

from fleetflow import conditional, map_task, task, workflow


@task
def make_data(n: int, seconds: float = 0.0, marker: str = "") -> list[int]:
    """1..n, after writing `marker` (when given) and sleeping `seconds`: a step to restart the
    control plane during."""
    if marker:
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        with contextlib.suppress(PermissionError):
            os.chmod(marker, 0o666)
    time.sleep(seconds)
    return list(range(1, n + 1))


@task
def square(x: int) -> int:
    return x * x


@task
def fit(xs: list[int], lr: float) -> float:
    return sum(xs) * lr


@task
def careful_fit(xs: list[int]) -> float:
    return float(max(xs))


@task
def summarize(scores: dict[str, float]) -> str:
    return " ".join(f"{name}={score:g}" for name, score in sorted(scores.items()))


@workflow
def featurize(data: list[int]) -> list[int]:
    return map_task(square)(x=data)


@workflow
def training(data: list[int], lr: float = 0.5, mode: str = "fast") -> float:
    features = featurize(data=data)
    return (
        conditional("mode")
        .if_(mode == "fast")
        .then(fit(xs=features, lr=lr))
        .elif_(mode == "careful")
        .then(careful_fit(xs=features))
        .else_()
        .fail("unknown training mode")
    )


@workflow
def pipeline(n: int, seconds: float = 0.0, marker: str = "") -> str:
    data = make_data(n=n, seconds=seconds, marker=marker)
    quick = training(data=data)
    other = (
        conditional("size")
        .if_(n > 3)
        .then(training(data=data, mode="careful"))
        .else_()
        .then(training(data=data, lr=2.0))
    )
    return summarize(scores={"quick": quick, "other": other})


@workflow
def bad_mode(n: int, mode: str) -> float:
    return training(data=make_data(n=n), mode=mode)
