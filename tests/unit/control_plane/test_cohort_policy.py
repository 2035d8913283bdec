"""The pure cohort policy (`control_plane/placement/cohorts.py`): borrowing admission and the
choice of preemption victims, by example and by a property test over random cohorts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.placement.cohorts import (
    Cohort,
    Preemption,
    Running,
    Share,
    admit,
    borrowed_now,
    choose_victims,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)

COHORT = Cohort(
    "research",
    {
        "a": {"H100": Share(nominal=4, borrowing_limit=4)},
        "b": {"H100": Share(nominal=4, borrowing_limit=None)},
        "c": {"H100": Share(nominal=0, borrowing_limit=2), "A100": Share(nominal=2)},
    },
)


def run(
    attempt_id: str,
    tenant: str,
    gpu: int,
    *,
    cluster: str = "gpu-a",
    priority: int = 0,
    minute: int = 0,
    borrowed: bool = False,
    gpu_type: str = "H100",
) -> Running:
    return Running(
        attempt_id=attempt_id,
        tenant_id=tenant,
        cluster=cluster,
        gpu_type=gpu_type,
        gpu=gpu,
        priority=priority,
        started_at=T0 + timedelta(minutes=minute),
        borrowed=borrowed,
    )


def used_by(running: Sequence[Running]) -> dict[str, dict[str, int]]:
    used: dict[str, dict[str, int]] = {}
    for r in running:
        if r.gpu_type is not None:
            by_type = used.setdefault(r.tenant_id, {})
            by_type[r.gpu_type] = by_type.get(r.gpu_type, 0) + r.gpu
    return used


# --- admission ---------------------------------------------------------------------------


def test_within_nominal_is_admitted_without_borrowing() -> None:
    assert admit(COHORT, {}, "a", "H100", 4).borrowed == 0
    assert admit(COHORT, {}, "a", "H100", 4).admitted


def test_nominal_is_guaranteed_even_when_others_borrowed_the_cohort_full() -> None:
    used = {"a": {"H100": 8}, "b": {"H100": 0}}  # a borrowed all of b's nominal
    decision = admit(COHORT, used, "b", "H100", 4)
    assert decision.admitted and decision.borrowed == 0


def test_borrowing_counts_only_the_part_beyond_nominal() -> None:
    decision = admit(COHORT, {"a": {"H100": 2}}, "a", "H100", 4)
    assert decision.admitted and decision.borrowed == 2
    decision = admit(COHORT, {"a": {"H100": 6}}, "a", "H100", 2)
    assert decision.admitted and decision.borrowed == 2


def test_borrowing_limit_refuses_with_a_reason() -> None:
    decision = admit(COHORT, {"a": {"H100": 6}}, "a", "H100", 4)
    assert not decision.admitted
    assert "borrowing limit is 4" in decision.reason
    assert "cohort research" in decision.reason


def test_borrowing_is_limited_to_unused_nominal_in_the_cohort() -> None:
    # b has no borrowing limit; the cohort's nominal H100 is 8, a holds 3
    decision = admit(COHORT, {"a": {"H100": 3}}, "b", "H100", 6)
    assert not decision.admitted
    assert "has 5 of its 8 nominal H100 unused" in decision.reason
    assert admit(COHORT, {"a": {"H100": 3}}, "b", "H100", 5).admitted


def test_member_without_share_for_a_covered_type_has_nominal_zero() -> None:
    decision = admit(COHORT, {}, "a", "A100", 2)  # only c has A100 nominal
    assert decision.admitted and decision.borrowed == 2
    assert not admit(COHORT, {"c": {"A100": 1}}, "a", "A100", 2).admitted


def test_types_and_tenants_outside_the_cohort_are_not_limited() -> None:
    assert admit(COHORT, {}, "a", "L4", 64) == admit(COHORT, {}, "z", "H100", 64)
    assert admit(COHORT, {}, "a", "L4", 64).admitted
    assert admit(COHORT, {}, "z", "H100", 64).borrowed == 0
    assert admit(COHORT, {}, "a", "H100", 0).admitted


def test_borrowed_now() -> None:
    assert borrowed_now(COHORT, {"a": {"H100": 7}}, "a", "H100") == 3
    assert borrowed_now(COHORT, {"a": {"H100": 3}}, "a", "H100") == 0
    assert borrowed_now(COHORT, {"z": {"H100": 3}}, "z", "H100") == 0


# --- preemption --------------------------------------------------------------------------


def test_reclaims_borrowed_work_lowest_priority_then_most_recent() -> None:
    running = [
        run("a-nominal", "a", 4, minute=0),
        run("a-old", "a", 2, minute=1, borrowed=True),
        run("a-new", "a", 2, minute=2, borrowed=True),
        run("a-low", "a", 2, minute=0, borrowed=True, priority=-1, cluster="gpu-b"),
    ]
    used = used_by(running)
    # gpu-a is full (8 of 8), gpu-b has 2 free of 4
    free = {"gpu-a": 0, "gpu-b": 2}
    got = choose_victims(COHORT, used, "b", 0, "H100", 4, running, free, False)
    assert got == Preemption("gpu-b", ("a-low",))  # 2 free there + the lowest priority
    # Only gpu-a may be used: the most recently started borrowed attempt goes.
    got = choose_victims(COHORT, used, "b", 0, "H100", 2, running, {"gpu-a": 0}, False)
    assert got == Preemption("gpu-a", ("a-new",))


def test_never_preempts_more_than_needed() -> None:
    running = [
        run("a-nominal", "a", 4),
        run("a-1", "a", 1, borrowed=True, minute=3),
        run("a-3", "a", 3, borrowed=True, minute=1),
    ]
    # b needs 3 on a full cluster: taking a-1 (most recent) is not enough, a-3 is; a-1 is
    # then given back.
    got = choose_victims(COHORT, used_by(running), "b", 0, "H100", 3, running, {"gpu-a": 0}, False)
    assert got == Preemption("gpu-a", ("a-3",))


def test_never_preempts_work_within_its_tenants_nominal() -> None:
    # a holds exactly its nominal: its attempt flagged borrowed became nominal when another
    # finished; nothing of a's may be taken.
    running = [run("a-was-borrowed", "a", 4, borrowed=True)]
    assert (
        choose_victims(COHORT, used_by(running), "b", 9, "H100", 4, running, {"gpu-a": 0}, False)
        is None
    )
    # Once over nominal, only as much as brings it back (one of two).
    running = [run("a-1", "a", 4, borrowed=True, minute=1), run("a-2", "a", 4, borrowed=True)]
    got = choose_victims(COHORT, used_by(running), "b", 0, "H100", 8, running, {"gpu-a": 0}, False)
    assert got is None  # b would need both; only 4 of a's are beyond nominal


def test_only_a_waiter_within_nominal_reclaims() -> None:
    running = [run("a-nominal", "a", 4), run("a-b", "a", 4, borrowed=True)]
    used = {**used_by(running), "b": {"H100": 2}}
    # b holds 2 of its 4: 2 more are within nominal, 4 more are not
    assert choose_victims(COHORT, used, "b", 0, "H100", 2, running, {"gpu-a": 0}, False)
    assert choose_victims(COHORT, used, "b", 0, "H100", 4, running, {"gpu-a": 0}, False) is None


def test_within_tenant_preemption_needs_the_policy_and_strictly_lower_priority() -> None:
    running = [run("b-low", "b", 4, priority=1), run("b-same", "b", 4, priority=5, minute=1)]
    used = used_by(running)
    free = {"gpu-a": 0}
    assert choose_victims(COHORT, used, "b", 5, "H100", 4, running, free, False) is None
    assert choose_victims(COHORT, used, "b", 5, "H100", 4, running, free, True) == Preemption(
        "gpu-a", ("b-low",)
    )
    assert choose_victims(COHORT, used, "b", 1, "H100", 4, running, free, True) is None


def test_other_tenants_borrowed_work_goes_before_the_tenants_own() -> None:
    running = [
        run("b-low", "b", 2, priority=-5),
        run("a-borrowed", "a", 4, borrowed=True, priority=3),
        run("a-nominal", "a", 4),
    ]
    got = choose_victims(COHORT, used_by(running), "b", 9, "H100", 2, running, {"gpu-a": 0}, True)
    assert got == Preemption("gpu-a", ("a-borrowed",))


def test_no_preemption_when_it_fits_or_when_nothing_helps() -> None:
    running = [run("a-nominal", "a", 4), run("a-b", "a", 4, borrowed=True)]
    used = used_by(running)
    assert choose_victims(COHORT, used, "b", 0, "H100", 2, running, {"gpu-a": 2}, False) is None
    # victims on another cluster do not help this one
    assert choose_victims(COHORT, used, "b", 0, "H100", 2, running, {"gpu-b": 0}, False) is None
    # a tenant outside the cohort never preempts
    assert choose_victims(COHORT, used, "z", 99, "H100", 2, running, {"gpu-a": 0}, True) is None


def test_victims_from_several_tenants() -> None:
    cohort = Cohort(
        "c",
        {
            "a": {"H100": Share(2)},
            "b": {"H100": Share(2)},
            "c": {"H100": Share(4)},
        },
    )
    running = [
        run("a-1", "a", 2),
        run("a-2", "a", 2, borrowed=True, minute=2),
        run("b-1", "b", 2),
        run("b-2", "b", 2, borrowed=True, minute=1),
    ]
    got = choose_victims(cohort, used_by(running), "c", 0, "H100", 4, running, {"gpu-a": 0}, False)
    assert got is not None and sorted(got.victims) == ["a-2", "b-2"]


# --- property -----------------------------------------------------------------------------

TENANTS = ("a", "b", "c", "d")
CLUSTERS = ("x", "y", "z")


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Cohort, list[Running], dict[str, int], str, int, int, bool]:
    waiter = draw(st.sampled_from(TENANTS))
    # The waiter tends to have more nominal quota than the others, so that it has some to
    # reclaim from them.
    shares = {
        t: {
            "H100": Share(
                nominal=draw(st.integers(3, 10) if t == waiter else st.integers(0, 2)),
                borrowing_limit=draw(st.one_of(st.none(), st.integers(0, 6))),
            )
        }
        for t in TENANTS
    }
    cohort = Cohort("p", shares)
    waiter_busy = draw(st.booleans())  # or it holds much, to preempt its own lower priorities
    capacity = {c: draw(st.integers(0, 6)) for c in CLUSTERS}
    running: list[Running] = []
    used: dict[str, dict[str, int]] = {}
    room = dict(capacity)
    for i in range(draw(st.integers(0, 30))):
        tenant = draw(st.sampled_from(TENANTS))
        if tenant == waiter and not waiter_busy and draw(st.integers(0, 2)):
            continue  # the waiter tends to hold less: it has nominal quota to reclaim
        cluster = draw(st.sampled_from(CLUSTERS))
        gpu = draw(st.integers(1, 2))
        if room[cluster] < gpu:
            continue
        decision = admit(cohort, used, tenant, "H100", gpu)
        if not decision.admitted:
            continue
        room[cluster] -= gpu
        used.setdefault(tenant, {})["H100"] = used.get(tenant, {}).get("H100", 0) + gpu
        running.append(
            run(
                f"r{i}",
                tenant,
                gpu,
                cluster=cluster,
                priority=draw(st.integers(0, 3)),
                minute=draw(st.integers(0, 60)),
                borrowed=decision.borrowed > 0,
            )
        )
    # Some attempts finish: flags of the rest may be stale (borrowed yet within nominal now).
    ids = [r.attempt_id for r in running]
    finished = draw(st.sets(st.sampled_from(ids), max_size=2)) if ids else set()
    running = [r for r in running if r.attempt_id not in finished]
    free = {c: capacity[c] - sum(r.gpu for r in running if r.cluster == c) for c in CLUSTERS}
    return (
        cohort,
        running,
        free,
        waiter,
        draw(st.integers(0, 3)),
        draw(st.integers(1, 5)),
        draw(st.booleans()),
    )


def _fits(
    cohort: Cohort,
    used: Mapping[str, Mapping[str, int]],
    tenant: str,
    gpus: int,
    free: Mapping[str, int],
    cluster: str,
) -> bool:
    return free[cluster] >= gpus and admit(cohort, used, tenant, "H100", gpus).admitted


@settings(max_examples=600, deadline=None)
@given(scenarios())
def test_property_victims_make_it_fit_and_spare_everyone_within_nominal(
    scenario: tuple[Cohort, list[Running], dict[str, int], str, int, int, bool],
) -> None:
    cohort, running, free, tenant, priority, gpus, within = scenario
    used = used_by(running)
    got = choose_victims(cohort, used, tenant, priority, "H100", gpus, running, free, within)
    if got is None:
        return
    by_id = {r.attempt_id: r for r in running}
    victims = [by_id[v] for v in got.victims]
    assert victims, "a preemption names its victims"
    assert len(set(got.victims)) == len(victims)
    assert all(v.cluster == got.cluster and v.gpu_type == "H100" for v in victims)
    after_used = {t: dict(by_type) for t, by_type in used.items()}
    for v in victims:
        after_used[v.tenant_id]["H100"] -= v.gpu
    after_free = {**free, got.cluster: free[got.cluster] + sum(v.gpu for v in victims)}
    # After the victims are gone, the attempt fits and is admitted.
    assert _fits(cohort, after_used, tenant, gpus, after_free, got.cluster)
    # Never more than needed: sparing any one victim, it would not.
    for spared in victims:
        rest_used = {t: dict(by_type) for t, by_type in after_used.items()}
        rest_used[spared.tenant_id]["H100"] += spared.gpu
        rest_free = {**after_free, got.cluster: after_free[got.cluster] - spared.gpu}
        assert not _fits(cohort, rest_used, tenant, gpus, rest_free, got.cluster)
    # Nobody within nominal lost anything.
    for other in {v.tenant_id for v in victims} - {tenant}:
        nominal = cohort.share(other, "H100").nominal
        theirs = [v.gpu for v in victims if v.tenant_id == other]
        held = used[other]["H100"]
        assert held > nominal, f"{other} was within its nominal"
        # taken one at a time with the largest last, it was over nominal before each
        assert held - (sum(theirs) - max(theirs)) > nominal
        assert all(v.borrowed for v in victims if v.tenant_id == other)
        waiter_held = used.get(tenant, {}).get("H100", 0)
        assert waiter_held + gpus <= cohort.share(tenant, "H100").nominal
    for v in victims:
        if v.tenant_id == tenant:
            assert within and v.priority < priority
