"""Multi-node tasks (gangs) through the whole stack, on a local agent advertising 16 simulated
H100: a 4-worker task's workers rendezvous over TCP with the environment the agent gives them
and all-reduce their ranks; rank 0's result is the task's. A worker that fails fails the whole
attempt, and the group is retried as one attempt; cancelling stops every worker; the quota and
the dry-run preview count the whole group."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from random import Random

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.db.models import Cluster, TaskAttempt
from control_plane.db.repositories.attempts import ACTIVE_STATES
from control_plane.db.session import make_engine
from fleetflow.api_models.previews import TaskPreview
from fleetflow.bundle import build_bundle
from fleetflow.client import ApiError, Client
from fleetflow.loader import load_workflow
from tests.integration.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.stacks("sqlite")]

WORKFLOWS = Path(__file__).parent / "workflows" / "gang_flows.py"
GANG_CLUSTER = "gang-box"
RANKS = 4


@pytest.fixture(scope="module")
def gangs(stack: Stack) -> Iterator[Client]:
    """Tenant `gangs`, may use only `gang-box` (16 simulated H100); a developer's client."""
    stack.add_agent(GANG_CLUSTER, env={"FLEETFLOW_AGENT_SIMULATED_GPUS": '{"H100": 16}'})
    with stack.client() as admin:
        admin.admin.create_tenant("gangs")
        admin.admin.grant_cluster("gangs", GANG_CLUSTER)
        user = admin.admin.create_user("gangs", "gangs-dev", "developer")
    with Client(stack.api_url, token=user.token) as client:
        yield client


def register(client: Client, name: str) -> tuple[str, str]:
    """Bundle and register the workflow `name`; its spec name and version."""
    wf, root = load_workflow(WORKFLOWS, name)
    digest, data = build_bundle(root)
    client.workflows.upload_bundle(digest, data)
    return wf.spec.name, client.workflows.register_spec(wf.spec, digest).version


def launch(client: Client, **inputs: object) -> str:
    wf, _ = load_workflow(WORKFLOWS, "gang_sum")
    name, version = register(client, "gang_sum")
    return str(client.executions.create(name, wf.inputs_to_literals(inputs), version=version).id)


def pids(markers: Path, attempt_number: int) -> dict[int, int]:
    """rank -> pid of the workers of attempt `attempt_number` that have started."""
    found = {}
    for path in markers.glob(f"{attempt_number}-*.pid"):
        text = path.read_text()
        if text:
            found[int(path.stem.split("-")[1])] = int(text)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_workers_rendezvous_and_rank_zero_returns_the_sum(
    stack: Stack, gangs: Client, exchange_dir: Path
) -> None:
    execution_id = launch(gangs, marker_dir=str(exchange_dir))
    final = gangs.wait_for_execution(execution_id, timeout=120)
    assert final.status == "SUCCEEDED", (final.attempts, stack.logs())
    assert final.outputs == {"o0": sum(range(RANKS))}
    [attempt] = final.attempts  # the whole group is one attempt
    assert attempt.cluster == GANG_CLUSTER
    assert sorted(pids(exchange_dir, 1)) == list(range(RANKS))
    assert {(exchange_dir / f"1-{r}.sum").read_text() for r in range(RANKS)} == {"6"}
    logs = gangs.executions.logs(execution_id)
    text = "".join(a.log or "" for a in logs)
    assert "worker 0 of 4, local rank 0" in text
    for rank in range(1, RANKS):
        assert f"[rank {rank}] worker {rank} of 4, local rank {rank}" in text, text


def test_a_failed_worker_fails_the_attempt_and_the_group_is_retried_as_one(
    stack: Stack, gangs: Client, exchange_dir: Path
) -> None:
    execution_id = launch(gangs, marker_dir=str(exchange_dir), fail_rank=2)
    final = gangs.wait_for_execution(execution_id, timeout=180)
    assert final.status == "SUCCEEDED", (final.attempts, stack.logs())
    assert final.outputs == {"o0": sum(range(RANKS))}
    first, second = sorted(final.attempts, key=lambda a: a.attempt_number)
    assert first.status == "FAILED" and second.status == "SUCCEEDED"
    assert first.error_message is not None
    assert "worker of rank 2 failed" in first.error_message, first.error_message
    assert "fails on purpose" in (first.error_message + (first.error_traceback or ""))
    # Every worker of the failed attempt is gone; all four ran again.
    assert not [pid for pid in pids(exchange_dir, 1).values() if alive(pid)]
    assert sorted(pids(exchange_dir, 2)) == list(range(RANKS))


def test_cancel_stops_every_worker(stack: Stack, gangs: Client, exchange_dir: Path) -> None:
    execution_id = launch(gangs, marker_dir=str(exchange_dir), hold=600.0)
    started = stack.wait_for(
        lambda: (found := pids(exchange_dir, 1)) and len(found) == RANKS and found,
        "all four workers to start",
        120,
    )
    assert all(alive(pid) for pid in started.values())
    gangs.executions.cancel(execution_id)
    final = gangs.wait_for_execution(execution_id, timeout=60)
    assert final.status == "CANCELLED"
    assert final.attempts[0].status == "CANCELLED"
    stack.wait_for(
        lambda: not [pid for pid in started.values() if alive(pid)], "every worker to be gone", 30
    )
    assert os.listdir(exchange_dir)  # the workers wrote their pids


def test_the_quota_counts_the_whole_group(stack: Stack, gangs: Client, exchange_dir: Path) -> None:
    with stack.client() as admin:
        admin.admin.set_quota("gangs", gpu=8)
    try:
        wf, _ = load_workflow(WORKFLOWS, "gang_sum")
        name, version = register(gangs, "gang_sum")
        inputs = wf.inputs_to_literals({"marker_dir": str(exchange_dir)})
        with pytest.raises(ApiError) as refused:
            gangs.executions.create(name, inputs, version=version)
        message = str(refused.value)
        assert "it needs 16 GPUs, the quota allows 8" in message, message
        assert "a gang of 4 × 4 H100" in message, message
        preview = gangs.executions.preview(name, inputs, version=version)
        assert preview.tasks[0].quota.startswith("refused:"), preview.tasks[0].quota
        assert "a gang of 4 × 4 H100" in preview.tasks[0].quota
    finally:
        with stack.client() as admin:
            admin.admin.set_quota("gangs")  # unlimited again


def test_the_preview_explains_a_group_that_does_not_fit(stack: Stack, gangs: Client) -> None:
    name, version = register(gangs, "too_big_gang")

    def previewed() -> TaskPreview | None:
        """Once gang-box's agent reported all 16 H100 free (online, and a heartbeat after
        the earlier tests' gangs ended)."""
        [task] = gangs.executions.preview(name, {}, version=version).tasks
        return task if "needs 32 H100, 16 free" in str(task.excluded) else None

    task = stack.wait_for(previewed, "gang-box to report its 16 H100 free", 90)
    assert task.replicas == 4
    assert task.cluster is None
    assert task.waiting_reason == (
        f"needs 4 × 8 H100 on one cluster; largest free: {GANG_CLUSTER} with 2 × 8 H100"
    ), task
    name, version = register(gangs, "gang_sum")
    fits = gangs.executions.preview(name, {"marker_dir": "/x"}, version=version)
    assert fits.tasks[0].cluster == GANG_CLUSTER, fits.tasks[0]


STRESS_CLUSTERS = {"stress-a": 16, "stress-b": 16}  # H100 each


def active_gpus(stack: Stack) -> dict[str, list[tuple[str, str, int]]]:
    """By cluster name: (attempt id, status, GPUs held) of every active attempt, as the
    database holds them now."""
    engine = make_engine(stack.database_url)
    try:
        with Session(engine) as session:
            rows = session.execute(
                select(Cluster.name, TaskAttempt.id, TaskAttempt.status, TaskAttempt.gpu)
                .join(Cluster, Cluster.id == TaskAttempt.cluster_id)
                .where(TaskAttempt.status.in_(ACTIVE_STATES))
            ).all()
    finally:
        engine.dispose()
    held: dict[str, list[tuple[str, str, int]]] = {}
    for cluster, attempt_id, status, gpu in rows:
        held.setdefault(cluster, []).append((attempt_id, status, gpu or 0))
    return held


def test_a_gang_never_starts_partially_among_competing_small_tasks(
    stack: Stack, exchange_dir: Path
) -> None:
    """A 4 × 4 H100 gang and seeded random arrivals of 2-GPU tasks on two clusters of 16:
    at every step the gang's attempt holds its whole group on one cluster whenever it is
    active, no worker of it runs while it is not, and every attempt of it that started had
    all four workers; and the GPUs held on each cluster fit it (placement counts what the
    agents' heartbeats say they count, so an attempt leased while a heartbeat was on its way
    is never taken as free)."""
    with stack.client() as admin:
        admin.admin.create_tenant("stress")
        for cluster, count in STRESS_CLUSTERS.items():
            stack.add_agent(cluster, env={"FLEETFLOW_AGENT_SIMULATED_GPUS": f'{{"H100": {count}}}'})
            admin.admin.grant_cluster("stress", cluster)
    random = Random(18)
    small: list[str] = []
    gang: str | None = None
    markers = exchange_dir / "stress"
    markers.mkdir(mode=0o777)
    markers.chmod(0o1777)
    arrivals = [random.expovariate(4.0) for _ in range(16)]
    samples = 0
    saw_gang_active = False
    overcommits: list[tuple[str, list[tuple[str, str, int]]]] = []

    def check() -> None:
        nonlocal samples, saw_gang_active
        held = active_gpus(stack)
        for cluster, attempts in held.items():
            if cluster in STRESS_CLUSTERS:
                total = sum(gpu for _, _, gpu in attempts)
                if total > STRESS_CLUSTERS[cluster]:
                    overcommits.append((cluster, attempts))
        if gang is not None:
            with stack.client(tenant="stress") as client:
                attempts = client.executions.get(gang).attempts
            for attempt in attempts:
                placed = [
                    (cluster, gpu)
                    for cluster, rows in held.items()
                    for attempt_id, _, gpu in rows
                    if attempt_id == attempt.id
                ]
                if attempt.status in ("ASSIGNED", "LEASED", "RUNNING"):
                    saw_gang_active = saw_gang_active or bool(placed)
                    assert len(placed) <= 1 and all(gpu == 16 for _, gpu in placed), placed
                if attempt.status == "PENDING":  # not started: no worker of it exists
                    started = pids(markers, attempt.attempt_number)
                    assert not [p for p in started.values() if alive(p)], started
        samples += 1

    for index, pause in enumerate(arrivals):
        deadline = time.monotonic() + pause
        while time.monotonic() < deadline:
            check()
        seconds = round(random.uniform(0.5, 2.5), 2)
        small.append(stack.launch(WORKFLOWS, "small_gpu_job", tenant="stress", seconds=seconds))
        if index == 4:
            gang = stack.launch(
                WORKFLOWS, "gang_sum", tenant="stress", marker_dir=str(markers), hold=1.0
            )
    assert gang is not None
    with stack.client(tenant="stress") as client:

        def finished() -> bool:
            check()
            states = [client.executions.get(e).status for e in [*small, gang]]
            return all(s in ("SUCCEEDED", "FAILED", "CANCELLED") for s in states)

        stack.wait_for(finished, "the gang and the small tasks to finish", 240)
        final = client.executions.get(gang)
        assert final.status == "SUCCEEDED", final.attempts
        assert final.outputs == {"o0": sum(range(RANKS))}
        assert all(client.executions.get(e).status == "SUCCEEDED" for e in small)
    assert saw_gang_active and samples > 20
    for attempt in final.attempts:  # every attempt that started had all its workers
        assert len(pids(markers, attempt.attempt_number)) in (0, RANKS)
    assert {final.attempts[-1].cluster} <= set(STRESS_CLUSTERS)
    assert not overcommits, f"GPUs overcommitted {len(overcommits)} time(s), first {overcommits[0]}"
