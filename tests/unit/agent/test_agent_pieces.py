"""The agent's settings, CLI, backoff and protocol mapping."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from data_plane_agent.attempts import AttemptEvent, AttemptResources, TaskAssignment
from data_plane_agent.cli import app
from data_plane_agent.executors.base import Capacity, GpuCapacity, machine_capacity
from data_plane_agent.pacing import Backoff
from data_plane_agent.protocol import (
    StopOrder,
    assignment_from_proto,
    heartbeat_request,
    is_final_report,
    register_request,
    report_from_bytes,
    report_request,
    report_secret_from_proto,
    report_state_name,
    stop_orders_from_proto,
    with_report_secret,
)
from data_plane_agent.settings import AgentSettings
from fleetflow.agent.v1 import agent_pb2
from fleetflow.states import AttemptState


@pytest.fixture(autouse=True)
def _clean_agent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FLEETFLOW_AGENT_"):
            monkeypatch.delenv(name)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETFLOW_AGENT_TOKEN", "s3cret")
    monkeypatch.setenv("FLEETFLOW_AGENT_CONTROL_PLANE", "cp.example:9443")
    monkeypatch.setenv("FLEETFLOW_AGENT_MAX_PARALLEL", "8")
    monkeypatch.setenv("FLEETFLOW_AGENT_LABELS", '{"gpu": "h100", "zone": "eu"}')

    settings = AgentSettings()

    assert settings.token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.control_plane == "cp.example:9443"
    assert settings.max_parallel == 8
    assert settings.labels == {"gpu": "h100", "zone": "eu"}
    assert settings.lease_wait_seconds == 20
    assert settings.work_dir == Path.home() / ".fleetflow" / "agent"


def test_cli_without_a_token_fails_clearly() -> None:
    result = CliRunner().invoke(app, ["run", "--control-plane", "127.0.0.1:1"])

    assert result.exit_code == 2
    assert "no cluster token" in result.output
    assert "FLEETFLOW_AGENT_TOKEN" in result.output
    assert "Traceback" not in result.output


def test_cli_rejects_invalid_options_without_a_traceback() -> None:
    result = CliRunner().invoke(app, ["run", "--token", "t", "--max-parallel", "0"])

    assert result.exit_code == 2
    assert "invalid agent settings: max_parallel" in result.output
    assert "Traceback" not in result.output


def test_cli_help_lists_run() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "run" in result.output


def test_backoff_grows_with_jitter_up_to_a_cap_and_resets() -> None:
    low = Backoff(1.0, 8.0, rng=lambda: 0.0)
    high = Backoff(1.0, 8.0, rng=lambda: 1.0)
    assert [low.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert [high.next_delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    high.reset()
    assert high.next_delay() == 1.0


def test_assignment_and_report_mapping() -> None:
    message = agent_pb2.Assignment(
        attempt_id="a1",
        fencing_token=3,
        task_module="pkg.tasks",
        task_function="fit",
        resources=agent_pb2.Resources(cpu=2, memory_bytes=1024, gpu=1, gpu_type="h100"),
        timeout_seconds=60,
    )
    assignment = assignment_from_proto(message)
    assert (assignment.attempt_id, assignment.fencing_token) == ("a1", 3)
    assert (assignment.resources.gpu, assignment.resources.gpu_type) == (1, "h100")
    assert assignment.timeout_seconds == 60

    observed = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    event = AttemptEvent("a1", AttemptState.FAILED, "ValueError: x", "Traceback…", observed)
    request = report_request(event, fencing_token=3, sequence=2)
    assert request.state == agent_pb2.ATTEMPT_STATE_FAILED
    assert (request.fencing_token, request.sequence) == (3, 2)
    assert (request.message, request.error_traceback) == ("ValueError: x", "Traceback…")
    assert request.observed_at.ToDatetime(tzinfo=dt.UTC) == observed


def test_the_report_secret_travels_apart_from_what_executors_see() -> None:
    message = agent_pb2.Assignment(attempt_id="a1", fencing_token=3, report_secret="ffl_s3cret")
    # Executors get the TaskAssignment (the Kubernetes one writes it into the pod): no secret.
    assignment = assignment_from_proto(message)
    assert "ffl_s3cret" not in repr(assignment)
    assert "s3cret" not in repr(vars(assignment))
    secret = report_secret_from_proto(message)
    assert secret.get_secret_value() == "ffl_s3cret" and "s3cret" not in repr(secret)
    # The report is made (and buffered) without it; only the copy sent carries it.
    event = AttemptEvent("a1", AttemptState.SUCCEEDED)
    request = report_request(event, fencing_token=3, sequence=2)
    sent = with_report_secret(request, secret)
    assert request.report_secret == "" and sent.report_secret == "ffl_s3cret"
    sent.report_secret = ""
    assert sent == request


def test_machine_capacity_counts_held_attempts_and_simulated_gpus() -> None:
    def held(attempt_id: str, resources: AttemptResources) -> TaskAssignment:
        return TaskAssignment(attempt_id, 1, "ex", "n", "t", "m", "f", "b", "i", "o", resources)

    capacity = machine_capacity(
        [
            held("a1", AttemptResources(cpu=1.5, memory_bytes=100, gpu=2, gpu_type="A100")),
            held("a2", AttemptResources(cpu=0.5, memory_bytes=50, gpu=1, gpu_type="L4")),
        ],
        {"L4": 4, "A100": 8},
    )

    assert capacity.cpu_allocatable == float(os.cpu_count() or 1)
    assert (capacity.cpu_in_use, capacity.memory_bytes_in_use) == (2.0, 150)
    assert capacity.gpus == [GpuCapacity("A100", 8, 2), GpuCapacity("L4", 4, 1)]
    assert machine_capacity([]).gpus == []
    # It says which attempts it counts, and so does the heartbeat (placement relies on it).
    assert capacity.counted_attempt_ids == {"a1", "a2"}
    sent = heartbeat_request(capacity=capacity, held_attempt_ids=set(), pending_reasons={})
    assert sent.capacity.counts_attempts and list(sent.capacity.counted_attempt_ids) == ["a1", "a2"]
    assert not heartbeat_request(
        capacity=Capacity(), held_attempt_ids=set(), pending_reasons={}
    ).capacity.counts_attempts


def test_register_and_heartbeat_requests_list_held_attempts_in_order() -> None:
    capacity = Capacity(cpu_allocatable=4, gpus=[GpuCapacity("L4", 2, 1)])

    register = register_request(
        agent_version="1.2.3",
        executor_name="local-process",
        labels={"zone": "eu"},
        capacity=capacity,
        held={"at-b": 2, "at-a": 7},
    )
    heartbeat = heartbeat_request(
        capacity=capacity,
        held_attempt_ids={"at-b", "at-a"},
        pending_reasons={"at-b": "no node has 1 L4 free"},
    )

    assert [(r.attempt_id, r.fencing_token) for r in register.running] == [("at-a", 7), ("at-b", 2)]
    assert (register.executors, register.labels) == (["local-process"], {"zone": "eu"})
    assert register.capacity.gpus[0].in_use == 1
    assert list(heartbeat.running_attempt_ids) == ["at-a", "at-b"]
    assert [(p.attempt_id, p.reason) for p in heartbeat.pending_attempts] == [
        ("at-b", "no node has 1 L4 free")
    ]


def test_buffered_reports_read_back_with_their_state() -> None:
    event = AttemptEvent("a1", AttemptState.LOST)
    request = report_request(event, fencing_token=3, sequence=2)

    read = report_from_bytes(request.SerializeToString())

    assert read == request and is_final_report(read) and report_state_name(read) == "LOST"
    running = report_request(AttemptEvent("a1", AttemptState.RUNNING), fencing_token=3, sequence=1)
    assert not is_final_report(running) and report_state_name(running) == "RUNNING"
    with pytest.raises(ValueError):
        report_from_bytes(b"\xff\xff")


def test_one_agent_per_work_dir(tmp_path: Path) -> None:
    from data_plane_agent.agent import lock_work_dir

    first = lock_work_dir(tmp_path / "work")
    assert first is not None
    assert lock_work_dir(tmp_path / "work") is None  # a second agent is refused
    first.close()
    again = lock_work_dir(tmp_path / "work")
    assert again is not None
    again.close()


def test_stop_orders_carry_their_grace_and_fall_back_to_bare_ids() -> None:
    """Orders with a grace (a preemption's), without one (the agent's own grace), and ids
    only a control plane that predates orders names."""
    response = agent_pb2.HeartbeatResponse(
        stop_attempt_ids=["at-pre", "at-cancel", "at-old"],
        stop_attempts=[
            agent_pb2.StopAttempt(attempt_id="at-pre", grace_seconds=0, reason="preempted"),
            agent_pb2.StopAttempt(attempt_id="at-cancel", reason="cancelled"),
        ],
    )
    assert stop_orders_from_proto(response) == (
        StopOrder("at-pre", grace_seconds=0.0, reason="preempted"),
        StopOrder("at-cancel", grace_seconds=None, reason="cancelled"),
        StopOrder("at-old"),
    )
    older = agent_pb2.RegisterResponse(stop_attempt_ids=["at-1"])
    assert stop_orders_from_proto(older) == (StopOrder("at-1"),)
