"""Workflows of the Kubernetes test tier. Their tasks run as pods on kwok nodes, where nothing
really runs: the kwok stages (infra/k8s/kwok/stages.yaml) decide each pod's outcome by the
task function's name, and a simulated success uploads no outputs. So these tasks return
nothing and nothing reads their outputs."""

from fleetflow import Resources, task, workflow


@task(resources=Resources(gpu=1, gpu_type="H100", cpu=2, memory="4Gi"))
def train_on_h100() -> None:
    pass


@task(resources=Resources(gpu=2, gpu_type="A100", cpu=2, memory="4Gi"))
def train_on_a100() -> None:
    pass


@workflow
def across_clusters() -> None:
    train_on_h100()
    train_on_a100()


@task(resources=Resources(gpu=8, gpu_type="H100"))
def needs_eight_h100() -> None:
    pass


@workflow
def too_big() -> None:
    needs_eight_h100()


@task(resources=Resources(gpu=1, gpu_type="H100"))
def slow_in_kwok() -> None:
    pass


@workflow
def slow() -> None:
    slow_in_kwok()


@task(resources=Resources(gpu=1, gpu_type="A100"), retries=0)
def fail_in_kwok() -> None:
    pass


@workflow
def failing() -> None:
    fail_in_kwok()


@task(resources=Resources(gpu=1, gpu_type="A100", memory="1Gi"), retries=0)
def oom_in_kwok() -> None:
    pass


@workflow
def out_of_memory() -> None:
    oom_in_kwok()
