"""A task that reads its tenant's secret `wandb` from its environment, prints it (the stored log
must show `***` instead) and returns only a hash of it."""

from __future__ import annotations

import hashlib
import os

from fleetflow import task, workflow


@task(secrets=["wandb"])
def uses_wandb() -> str:
    value = os.environ["FLEETFLOW_SECRET_WANDB"]
    print(f"the wandb key is {value}", flush=True)
    return hashlib.sha256(value.encode()).hexdigest()


@workflow
def wandb_flow() -> str:
    return uses_wandb()


@task(secrets=["wandb"])
def leaks_in_error() -> str:
    raise RuntimeError(f"rejected key {os.environ['FLEETFLOW_SECRET_WANDB']}")


@workflow
def failing_flow() -> str:
    return leaks_in_error()
