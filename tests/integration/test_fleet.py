"""Three clusters, three agents, one control plane: placement by labels, status of every
cluster, cancellation across clusters, and a partitioned agent whose superseded work is killed
when it comes back."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from data_plane_agent.lease_store import LEASES_DIR
from fleetflow.api_models.clusters import ClusterPublic
from fleetflow.api_models.executions import AttemptPublic
from tests.integration.stack import Stack, TemporalServer, process_alive, start_stack

pytestmark = pytest.mark.integration

WORKFLOWS = Path(__file__).parent / "workflows" / "fleet.py"
PLATFORM_FEATURES = WORKFLOWS.with_name("platform_features.py")
AGENTS = {"local": "agent", "east": "agent-east", "west": "agent-west"}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def fleet(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    temporal_server: TemporalServer,
) -> Iterator[Stack]:
    home: Path = tmp_path_factory.mktemp(f"fleet-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{home / 'fleetflow.db'}"
    else:
        url = request.getfixturevalue("postgres_database_factory")()
    stack = start_stack(home, url, temporal_server)
    try:
        stack.add_agent("east", {"zone": "east"})
        stack.add_agent("west", {"zone": "west"})
        yield stack
    finally:
        stack.stop()


def launch(stack: Stack, workflow: str, **inputs: Any) -> str:
    return stack.launch(WORKFLOWS, workflow, **inputs)


def wait_for(condition: Any, what: str, stack: Stack, timeout: float = 60) -> Any:
    return stack.wait_for(condition, what, timeout)


def attempts_of(stack: Stack, execution_id: str) -> list[AttemptPublic]:
    with stack.client() as client:
        return list(client.executions.get(execution_id).attempts)


def test_every_cluster_is_online_with_its_labels(fleet: Stack) -> None:
    def three_online() -> list[ClusterPublic] | None:
        with fleet.client() as client:
            clusters = client.clusters.list()
        online = [c for c in clusters if c.status == "online"]
        return clusters if len(online) == 3 else None

    clusters = wait_for(three_online, "three clusters online", fleet)
    by_name = {c.name: c for c in clusters}
    assert set(by_name) == set(AGENTS)
    assert by_name["east"].labels == {"zone": "east"}
    assert all(c.capacity and c.last_heartbeat_at for c in clusters)


def test_labels_steer_each_task_to_its_cluster(
    exchange_dir: Path, fleet: Stack, tmp_path: Path
) -> None:
    execution_id = launch(fleet, "zones", marker_dir=str(exchange_dir))
    with fleet.client() as client:
        final = client.wait_for_execution(execution_id, timeout=120)
    assert final.status == "SUCCEEDED", fleet.logs()
    assert final.outputs == {"o0": "east+west"}
    where = {a.task_name.rsplit(".", 1)[1]: a.cluster for a in final.attempts}
    assert (where["in_east"], where["in_west"]) == ("east", "west")


def test_cancel_stops_attempts_on_every_cluster_within_seconds(
    exchange_dir: Path, fleet: Stack, tmp_path: Path
) -> None:
    execution_id = launch(fleet, "lingering_fan_out", n=6, marker_dir=str(exchange_dir))

    def spread_over_three() -> bool:
        running = [a for a in attempts_of(fleet, execution_id) if a.status == "RUNNING"]
        return len({a.cluster for a in running}) == 3 and len(list(exchange_dir.iterdir())) >= 3

    wait_for(spread_over_three, "elements running on all three clusters", fleet, timeout=90)
    pids = [int(p.name.rsplit("-", 1)[1]) for p in exchange_dir.iterdir()]
    with fleet.client() as client:
        client.cancel(execution_id)
    wait_for(
        lambda: not any(process_alive(pid) for pid in pids), "every element process to stop", fleet
    )
    with fleet.client() as client:
        final = client.wait_for_execution(execution_id, timeout=60)
    assert final.status == "CANCELLED"
    elements = [a for a in final.attempts if a.map_index is not None]
    assert {a.status for a in elements} <= {"CANCELLED"}, elements


def test_a_partitioned_agent_kills_its_superseded_attempt_when_it_returns(
    exchange_dir: Path, fleet: Stack, tmp_path: Path
) -> None:
    """SIGSTOP an agent (its task keeps running, it stops heartbeating): its attempt is LOST and
    runs on another cluster. On SIGCONT the agent learns it was superseded and kills it; the
    execution's result is the other cluster's, recorded once."""
    marker = exchange_dir / "runs.txt"
    execution_id = fleet.launch(PLATFORM_FEATURES, "survives_agent_loss", marker=str(marker))
    first = wait_for(
        lambda: next((a for a in attempts_of(fleet, execution_id) if a.status == "RUNNING"), None),
        "the first attempt to run",
        fleet,
    )
    wait_for(marker.exists, "its process to start", fleet)
    task_pid = int(marker.read_text().split()[0])
    agent = fleet.children[AGENTS[first.cluster]]
    os.kill(agent.pid, signal.SIGSTOP)
    try:
        with fleet.client() as client:
            final = client.wait_for_execution(execution_id, timeout=120)
        assert process_alive(task_pid), "the cut-off attempt's process kept running meanwhile"
    finally:
        os.kill(agent.pid, signal.SIGCONT)
    wait_for(
        lambda: not process_alive(task_pid),
        "the returning agent to kill its superseded task",
        fleet,
    )
    assert final.status == "SUCCEEDED", fleet.logs()
    assert final.outputs == {"o0": 2}
    lost, succeeded = final.attempts
    assert (lost.status, lost.cluster) == ("LOST", first.cluster)
    assert succeeded.status == "SUCCEEDED" and succeeded.cluster != first.cluster
    # The returning agent's late reports about the superseded attempt are settled (answered,
    # and its lease's file deleted)...
    lease_file = fleet.home / AGENTS[first.cluster] / LEASES_DIR / f"{first.id}.json"
    wait_for(lambda: not lease_file.exists(), "the late reports to be answered", fleet)
    with fleet.client() as client:
        again = client.executions.get(execution_id)
    assert [a.status for a in again.attempts] == ["LOST", "SUCCEEDED"]  # ...change nothing

    def back_online() -> bool:  # the agent is healthy again
        with fleet.client() as client:
            clusters = {c.name: c.status for c in client.clusters.list()}
        return clusters[first.cluster] == "online"

    wait_for(back_online, "the cluster to come back online", fleet)
