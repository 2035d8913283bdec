"""Gangs (multi-node tasks) of the Kubernetes test tier: their pods run on kwok nodes, where
nothing really runs; `hold_in_kwok` pods run until deleted (infra/k8s/kwok/stages.yaml)."""

from fleetflow import Resources, task, workflow


@task(resources=Resources(gpu=4, gpu_type="H100", cpu=1, memory="1Gi"), replicas=3)
def hold_in_kwok() -> None:
    pass


@workflow
def held_gang() -> None:
    hold_in_kwok()


@task(resources=Resources(gpu=4, gpu_type="H100", cpu=1, memory="1Gi"), replicas=5)
def five_wide() -> None:
    pass


@workflow
def too_wide_gang() -> None:
    five_wide()


@task(resources=Resources(gpu=8, gpu_type="H100", cpu=1, memory="1Gi"), replicas=2)
def eight_per_worker() -> None:
    pass


@workflow
def unschedulable_gang() -> None:
    eight_per_worker()
