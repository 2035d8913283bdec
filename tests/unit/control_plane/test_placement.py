"""Placement as pure functions: every exclusion reason, GPU type preference, spread and binpack,
the tie-break, the restriction to one cluster, capacity accounting, and that no sequence of
placements ever puts more on a cluster than it has free."""

from __future__ import annotations

import random
from typing import Any

import pytest

from control_plane.placement import (
    Candidate,
    FreeCapacity,
    Strategy,
    Usage,
    format_bytes,
    free_capacity,
    place,
)
from fleetflow.ir import Resources

GI = 2**30


def reported(
    cpu: float = 0,
    cpu_in_use: float = 0,
    memory: int = 0,
    memory_in_use: int = 0,
    gpus: dict[str, tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """A heartbeat's capacity as `Cluster.capacity` stores it; gpus: type -> (allocatable,
    in use)."""
    return {
        "cpu_allocatable": cpu,
        "cpu_in_use": cpu_in_use,
        "memory_bytes_allocatable": memory,
        "memory_bytes_in_use": memory_in_use,
        "gpus": [
            {"gpu_type": t, "allocatable": a, "in_use": u} for t, (a, u) in (gpus or {}).items()
        ],
    }


def cluster(
    name: str,
    *,
    cpu: float | None = None,
    memory: int | None = None,
    gpus: dict[str, int] | None = None,
    labels: dict[str, str] | None = None,
    online: bool = True,
    active: int = 0,
) -> Candidate:
    """A candidate with this much free; GPUs None (nothing reported) unless cpu or gpus given."""
    reported_anything = cpu is not None or memory is not None or gpus is not None
    return Candidate(
        name=name,
        labels=labels or {},
        online=online,
        free=FreeCapacity(
            cpu=cpu, memory_bytes=memory, gpus=(gpus or {}) if reported_anything else None
        ),
        active_attempts=active,
    )


def gpu_task(n: int, gpu_type: str | list[str] | None = None, **kwargs: Any) -> Resources:
    return Resources(cpu=kwargs.pop("cpu", 1.0), gpu=n, gpu_type=gpu_type, **kwargs)


# --- exclusion reasons ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resources", "candidate", "reason"),
    [
        (Resources(), cluster("c", cpu=8, online=False), "offline"),
        (
            Resources(labels={"zone": "eu"}),
            cluster("c", cpu=8),
            "missing label zone=eu",
        ),
        (
            Resources(labels={"zone": "eu"}),
            cluster("c", cpu=8, labels={"zone": "us"}),
            "missing label zone=eu (has zone=us)",
        ),
        (
            gpu_task(1, "H100"),
            cluster("c", cpu=8, gpus={"A100": 4}),
            "no GPU of type H100 (has A100)",
        ),
        (
            gpu_task(1, ["H100", "A100"]),
            cluster("c", cpu=8, gpus={"T4": 4, "L4": 1}),
            "no GPU of type H100 or A100 (has L4, T4)",
        ),
        # The local-process agent reports CPU and memory and no GPUs.
        (
            gpu_task(1, "H100"),
            cluster("c", cpu=8, memory=16 * GI),
            "no GPU of type H100 (has none)",
        ),
        (gpu_task(1), cluster("c", cpu=8, memory=16 * GI), "no GPUs"),
        (gpu_task(8, "H100"), cluster("c", cpu=64, gpus={"H100": 3}), "needs 8 H100, 3 free"),
        (
            gpu_task(8, ["H100", "A100"]),
            cluster("c", cpu=64, gpus={"H100": 3, "A100": 0}),
            "needs 8 H100, 3 free; needs 8 A100, 0 free",
        ),
        (gpu_task(2), cluster("c", cpu=64, gpus={"A100": 1}), "needs 2 A100, 1 free"),
        (Resources(cpu=4), cluster("c", cpu=1.5), "needs 4 CPU, 1.5 free"),
        (
            Resources(memory_bytes=8 * GI),
            cluster("c", cpu=8, memory=2 * GI),
            "needs 8Gi memory, 2Gi free",
        ),
        (
            gpu_task(8, "H100", cpu=4, labels={"zone": "eu"}),
            cluster("c", cpu=1.5, gpus={"H100": 3}),
            "missing label zone=eu; needs 8 H100, 3 free; needs 4 CPU, 1.5 free",
        ),
    ],
)
def test_every_exclusion_has_a_reason(
    resources: Resources, candidate: Candidate, reason: str
) -> None:
    decision = place(resources, [candidate])
    assert decision.cluster is None and decision.gpu_type is None
    assert decision.excluded == {"c": reason}
    assert decision.eligible == {}
    assert decision.reason == "no cluster fits now"


def test_offline_is_the_only_reason_given_for_an_offline_cluster() -> None:
    decision = place(gpu_task(8, "H100"), [cluster("c", cpu=1, online=False)])
    assert decision.excluded == {"c": "offline"}


def test_reasons_are_given_for_each_excluded_cluster_and_eligible_ones_are_listed() -> None:
    decision = place(
        gpu_task(2, ["H100", "A100"], labels={"zone": "eu"}),
        [
            cluster("down", cpu=8, gpus={"H100": 8}, labels={"zone": "eu"}, online=False),
            cluster("us", cpu=8, gpus={"H100": 8}, labels={"zone": "us"}),
            cluster("eu-a100", cpu=8, gpus={"A100": 4}, labels={"zone": "eu"}),
            cluster("eu-both", cpu=8, gpus={"A100": 2, "H100": 1}, labels={"zone": "eu"}),
            cluster("eu-cpu", cpu=8, memory=GI, labels={"zone": "eu"}),
        ],
    )
    assert decision.excluded == {
        "down": "offline",
        "eu-cpu": "no GPU of type H100 or A100 (has none)",
        "us": "missing label zone=eu (has zone=us)",
    }
    assert decision.eligible == {"eu-a100": ("A100",), "eu-both": ("A100",)}
    # H100 fits nowhere (eu-both has 1 free), so A100 is taken; spread picks the most free.
    assert (decision.cluster, decision.gpu_type) == ("eu-a100", "A100")


def test_requests_of_zero_and_unreported_figures_always_fit() -> None:
    # 0 CPU / 0 memory: the executor's default, never a reason to refuse a cluster.
    idle = Resources(cpu=0, memory_bytes=0)
    assert place(idle, [cluster("full", cpu=0, memory=0)]).cluster == "full"
    # A figure the agent does not report is not a limit.
    assert place(Resources(cpu=64, memory_bytes=GI), [cluster("c", memory=2 * GI)]).cluster == "c"
    assert place(Resources(cpu=1, memory_bytes=64 * GI), [cluster("c", cpu=2)]).cluster == "c"


def test_a_cluster_that_reported_no_capacity_is_not_refused_for_it() -> None:
    unknown = cluster("unknown")
    assert unknown.free.unknown
    decision = place(gpu_task(4, ["H100", "A100"], cpu=16), [unknown])
    assert (decision.cluster, decision.gpu_type) == ("unknown", "H100")
    assert decision.eligible == {"unknown": ("H100", "A100")}
    any_type = place(gpu_task(4), [unknown])
    assert (any_type.cluster, any_type.gpu_type) == ("unknown", None)


def test_a_gpu_task_is_never_placed_where_no_gpus_are_reported() -> None:
    local = cluster("local", cpu=64, memory=64 * GI)
    for resources in (gpu_task(1), gpu_task(1, "A100"), gpu_task(1, ["H100", "A100"])):
        assert place(resources, [local]).cluster is None
    assert place(Resources(cpu=2), [local]).cluster == "local"


# --- GPU type preference ----------------------------------------------------------------------


def test_the_first_acceptable_gpu_type_that_fits_somewhere_wins() -> None:
    clusters = [
        cluster("a100s", cpu=64, gpus={"A100": 8}),
        cluster("h100s", cpu=64, gpus={"H100": 2}),
    ]
    # Spread would prefer the 8 free A100s, but H100 comes first and fits now.
    preferred = place(gpu_task(2, ["H100", "A100"]), clusters)
    assert (preferred.cluster, preferred.gpu_type) == ("h100s", "H100")
    assert preferred.eligible == {"a100s": ("A100",), "h100s": ("H100",)}
    # The other order of preference takes the other type.
    reversed_ = place(gpu_task(2, ["A100", "H100"]), clusters)
    assert (reversed_.cluster, reversed_.gpu_type) == ("a100s", "A100")
    # H100 does not fit 4 now: the next type is taken.
    fallback = place(gpu_task(4, ["H100", "A100"]), clusters)
    assert (fallback.cluster, fallback.gpu_type) == ("a100s", "A100")
    # A single type, as a string, is a list of one.
    assert place(gpu_task(1, "A100"), clusters).gpu_type == "A100"


def test_without_a_type_any_gpu_type_fits_and_the_choice_is_recorded() -> None:
    clusters = [cluster("mixed", cpu=64, gpus={"A100": 1, "L4": 4, "T4": 2})]
    spread = place(gpu_task(2), clusters, Strategy.SPREAD)
    assert spread.eligible == {"mixed": ("L4", "T4")}
    assert (spread.cluster, spread.gpu_type) == ("mixed", "L4")  # the most left free
    binpack = place(gpu_task(2), clusters, Strategy.BINPACK)
    assert (binpack.cluster, binpack.gpu_type) == ("mixed", "T4")  # the least left free


# --- strategies and tie-break -----------------------------------------------------------------


def test_spread_takes_the_most_free_capacity_and_binpack_the_least_that_fits() -> None:
    clusters = [
        cluster("big", cpu=32),
        cluster("small", cpu=4),
        cluster("tiny", cpu=1),  # too small for 2 CPU
    ]
    task = Resources(cpu=2)
    assert place(task, clusters, Strategy.SPREAD).cluster == "big"
    assert place(task, clusters, Strategy.BINPACK).cluster == "small"


def test_gpu_tasks_score_by_free_gpus_of_the_chosen_type_first() -> None:
    clusters = [
        cluster("many-gpus-few-cpus", cpu=8, gpus={"A100": 8}),
        cluster("few-gpus-many-cpus", cpu=128, gpus={"A100": 2}),
    ]
    task = gpu_task(2, "A100")
    assert place(task, clusters, Strategy.SPREAD).cluster == "many-gpus-few-cpus"
    assert place(task, clusters, Strategy.BINPACK).cluster == "few-gpus-many-cpus"


def test_equal_capacity_goes_by_active_attempts_then_by_name() -> None:
    task = Resources(cpu=1)
    even = [cluster("beta", cpu=4, active=1), cluster("alpha", cpu=4, active=1)]
    assert place(task, even, Strategy.SPREAD).cluster == "alpha"
    assert place(task, even, Strategy.BINPACK).cluster == "alpha"
    busier = [cluster("alpha", cpu=4, active=3), cluster("beta", cpu=4, active=1)]
    assert place(task, busier, Strategy.SPREAD).cluster == "beta"  # fewest active
    assert place(task, busier, Strategy.BINPACK).cluster == "alpha"  # most active
    # Capacity comes before active attempts.
    roomier = [cluster("alpha", cpu=4, active=0), cluster("beta", cpu=8, active=5)]
    assert place(task, roomier, Strategy.SPREAD).cluster == "beta"


def test_unreported_clusters_spread_by_active_attempts() -> None:
    """The walking skeleton's behaviour: with nothing reported, fewest active, then name."""
    clusters = {"alpha": cluster("alpha"), "beta": cluster("beta")}
    chosen = []
    for _ in range(4):
        name = place(Resources(), list(clusters.values())).cluster
        assert name is not None
        chosen.append(name)
        clusters[name] = clusters[name].after(Usage(cpu=1))
    assert chosen == ["alpha", "beta", "alpha", "beta"]


# --- one cluster asking for work --------------------------------------------------------------


def test_restricted_to_one_cluster() -> None:
    clusters = [
        cluster("big", cpu=32),
        cluster("small", cpu=4),
        cluster("down", cpu=64, online=False),
        cluster("a100s", cpu=64, gpus={"A100": 8}),
        cluster("h100s", cpu=64, gpus={"H100": 1}),
    ]
    assert place(Resources(cpu=2), clusters, restrict_to="small").cluster == "small"
    refused = place(Resources(cpu=8), clusters, restrict_to="small")
    assert refused.cluster is None and refused.reason == "small: needs 8 CPU, 4 free"
    assert place(Resources(), clusters, restrict_to="down").reason == "down: offline"
    # a100s could run it, but the preferred H100 fits now on h100s: a100s does not take it.
    preference = gpu_task(1, ["H100", "A100"])
    waits = place(preference, clusters, restrict_to="a100s")
    assert waits.cluster is None
    assert waits.reason == "H100 is preferred and fits on another cluster"
    taken = place(preference, clusters, restrict_to="h100s")
    assert (taken.cluster, taken.gpu_type) == ("h100s", "H100")


# --- capacity accounting ----------------------------------------------------------------------


def test_free_capacity_is_the_report_less_what_it_does_not_include_yet() -> None:
    report = reported(
        cpu=16, cpu_in_use=4, memory=64 * GI, memory_in_use=16 * GI, gpus={"A100": (8, 2)}
    )
    assert free_capacity(report) == FreeCapacity(cpu=12, memory_bytes=48 * GI, gpus={"A100": 6})
    since = [Usage(cpu=2, memory_bytes=8 * GI, gpu=4, gpu_type="A100"), Usage(cpu=1)]
    assert free_capacity(report, since) == FreeCapacity(
        cpu=9, memory_bytes=40 * GI, gpus={"A100": 2}
    )
    # Never below zero; a usage of a type the cluster lacks changes nothing.
    over = [Usage(cpu=100, memory_bytes=100 * GI, gpu=9, gpu_type="A100")]
    assert free_capacity(report, over) == FreeCapacity(cpu=0, memory_bytes=0, gpus={"A100": 0})
    assert free_capacity(report, [Usage(gpu=1, gpu_type="H100")]).gpus == {"A100": 6}


def test_unreported_figures_are_unknown() -> None:
    assert free_capacity({}) == FreeCapacity()
    assert free_capacity({}).unknown
    assert free_capacity(reported()).unknown  # an empty protobuf Capacity: all zeros
    assert free_capacity(reported(), [Usage(cpu=4)]).unknown
    local = free_capacity(reported(cpu=8, cpu_in_use=1, memory=16 * GI))
    assert local == FreeCapacity(cpu=7, memory_bytes=16 * GI, gpus={})  # no GPUs: none
    gpus_only = free_capacity(reported(gpus={"H100": (4, 1), "none": (0, 0)}))
    assert gpus_only == FreeCapacity(cpu=None, memory_bytes=None, gpus={"H100": 3})


def test_a_draining_cluster_has_nothing_free_whatever_it_reported_or_freed() -> None:
    """The last heartbeat of an agent that shuts down: no task goes there, not even one
    that fits what its finished attempts freed, nor with an empty (unknown) report."""
    draining = {**reported(cpu=16, memory=64 * GI, gpus={"A100": (8, 0)}), "draining": True}
    nothing = FreeCapacity(cpu=0.0, memory_bytes=0, gpus={})
    assert free_capacity(draining, freed=[Usage(cpu=2)]) == nothing
    assert free_capacity({**reported(), "draining": True}) == nothing
    candidate = Candidate(name="leaving", labels={}, online=True, free=nothing)
    assert place(Resources(cpu=0.001), [candidate], Strategy.SPREAD).cluster is None


def test_format_bytes() -> None:
    assert [format_bytes(n) for n in (512, 2048, 512 * 2**20, int(1.5 * GI), 8 * GI)] == [
        "512",
        "2Ki",
        "512Mi",
        "1.5Gi",
        "8Gi",
    ]


@pytest.mark.parametrize("strategy", list(Strategy))
def test_no_sequence_of_placements_overcommits_a_cluster(strategy: Strategy) -> None:
    rng = random.Random(5)
    gpu_types = ["H100", "A100", "L4"]
    placed = 0
    for _ in range(50):
        sizes: dict[str, dict[str, Any]] = {}
        clusters: dict[str, Candidate] = {}
        for i in range(rng.randint(1, 5)):
            name = f"c{i}"
            gpus = {t: rng.randint(0, 8) for t in rng.sample(gpu_types, rng.randint(0, 3))}
            sizes[name] = {"cpu": rng.choice([2, 4, 16]), "memory": 32 * GI, "gpus": gpus}
            clusters[name] = cluster(name, cpu=sizes[name]["cpu"], memory=32 * GI, gpus=gpus)
        used = {
            name: {"cpu": 0.0, "memory": 0, "gpus": dict.fromkeys(gpu_types, 0)}
            for name in clusters
        }
        for _ in range(40):
            gpu = rng.choice([0, 0, 1, 2, 4])
            wanted = rng.sample(gpu_types, rng.randint(0, 2)) if gpu else []
            task = Resources(
                cpu=rng.choice([0.5, 1, 2, 4]),
                memory_bytes=rng.choice([0, GI, 8 * GI]),
                gpu=gpu,
                gpu_type=wanted or None,
            )
            decision = place(task, list(clusters.values()), strategy)
            if decision.cluster is None:
                continue
            placed += 1
            name = decision.cluster
            if gpu:
                assert decision.gpu_type is not None
                assert not wanted or decision.gpu_type in wanted
                used[name]["gpus"][decision.gpu_type] += gpu
            used[name]["cpu"] += task.cpu
            used[name]["memory"] += task.memory_bytes
            clusters[name] = clusters[name].after(Usage.of(task, decision.gpu_type))
            assert used[name]["cpu"] <= sizes[name]["cpu"]
            assert used[name]["memory"] <= sizes[name]["memory"]
            for gpu_type, count in used[name]["gpus"].items():
                assert count <= sizes[name]["gpus"].get(gpu_type, 0)
    assert placed > 500  # the clusters did fill up


@pytest.mark.parametrize("cpu", [0.1, 0.3, 0.7])
def test_fractional_cpu_fills_a_cluster_to_the_last_slot(cpu: float) -> None:
    """2 - 19 × 0.1 is 0.0999… in floating point: the 20th task of 0.1 CPU must still fit
    (and the one after it must not)."""
    slots = round(2 / cpu, 9) // 1
    candidate = cluster("c", cpu=2)
    task = Resources(cpu=cpu)
    for _ in range(int(slots)):
        decision = place(task, [candidate])
        assert decision.cluster == "c", decision.excluded
        candidate = candidate.after(Usage.of(task, None))
    refused = place(task, [candidate])
    assert refused.cluster is None
    assert "CPU" in refused.excluded["c"]
