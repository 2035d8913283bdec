"""A workflow of the Kubernetes tier whose pods the test runs for real (tests/k8s/kubelet.py):
the first attempt checkpoints three steps, says so in a marker file and waits to be killed; the
next attempt returns the checkpoint it found."""

import time
from pathlib import Path

from fleetflow import Resources, current_context, task, workflow


@task(resources=Resources(gpu=1, gpu_type="A100"), retries=1)
def killed_run_by_test(marker: str) -> str:
    ctx = current_context()
    kept = ctx.checkpoint.read()
    if kept is not None:
        return f"attempt {ctx.attempt_number} resumed from: {kept.decode()}"
    for step in range(3):
        ctx.checkpoint.write(f"step {step} of attempt {ctx.attempt_number}".encode())
    Path(marker).touch()
    time.sleep(600)  # until the test kills the pod's container
    return "never"


@workflow
def killed_mid_way(marker: str) -> str:
    return killed_run_by_test(marker=marker)
