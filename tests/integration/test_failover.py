"""Chaos through the whole stack: agents and the control plane die mid-execution, and every
execution still completes with each task's result recorded exactly once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from control_plane import processes
from control_plane.db.models import Cluster
from control_plane.db.session import make_engine, make_session_factory
from fleetflow.api_models.executions import AttemptPublic, ExecutionPublic
from tests.integration.stack import Stack, process_alive, sigkill, start_agent

pytestmark = pytest.mark.integration

WORKFLOWS = Path(__file__).parent / "workflows" / "platform_features.py"


def launch(stack: Stack, workflow: str, **inputs: Any) -> str:
    return stack.launch(WORKFLOWS, workflow, **inputs)


def wait_for(condition: Any, what: str, stack: Stack, timeout: float = 60) -> Any:
    return stack.wait_for(condition, what, timeout)


def running_attempt(stack: Stack, execution_id: str) -> AttemptPublic | None:
    with stack.client() as client:
        attempts = client.executions.get(execution_id).attempts
    return next((a for a in attempts if a.status == "RUNNING"), None)


def finish(stack: Stack, execution_id: str) -> ExecutionPublic:
    with stack.client() as client:
        return client.wait_for_execution(execution_id, timeout=120)


def test_agent_killed_mid_task_and_restarted(
    exchange_dir: Path, stack: Stack, tmp_path: Path
) -> None:
    marker = exchange_dir / "runs.txt"
    execution_id = launch(stack, "survives_agent_loss", marker=str(marker))
    wait_for(lambda: running_attempt(stack, execution_id), "the task to run", stack)
    wait_for(marker.exists, "the task process to start", stack)
    task_pid = int(marker.read_text().split()[0])

    sigkill(stack.children.pop("agent"))
    wait_for(lambda: not process_alive(task_pid), "the task to die with its agent", stack)
    stack.children["agent"] = start_agent(stack)

    final = finish(stack, execution_id)
    assert final.status == "SUCCEEDED", stack.logs()
    assert final.outputs == {"o0": 2}
    assert [a.status for a in final.attempts] == ["LOST", "SUCCEEDED"]
    assert marker.read_text().count("\n") == 2  # ran twice: killed once, then to completion


def test_silent_cluster_fails_over_to_another(
    exchange_dir: Path, stack: Stack, tmp_path: Path
) -> None:
    stack.add_agent("backup")
    marker = exchange_dir / "runs.txt"
    execution_id = launch(stack, "survives_agent_loss", marker=str(marker))
    first = wait_for(lambda: running_attempt(stack, execution_id), "the task to run", stack)
    wait_for(marker.exists, "the task process to start", stack)
    victim = "agent" if first.cluster == "local" else "agent-backup"
    survivor = "backup" if victim == "agent" else "local"
    sigkill(stack.children.pop(victim))
    try:
        final = finish(stack, execution_id)
        assert final.status == "SUCCEEDED", stack.logs()
        lost, succeeded = final.attempts
        assert lost.status == "LOST" and lost.cluster == first.cluster
        assert succeeded.status == "SUCCEEDED" and succeeded.cluster == survivor
        assert "no heartbeat" in (lost.error_message or "")
    finally:
        if victim == "agent":
            stack.children["agent"] = start_agent(stack)
        for name in [n for n in stack.children if n == "agent-backup"]:
            processes.stop(stack.children.pop(name))
        forget_cluster_heartbeat(stack, "backup")  # offline now: later tests do not place there


def test_three_clusters_share_a_fan_out_and_survive_losing_one(
    exchange_dir: Path, stack: Stack, tmp_path: Path
) -> None:
    stack.add_agent("east")
    stack.add_agent("west")
    markers = exchange_dir
    try:
        execution_id = launch(stack, "spread", n=6, marker_dir=str(markers))
        wait_for(lambda: len(list(markers.iterdir())) >= 2, "element processes to start", stack)
        # The victim is a cluster running an element now (an element takes 5 s): one chosen
        # before the wait above may have finished its element already on a loaded machine.
        victim = wait_for(lambda: running_attempt(stack, execution_id), "elements to run", stack)
        name = {"local": "agent", "east": "agent-east", "west": "agent-west"}[victim.cluster]
        sigkill(stack.children.pop(name))
        final = finish(stack, execution_id)
        assert final.status == "SUCCEEDED", stack.logs()
        assert final.outputs == {"o0": [0, 1, 2, 3, 4, 5]}
        elements = [a for a in final.attempts if a.map_index is not None]
        succeeded = [a for a in elements if a.status == "SUCCEEDED"]
        assert sorted(a.map_index for a in succeeded) == [0, 1, 2, 3, 4, 5]  # once each
        assert len({a.cluster for a in elements}) >= 2
        lost = [a for a in elements if a.status == "LOST"]
        assert lost and {a.cluster for a in lost} == {victim.cluster}
    finally:
        for cluster in ("east", "west"):
            if f"agent-{cluster}" in stack.children:
                processes.stop(stack.children.pop(f"agent-{cluster}"))
            forget_cluster_heartbeat(stack, cluster)
        if "agent" not in stack.children:
            forget_cluster_heartbeat(stack, "local")
            stack.children["agent"] = start_agent(stack)


def test_control_plane_restart_mid_execution_loses_nothing(
    exchange_dir: Path, stack: Stack, tmp_path: Path
) -> None:
    marker = exchange_dir / "pid.txt"
    execution_id = launch(stack, "sleepy", seconds=3.0, marker=str(marker))
    wait_for(lambda: running_attempt(stack, execution_id), "the task to run", stack)
    stack.restart_control_plane()  # SIGKILL and start again while the task runs
    final = finish(stack, execution_id)
    assert final.status == "SUCCEEDED", stack.logs()
    assert final.outputs == {"o0": 3.0}
    assert [a.status for a in final.attempts] == ["SUCCEEDED"]


def test_agent_shutdown_hands_its_attempt_back(
    exchange_dir: Path, stack: Stack, tmp_path: Path
) -> None:
    """SIGTERM (a rolling upgrade): the agent reports LOST and the attempt runs again, without
    using the task's retries (it has none)."""
    marker = exchange_dir / "runs.txt"
    execution_id = launch(stack, "survives_agent_loss", marker=str(marker))
    wait_for(marker.exists, "the task process to start", stack)
    processes.stop(stack.children.pop("agent"))
    # Its last heartbeat said it drains: the LOST attempt's retry waits for the next agent
    # instead of being assigned to the departing one (and lost again with its silence).
    assert cluster_capacity(stack, "local").get("draining") is True
    stack.children["agent"] = start_agent(stack)
    final = finish(stack, execution_id)
    assert final.status == "SUCCEEDED", stack.logs()
    assert "draining" not in cluster_capacity(stack, "local")  # registered again
    lost, succeeded = final.attempts
    assert lost.status == "LOST" and lost.error_message == "agent shut down"
    assert succeeded.status == "SUCCEEDED"


def cluster_capacity(stack: Stack, cluster: str) -> dict[str, Any]:
    engine = make_engine(stack.database_url)
    with make_session_factory(engine)() as session:
        capacity = session.scalars(select(Cluster.capacity).where(Cluster.name == cluster)).one()
    engine.dispose()
    return dict(capacity or {})


def forget_cluster_heartbeat(stack: Stack, cluster: str) -> None:
    engine = make_engine(stack.database_url)
    with make_session_factory(engine).begin() as session:
        session.execute(
            update(Cluster).where(Cluster.name == cluster).values(last_heartbeat_at=None)
        )
    engine.dispose()
