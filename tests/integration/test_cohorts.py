"""Cohorts through the whole stack, with local agents advertising simulated GPUs.

Tenant `alpha` borrows `beta`'s idle H100s with long training tasks that checkpoint every step;
`beta` submits; alpha's borrowed work is PREEMPTED within seconds and beta runs; alpha's
preempted tasks resume from their checkpoints once capacity frees, and nothing is lost or
succeeds twice. Within a tenant, higher-priority work preempts lower-priority work only when
the tenant's policy allows it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetflow.api_models.executions import AttemptPublic
from fleetflow.bundle import build_bundle
from fleetflow.client import Client
from fleetflow.loader import load_workflow
from tests.integration.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.stacks("sqlite", "postgres-split-worker")]

WORKFLOWS = Path(__file__).parent / "workflows" / "cohorts.py"
GRACE_WORKFLOWS = Path(__file__).parent / "workflows" / "preemption_grace.py"
H100 = '{"H100": 4}'


def member(
    admin: Client, cohort: str, tenant: str, nominal: int, *, within_tenant: bool = False
) -> None:
    admin.admin.set_cohort_member(
        cohort, tenant, {"H100": (nominal, None)}, preempt_within_tenant=within_tenant
    )


@pytest.fixture(scope="module")
def tenants(stack: Stack) -> Iterator[dict[str, Client]]:
    """`alpha` and `beta` share the cohort `lab` (4 H100 nominal each) and the clusters
    `gpu-1` and `gpu-2` (4 simulated H100 each); `gamma` alone has `gpu-3` (4 H100)."""
    for cluster in ("gpu-1", "gpu-2", "gpu-3"):
        stack.add_agent(cluster, env={"FLEETFLOW_AGENT_SIMULATED_GPUS": H100})
    clients = {}
    with stack.client() as admin:
        admin.admin.create_cohort("lab")
        admin.admin.create_cohort("solo")
        for tenant, clusters in (
            ("alpha", ("gpu-1", "gpu-2")),
            ("beta", ("gpu-1", "gpu-2")),
            ("gamma", ("gpu-3",)),
        ):
            admin.admin.create_tenant(tenant)
            for cluster in clusters:
                admin.admin.grant_cluster(tenant, cluster)
            user = admin.admin.create_user(tenant, f"{tenant}-dev", "developer")
            clients[tenant] = Client(stack.api_url, token=user.token)
        member(admin, "lab", "alpha", 4)
        member(admin, "lab", "beta", 4)
    yield clients
    for client in clients.values():
        client.close()


def launch(
    client: Client, workflow: str, *, priority: int = 0, path: Path = WORKFLOWS, **inputs: Any
) -> str:
    wf, root = load_workflow(path, workflow)
    digest, data = build_bundle(root)
    client.workflows.upload_bundle(digest, data)
    version = client.workflows.register_spec(wf.spec, digest).version
    literals = wf.inputs_to_literals(inputs)
    return str(client.executions.create(wf.spec.name, literals, version, priority=priority).id)


def attempts(client: Client, execution_id: str, status: str | None = None) -> list[AttemptPublic]:
    found = client.executions.get(execution_id).attempts
    return [a for a in found if not a.task_name.endswith("indices") and status in (None, a.status)]


def steps(marks: Path, element: int) -> list[tuple[int, int]]:
    """(step, attempt number) of the element's marker files, in step order."""
    found = []
    for path in marks.glob(f"{element}.step-*.attempt-*"):
        step, attempt = path.name.removeprefix(f"{element}.step-").split(".attempt-")
        found.append((int(step), int(attempt)))
    return sorted(found)


def test_borrowed_work_is_preempted_for_nominal_quota_and_resumes_from_its_checkpoint(
    stack: Stack, tenants: dict[str, Client], exchange_dir: Path
) -> None:
    alpha, beta = tenants["alpha"], tenants["beta"]
    marks = exchange_dir
    training = launch(alpha, "training", n=4, steps=10, step_seconds=1.0, marks=str(marks))
    # 4 × 2 H100 on 2 × 4: alpha holds all eight, four of them borrowed from beta.
    running = stack.wait_for(
        lambda: len(attempts(alpha, training, "RUNNING")) == 4 or None, "alpha's four tasks", 90
    )
    assert running
    assert sorted(a.borrowed_gpus for a in attempts(alpha, training)) == [0, 0, 2, 2]
    # Let every task checkpoint a few steps.
    stack.wait_for(lambda: all(len(steps(marks, i)) >= 3 for i in range(4)), "3 steps each", 60)

    submitted = time.monotonic()
    jobs = launch(beta, "short_jobs", n=2, seconds=3.0)
    preempted = stack.wait_for(
        lambda: (
            attempts(alpha, training, "PREEMPTED")
            if len(attempts(alpha, training, "PREEMPTED")) == 2
            else None
        ),
        "alpha's two borrowed tasks to be preempted",
        30,
    )
    assert time.monotonic() - submitted < 15
    assert all(a.borrowed_gpus == 2 for a in preempted)
    assert all("cohort lab" in (a.error_message or "") for a in preempted)
    stack.wait_for(lambda: len(attempts(beta, jobs, "RUNNING")) == 2 or None, "beta runs", 30)

    assert beta.wait_for_execution(jobs, timeout=120).status == "SUCCEEDED"
    final = alpha.wait_for_execution(training, timeout=180)
    assert final.status == "SUCCEEDED", stack.logs()
    elements = [a for a in final.attempts if a.task_name.endswith("train")]
    by_element: dict[int, list[AttemptPublic]] = {}
    for a in elements:
        assert a.map_index is not None
        by_element.setdefault(a.map_index, []).append(a)
    # Exactly one success per element; the preempted ones ran again, using no retries.
    assert {
        i: [a.status for a in sorted(tries, key=lambda a: a.attempt_number)]
        for i, tries in by_element.items()
    } == {
        i: (["PREEMPTED", "SUCCEEDED"] if i in {a.map_index for a in preempted} else ["SUCCEEDED"])
        for i in range(4)
    }
    starts = final.outputs["o0"]
    for i in range(4):
        marked = steps(marks, i)
        assert sorted({step for step, _ in marked}) == list(range(10)), marked
        if i not in {a.map_index for a in preempted}:
            assert starts[i] == 0 and {attempt for _, attempt in marked} == {1}
            continue
        # Resumed from its checkpoint, not from step 0; the preempted process was stopped
        # (it marked nothing past the step it was in when its checkpoint was read).
        assert starts[i] >= 2, (i, starts, marked)  # 3 steps marked: 2 checkpointed
        assert [s for s, attempt in marked if attempt == 2] == list(range(starts[i], 10))
        assert max(s for s, attempt in marked if attempt == 1) <= starts[i]
        assert [s for s, _ in marked].count(0) == 1
    usage = alpha.usage.cohort()
    assert (usage.cohort, usage.preempted) == ("lab", 2)
    assert usage.gpu_types["H100"].nominal == 4


def test_within_tenant_preemption_follows_the_tenants_policy(
    stack: Stack, tenants: dict[str, Client], exchange_dir: Path
) -> None:
    gamma = tenants["gamma"]
    marks = exchange_dir
    with stack.client() as admin:
        member(admin, "solo", "gamma", 4, within_tenant=False)
    # Not allowed: the high-priority task waits for the low one to finish.
    low = launch(gamma, "one_box", priority=1, seconds=4.0, marks=str(marks))
    stack.wait_for(lambda: attempts(gamma, low, "RUNNING") or None, "the low one runs", 60)
    high = launch(gamma, "one_box", priority=10, seconds=0.5, marks=str(marks))
    assert gamma.wait_for_execution(low, timeout=60).status == "SUCCEEDED"
    assert [a.status for a in attempts(gamma, low)] == ["SUCCEEDED"]
    assert gamma.wait_for_execution(high, timeout=60).status == "SUCCEEDED"

    with stack.client() as admin:
        member(admin, "solo", "gamma", 4, within_tenant=True)
    low = launch(gamma, "one_box", priority=1, seconds=8.0, marks=str(marks))
    stack.wait_for(lambda: attempts(gamma, low, "RUNNING") or None, "the low one runs", 60)
    high = launch(gamma, "one_box", priority=10, seconds=0.5, marks=str(marks))
    stack.wait_for(lambda: attempts(gamma, low, "PREEMPTED") or None, "the low one preempted", 30)
    assert gamma.wait_for_execution(high, timeout=60).status == "SUCCEEDED"
    final = gamma.wait_for_execution(low, timeout=90)
    assert final.status == "SUCCEEDED"
    assert [a.status for a in attempts(gamma, low)] == ["PREEMPTED", "SUCCEEDED"]
    assert final.outputs["o0"] == 2


@pytest.mark.parametrize("leave", [True, False], ids=["leaves-in-its-grace", "ignores-sigterm"])
def test_a_preempted_attempt_gets_its_cohorts_grace_period(
    stack: Stack, tenants: dict[str, Client], exchange_dir: Path, leave: bool
) -> None:
    """SIGTERM, then the kill once the cohort's grace is over: a task that traps SIGTERM
    checkpoints in its grace and leaves (long before a 60 s grace ends); one that carries on
    is killed after the grace (2 s, not the agent's own 5 s). Either way its next attempt
    reads the checkpoint written in the grace."""
    gamma = tenants["gamma"]
    grace = 60 if leave else 2
    with stack.client() as admin:
        member(admin, "solo", "gamma", 4, within_tenant=True)
        admin.admin.update_cohort("solo", preemption_grace_seconds=grace)
    marks = exchange_dir
    low = launch(gamma, "graceful", priority=1, path=GRACE_WORKFLOWS, marks=str(marks), leave=leave)
    stack.wait_for(lambda: (marks / f"{low}.ready").exists() or None, "SIGTERM trapped", 60)
    # It holds the box; the high-priority task (longer than the grace) takes it back.
    high = launch(gamma, "one_box", priority=10, seconds=6.0, marks=str(marks))
    stack.wait_for(lambda: attempts(gamma, low, "PREEMPTED") or None, "the low one preempted", 30)
    preempted_at = time.monotonic()
    stack.wait_for(lambda: (marks / f"{low}.term").exists() or None, "SIGTERM in the task", 30)
    final = gamma.wait_for_execution(low, timeout=120)
    assert final.status == "SUCCEEDED", stack.logs()
    assert [a.status for a in attempts(gamma, low)] == ["PREEMPTED", "SUCCEEDED"]
    assert final.outputs["o0"] == "checkpointed in the grace of attempt 1"
    assert gamma.wait_for_execution(high, timeout=60).status == "SUCCEEDED"
    trapped_at = float((marks / f"{low}.term").read_text())
    last_alive = float((marks / f"{low}.alive").read_text())
    if leave:
        # It left at SIGTERM: nothing alive after it, and no one waited for the grace.
        assert last_alive <= trapped_at + 0.5
        assert time.monotonic() - preempted_at < grace / 2
    else:
        # Alive through the grace, then killed (the agent's own grace would be 5 s).
        assert 1.5 <= last_alive - trapped_at < 4.5, last_alive - trapped_at
