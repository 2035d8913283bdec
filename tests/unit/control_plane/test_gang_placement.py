"""Gangs (`@task(replicas=N)`) in placement and quotas: one attempt holding the whole group on
one cluster, and what a person reads when it fits nowhere or crosses the quota."""

from __future__ import annotations

from control_plane.placement.admission import Limits
from control_plane.placement.capacity import FreeCapacity
from control_plane.placement.gangs import (
    describe_worker,
    exceeds_whole_quota_of,
    gang_no_fit_reason,
    group_resources,
    task_group_resources,
    workers_fitting,
)
from control_plane.placement.policy import Candidate, place
from fleetflow import ir

GI = 2**30
WORKER = ir.Resources(cpu=4, memory_bytes=16 * GI, gpu=8, gpu_type="H100")


def gpu_cluster(name: str, h100: int, *, cpu: float = 256, online: bool = True) -> Candidate:
    free = FreeCapacity(cpu=cpu, memory_bytes=1024 * GI, gpus={"H100": h100})
    return Candidate(name=name, online=online, free=free)


def spec(replicas: int, resources: ir.Resources = WORKER) -> ir.TaskSpec:
    interface = ir.TypedInterface(inputs=[], outputs=[])
    return ir.TaskSpec(
        name="m.train",
        module="m",
        function="train",
        interface=interface,
        resources=resources,
        replicas=replicas,
    )


def test_the_group_holds_replicas_times_each_worker_even_beyond_one_attempts_bounds() -> None:
    group = group_resources(WORKER, 16)
    assert (group.cpu, group.memory_bytes, group.gpu) == (64, 256 * GI, 128)
    assert group.gpu > ir.MAX_GPUS  # a gang may hold more than one worker can
    assert group.gpu_types == ["H100"]
    assert group_resources(WORKER, 1) is WORKER
    assert task_group_resources(spec(4)).gpu == 32


def test_a_gang_is_placed_whole_on_one_cluster_or_not_at_all() -> None:
    clusters = [gpu_cluster("gpu-a", 16), gpu_cluster("gpu-b", 24)]  # 40 free, 32 needed
    assert place(group_resources(WORKER, 4), clusters).cluster is None  # never split
    roomy = [*clusters, gpu_cluster("gpu-c", 32)]
    decision = place(group_resources(WORKER, 4), roomy)
    assert (decision.cluster, decision.gpu_type) == ("gpu-c", "H100")


def test_the_reason_names_what_the_gang_needs_and_the_largest_room() -> None:
    clusters = [
        gpu_cluster("gpu-a", 8),
        gpu_cluster("gpu-b", 16),
        gpu_cluster("gpu-c", 64, online=False),
        gpu_cluster("gpu-d", 64, cpu=4),  # room for 64 GPUs, CPU for one worker
    ]
    assert gang_no_fit_reason(WORKER, 4, clusters) == (
        "needs 4 × 8 H100 on one cluster; largest free: gpu-b with 2 × 8 H100"
    )
    assert workers_fitting(WORKER, clusters[2]) == 0  # offline
    assert workers_fitting(WORKER, clusters[3]) == 1
    assert workers_fitting(WORKER, Candidate(name="unknown")) is None  # nothing reported
    assert gang_no_fit_reason(WORKER, 4, [gpu_cluster("gpu-a", 4)]) == (
        "needs 4 × 8 H100 on one cluster; no cluster has room for one worker"
    )
    cpu_only = ir.Resources(cpu=2, memory_bytes=4 * GI)
    small = Candidate(name="cpu-a", free=FreeCapacity(cpu=5, memory_bytes=64 * GI, gpus={}))
    assert gang_no_fit_reason(cpu_only, 3, [small]) == (
        "needs 3 × 2 CPU, 4Gi memory on one cluster; largest free: cpu-a with 2 × 2 CPU, 4Gi memory"
    )
    assert describe_worker(ir.Resources(gpu=2)) == "2 GPU"
    assert describe_worker(ir.Resources(gpu=1, gpu_type=["H100", "A100"])) == "1 H100/A100"


def test_the_whole_quota_counts_the_group_and_says_it_is_a_gang() -> None:
    small = ir.Resources(cpu=0.1, gpu=4, gpu_type="H100")
    problem = exceeds_whole_quota_of(Limits(gpu=8), "m.train", spec(4, small))
    assert problem == (
        "task m.train can never run within its tenant's quota: it needs 16 GPUs, the quota "
        "allows 8 (a gang of 4 × 4 H100)"
    )
    assert exceeds_whole_quota_of(Limits(gpu=16), "m.train", spec(4, small)) is None
    assert exceeds_whole_quota_of(Limits(gpu=8), "m.train", spec(1, small)) is None


def test_the_reason_names_cpu_or_memory_when_they_and_not_the_gpus_limit_the_room() -> None:
    worker = ir.Resources(cpu=1, memory_bytes=2 * GI, gpu=1, gpu_type="H100")
    # The dev stack's case: 8 simulated H100 free, but 2 CPU cores.
    laptop = Candidate(
        name="local", free=FreeCapacity(cpu=2, memory_bytes=64 * GI, gpus={"H100": 8})
    )
    assert gang_no_fit_reason(worker, 3, [laptop]) == (
        "needs 3 × 1 H100 on one cluster; largest free: local with 2 × 1 H100 "
        "(its free CPU, 2, holds 2 workers of 1 CPU)"
    )
    small_memory = Candidate(
        name="m", free=FreeCapacity(cpu=64, memory_bytes=5 * GI, gpus={"H100": 8})
    )
    assert gang_no_fit_reason(worker, 3, [small_memory]).endswith(
        "largest free: m with 2 × 1 H100 (its free memory, 5Gi, holds 2 workers of 2Gi)"
    )
    both = Candidate(name="b", free=FreeCapacity(cpu=2, memory_bytes=64 * GI, gpus={"H100": 2}))
    assert gang_no_fit_reason(worker, 3, [both]).endswith("largest free: b with 2 × 1 H100")
