"""A dynamic workflow: the DAG's shape depends on a value known only when it runs.

`fleetflow run examples/dynamic.py evaluate --n 4` runs it locally; with `--remote`, on the
platform, where `fleetflow executions get <id>` lists the sub-DAG's nodes
(`n1-evaluate_all/n0-train`, ...).
"""

from __future__ import annotations

from fleetflow import dynamic, map_task, task, workflow


@task
def list_configs(n: int) -> list[float]:
    """The learning rates to try: how many is known only when this runs."""
    return [0.1 * (k + 1) for k in range(n)]


@task
def train(lr: float) -> float:
    return round(1.0 - abs(lr - 0.3), 3)


@task
def score(accuracy: float) -> float:
    return accuracy * 100


@task
def best(scores: list[float]) -> float:
    return max(scores, default=0.0)


@dynamic
def evaluate_all(lrs: list[float]) -> float:
    """One `train` then `score` per learning rate, then the best: built with the real list."""
    scores = [score(accuracy=train(lr=lr)) for lr in lrs]
    return best(scores=scores)


@dynamic
def sweep(rounds: int, lrs: list[float]) -> float:
    """Several rounds of a map over the rates: a loop whose length is an input."""
    results = [best(scores=map_task(train)(lr=lrs)) for _ in range(rounds)]
    return best(scores=results)


@workflow
def evaluate(n: int = 3, rounds: int = 2) -> float:
    lrs = list_configs(n=n)
    return best(scores=[evaluate_all(lrs=lrs), score(accuracy=sweep(rounds=rounds, lrs=[0.2]))])


if __name__ == "__main__":
    print(evaluate(n=4))
