"""Calling a workflow registered on the platform by name and version (`@reference_workflow`).

`train_model` stands for a workflow another team registered from its own code; `nightly` calls
it through a typed stub, by name and version, without its code. On the platform:

    fleetflow register examples/reference_workflow.py train_model --version v1
    fleetflow run --remote examples/reference_workflow.py nightly --n 20

`nightly`'s node `n0-train_model_v1` runs `train_model` version v1 as a child execution
(`fleetflow executions get <id>` names it). A reference runs only on the platform: run locally,
`nightly` says so. `nightly_inlined` is the same pipeline where the workflow's code is at hand
(a sub-workflow, inlined): it runs locally too, and gives `nightly`'s outputs.
"""

from __future__ import annotations

from fleetflow import reference_workflow, task, workflow


@task
def make_rows(n: int) -> list[float]:
    return [float(k % 7) for k in range(n)]


@task
def fit(rows: list[float], lr: float) -> float:
    """A stand-in for training: the loss after one pass."""
    mean = sum(rows) / len(rows) if rows else 0.0
    return round(mean * (1.0 - lr), 4)


@task
def report(loss: float) -> str:
    return f"loss {loss:.4f}"


@workflow
def train_model(n: int, lr: float) -> float:
    """The registered workflow (another team's, in real life)."""
    return fit(rows=make_rows(n=n), lr=lr)


@reference_workflow(name="reference_workflow.train_model", version="v1")
def train_model_v1(n: int, lr: float) -> float:
    """The stub: the registered version's inputs and output, no body."""
    ...


@workflow
def nightly(n: int) -> str:
    return report(loss=train_model_v1(n=n, lr=0.05))


@workflow
def nightly_inlined(n: int) -> str:
    return report(loss=train_model(n=n, lr=0.05))
