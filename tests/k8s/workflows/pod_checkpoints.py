"""Workflows of the Kubernetes tier whose pods the test runs for real (tests/k8s/kubelet.py):
kwok keeps a pod of a `*_run_by_test` task running until the test ran its command."""

from fleetflow import Resources, current_context, task, workflow


@task(resources=Resources(gpu=1, gpu_type="A100"), retries=1)
def resume_run_by_test() -> str:
    """Checkpoints then fails in its first attempt; the next one returns what it read."""
    ctx = current_context()
    kept = ctx.checkpoint.read()
    if kept is None:
        ctx.checkpoint.write(f"kept by attempt {ctx.attempt_number}".encode())
        raise RuntimeError("failing after the checkpoint")
    return f"attempt {ctx.attempt_number} read: {kept.decode()}"


@workflow
def checkpoint_in_pods() -> str:
    return resume_run_by_test()
