"""Reservations as pure functions: which cluster a starving attempt holds, one per cluster and
oldest first, what the others see of a held cluster, the pending reason, and (randomised) that
no placement the rule allows ever leaves the reserved attempt with less than it would have had.
"""

from __future__ import annotations

import random

from control_plane.placement import Candidate, FreeCapacity, Usage, place
from control_plane.placement.admission import Limits, Load
from control_plane.placement.reservations import (
    Reservations,
    Starving,
    idle_capacity,
    reserve,
    starving,
)
from fleetflow.ir import Resources

GI = 2**30


def cluster(name: str, free: dict[str, int], cpu: float = 64, **labels: str) -> Candidate:
    return Candidate(name, labels, free=FreeCapacity(cpu=cpu, memory_bytes=None, gpus=free))


def idle(**gpus: dict[str, int]) -> dict[str, FreeCapacity]:
    return {name: FreeCapacity(cpu=64, gpus=g) for name, g in gpus.items()}


LARGE = Resources(gpu=8, gpu_type="H100", cpu=1)
SMALL = Resources(gpu=1, gpu_type="H100", cpu=1)


def test_the_cluster_where_it_lacks_least_is_held_with_a_reason_that_says_so() -> None:
    clusters = [cluster("gpu-a", {"H100": 6}), cluster("gpu-b", {"H100": 2})]
    held = reserve(
        [Starving("big", LARGE)], clusters, idle(**{"gpu-a": {"H100": 8}, "gpu-b": {"H100": 8}})
    )
    reservation = held.of("big")
    assert reservation is not None and reservation.cluster == "gpu-a"
    assert reservation.reason == "reserved on gpu-a: waiting for 8 H100, 6 free"


def test_a_cluster_too_small_or_of_the_wrong_kind_is_never_held() -> None:
    clusters = [
        cluster("small", {"H100": 7}),  # 7 in total: 8 never fit
        cluster("a100s", {"A100": 8}),
        cluster("labelled", {"H100": 0}, zone="us"),
        cluster("right", {"H100": 1}, zone="eu"),
    ]
    totals = idle(small={"H100": 7}, a100s={"A100": 8}, labelled={"H100": 8}, right={"H100": 8})
    wanted = LARGE.model_copy(update={"labels": {"zone": "eu"}})
    reservation = reserve([Starving("big", wanted)], clusters, totals).of("big")
    assert reservation is not None and reservation.cluster == "right"
    # Fits on no cluster even empty: nothing held.
    huge = Resources(gpu=16, gpu_type="H100")
    assert reserve([Starving("huge", huge)], clusters, totals).by_cluster == {}


def test_only_clusters_granted_to_its_tenant_are_held() -> None:
    clusters = [cluster("gpu-a", {"H100": 6}), cluster("gpu-b", {"H100": 2})]
    totals = idle(**{"gpu-a": {"H100": 8}, "gpu-b": {"H100": 8}})
    reservation = reserve([Starving("big", LARGE, ["gpu-b"])], clusters, totals).of("big")
    assert reservation is not None and reservation.cluster == "gpu-b"


def test_one_reservation_per_cluster_oldest_first() -> None:
    clusters = [cluster("gpu-a", {"H100": 6}), cluster("gpu-b", {"H100": 2})]
    totals = idle(**{"gpu-a": {"H100": 8}, "gpu-b": {"H100": 8}})
    starving = [Starving("oldest", LARGE), Starving("older", LARGE), Starving("old", LARGE)]
    held = reserve(starving, clusters, totals)
    assert {name: r.attempt_id for name, r in held.by_cluster.items()} == {
        "gpu-a": "oldest",
        "gpu-b": "older",
    }
    assert held.of("old") is None


def test_others_see_the_held_cluster_less_its_request_and_it_sees_it_whole() -> None:
    clusters = [cluster("gpu-a", {"H100": 6, "A100": 4}, cpu=10)]
    held = reserve([Starving("big", LARGE)], clusters, idle(**{"gpu-a": {"H100": 8, "A100": 4}}))
    (theirs,) = held.as_seen_by("small", clusters)
    assert theirs.free.gpus == {"H100": 0, "A100": 4}
    assert theirs.free.cpu == 9
    (its,) = held.as_seen_by("big", clusters)
    assert its == clusters[0]
    # A small H100 task may not backfill the H100s; an A100 task or a CPU task may.
    assert place(SMALL, [theirs]).cluster is None
    assert place(Resources(gpu=1, gpu_type="A100", cpu=1), [theirs]).cluster == "gpu-a"
    assert place(Resources(cpu=2), [theirs]).cluster == "gpu-a"
    # Its CPU is covered with 9 to spare: a task asking more than that must wait.
    assert place(Resources(cpu=9.5), [theirs]).cluster is None
    assert held.explain({"gpu-a": "needs 1 H100, 0 free"}) == {
        "gpu-a": "needs 1 H100, 0 free (held for an older task)"
    }


def test_a_starving_attempt_that_fits_now_holds_what_it_fits_on() -> None:
    clusters = [cluster("gpu-a", {"H100": 8})]
    held = reserve([Starving("big", LARGE)], clusters, idle(**{"gpu-a": {"H100": 8}}))
    (theirs,) = held.as_seen_by("small", clusters)
    assert place(SMALL, [theirs]).cluster is None
    assert place(LARGE, held.as_seen_by("big", clusters)).cluster == "gpu-a"


def test_a_task_naming_no_gpu_type_holds_a_type_the_cluster_has() -> None:
    clusters = [cluster("gpu-a", {"A100": 3, "H100": 1})]
    anything = Resources(gpu=4)
    totals = idle(**{"gpu-a": {"A100": 4, "H100": 4}})
    reservation = reserve([Starving("big", anything)], clusters, totals).of("big")
    assert reservation is not None and reservation.gpu_type == "A100"
    assert reservation.lacking == "4 A100, 3 free"


def test_an_attempt_its_quota_holds_back_is_not_starving() -> None:
    busy = Load(gpu=6, gpu_per_type={"H100": 6})
    assert starving("big", LARGE, Limits(gpu=8), busy, new_execution=False) is None
    assert starving("big", LARGE, Limits(gpu_per_type={"H100": 8}), busy, new_execution=False) is (
        None
    )
    one = starving("big", LARGE, Limits(gpu=16), busy, new_execution=False)
    assert one is not None and one.resources.gpu_types == ["H100"]
    either = Resources(gpu=8, gpu_type=["H100", "A100"])
    one = starving("big", either, Limits(gpu_per_type={"H100": 8}), busy, new_execution=False)
    assert one is not None and one.resources.gpu_types == ["A100"]


def test_a_task_naming_no_gpu_type_holds_only_a_type_its_quota_allows_and_then_asks_for_it() -> (
    None
):
    clusters = [cluster("a100s", {"A100": 8}), cluster("l4s", {"L4": 2})]
    totals = idle(a100s={"A100": 8}, l4s={"L4": 8})
    anything = Resources(gpu=8)
    limits = Limits(gpu_per_type={"A100": 4})  # its quota never lets it have 8 A100
    one = starving("big", anything, limits, Load(), new_execution=False)
    assert one is not None and one.refused_types == ["A100"]
    held = reserve([one], clusters, totals)
    reservation = held.of("big")
    # Though the A100s are all free, it holds the L4s, the type it may have.
    assert reservation is not None and (reservation.cluster, reservation.gpu_type) == ("l4s", "L4")
    assert held.narrow("big", anything).gpu_types == ["L4"]
    assert held.narrow("other", anything) == anything
    assert held.narrow("big", SMALL) == SMALL  # a task that names its types keeps them


def test_idle_capacity_is_the_report_with_nothing_in_use() -> None:
    report = {
        "cpu_allocatable": 8,
        "cpu_in_use": 6,
        "memory_bytes_allocatable": 16 * GI,
        "memory_bytes_in_use": 3 * GI,
        "gpus": [{"gpu_type": "H100", "allocatable": 8, "in_use": 5}],
    }
    assert idle_capacity(report) == FreeCapacity(cpu=8, memory_bytes=16 * GI, gpus={"H100": 8})
    assert idle_capacity({**report, "draining": True}).gpus == {}


def test_backfilling_under_the_rule_never_leaves_the_reserved_attempt_less() -> None:
    """Random clusters, a reserved attempt and streams of other attempts placed through what
    they see: after every placement, every resource the reserved attempt asks for is at least
    as free as its request, or as free as it was before anyone else was placed."""
    rng = random.Random(7)
    for _ in range(300):
        total = {"H100": rng.randint(4, 8), "A100": rng.randint(0, 4)}
        free = {t: rng.randint(0, n) for t, n in total.items()}
        cpu = float(rng.randint(2, 16))
        real = cluster("c", free, cpu=cpu)
        large = Resources(gpu=rng.randint(1, total["H100"]), gpu_type="H100", cpu=rng.randint(0, 4))
        held = reserve([Starving("big", large)], [real], {"c": FreeCapacity(cpu=16, gpus=total)})
        reservation = held.of("big")
        assert reservation is not None
        before = real.free
        for number in range(20):
            other = Resources(
                gpu=rng.randint(0, 3),
                gpu_type=rng.choice(["H100", "A100"]),
                cpu=rng.choice([0, 0.5, 1, 3]),
            )
            decision = place(other, held.as_seen_by(f"small-{number}", [real]))
            if decision.cluster is None:
                continue
            real = real.after(Usage.of(other, decision.gpu_type))
            assert real.free.gpus is not None and before.gpus is not None
            assert real.free.gpus["H100"] >= min(large.gpu, before.gpus["H100"])
            assert real.free.cpu is not None and before.cpu is not None
            assert real.free.cpu >= min(large.cpu, before.cpu)


def test_preemption_for_others_leaves_a_held_cluster_alone() -> None:
    clusters = [cluster("gpu-a", {"H100": 6}), cluster("gpu-b", {"H100": 2})]
    held = reserve([Starving("big", LARGE, ["gpu-a"])], clusters, idle(**{"gpu-a": {"H100": 8}}))
    assert [c.name for c in held.not_held_for_others("small", clusters)] == ["gpu-b"]
    assert held.not_held_for_others("big", clusters) == clusters


def test_no_reservations_change_nothing() -> None:
    clusters = [cluster("gpu-a", {"H100": 2})]
    assert Reservations().as_seen_by("x", clusters) == clusters
    assert Reservations().of("x") is None
