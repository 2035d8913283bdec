"""A task run in a pod with two secrets: a value (stored by the control plane) and a reference
to a Kubernetes Secret of the tenant's namespace; it returns a hash of both, never a value."""

import hashlib
import os

from fleetflow import Resources, task, workflow


@task(resources=Resources(gpu=1, gpu_type="A100"), secrets=["wandb", "registry"])
def secrets_run_by_test() -> str:
    both = os.environ["FLEETFLOW_SECRET_WANDB"] + "|" + os.environ["FLEETFLOW_SECRET_REGISTRY"]
    return hashlib.sha256(both.encode()).hexdigest()


@workflow
def secrets_in_pods() -> str:
    return secrets_run_by_test()
