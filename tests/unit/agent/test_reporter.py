"""How the agent delivers its status reports (data_plane_agent/reporter.py): what waits goes in
one call, each answer is taken on its own, and a control plane that predates `ReportStatuses`
gets the same reports one per call."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from pydantic import SecretStr

from data_plane_agent.attempts import AttemptEvent, TaskAssignment
from data_plane_agent.log_fields import AttemptLogFields
from data_plane_agent.protocol import ReportAnswer
from data_plane_agent.reporter import REPORT_BATCH, RUNNING_REPORT_LINGER_SECONDS, Reporter
from data_plane_agent.settings import AgentSettings
from data_plane_agent.supervisor import Supervisor
from fleetflow.agent.v1.agent_pb2 import ReportStatusRequest
from fleetflow.states import AttemptState

ACCEPT = ReportAnswer(accepted=True, reason="")


class FakeSession:
    """Stands in for the agent's `Session`: registered, answering each report with
    `answer(report)`, recording every call; `batches=False` answers `ReportStatuses` with
    UNIMPLEMENTED, as a control plane that predates it does."""

    def __init__(
        self, answer: Callable[[ReportStatusRequest], ReportAnswer], *, batches: bool = True
    ) -> None:
        self.answer = answer
        self.batches = batches
        self.calls: list[list[ReportStatusRequest]] = []  # one list per call, batch or not
        self.registered = True

    async def wait_registered(self) -> None:
        return None

    async def report_statuses(self, requests: list[ReportStatusRequest]) -> list[ReportAnswer]:
        if not self.batches:
            raise rpc_error(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        self.calls.append(list(requests))
        return [self.answer(request) for request in requests]

    async def report_status(self, request: ReportStatusRequest) -> ReportAnswer:
        self.calls.append([request])
        return self.answer(request)


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def lease(attempt_id: str) -> TaskAssignment:
    return TaskAssignment(attempt_id, 3, "ex-1", "n0", "t", "flows", "train", "b", "i", "o")


def reporter_of(session: FakeSession, tmp_path: Path, attempts: list[str]) -> Reporter:
    """A reporter on `session` with `attempts` leased, delivering nothing yet."""
    settings = AgentSettings(
        control_plane="127.0.0.1:1",
        token="ffa_unit",
        work_dir=tmp_path,
        reconnect_initial_backoff_seconds=0.01,
    )
    reporter = Reporter(settings, session, AttemptLogFields())  # type: ignore[arg-type]
    for attempt_id in attempts:
        reporter.open_lease(lease(attempt_id), SecretStr(f"ffl_{attempt_id}"))
    return reporter


async def report_all(reporter: Reporter, attempts: list[str]) -> None:
    """Each attempt's RUNNING and SUCCEEDED reports."""
    for state in (AttemptState.RUNNING, AttemptState.SUCCEEDED):
        for attempt_id in attempts:
            await reporter.report(AttemptEvent(attempt_id, state), fencing_token=3)


async def delivered(reporter: Reporter) -> None:
    """Deliver what the reporter holds, until nothing is left."""
    delivering = asyncio.create_task(reporter.deliver_reports())
    try:
        await asyncio.wait_for(reporter._reports.wait_empty(), 10)
    finally:
        delivering.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await delivering


def sent(call: list[ReportStatusRequest]) -> list[tuple[str, int, str]]:
    return [(r.attempt_id, r.sequence, r.report_secret) for r in call]


async def test_what_waits_goes_in_one_call_each_attempts_reports_in_order(
    tmp_path: Path,
) -> None:
    session = FakeSession(lambda _: ACCEPT)
    attempts = [f"at-{n:02x}" for n in range(5)]
    reporter = reporter_of(session, tmp_path, attempts)
    await report_all(reporter, attempts)
    for attempt_id in attempts:
        reporter.close_attempt(attempt_id)  # its last report is queued
    await delivered(reporter)

    # The first call took all ten reports (each with its own lease's secret), in order.
    assert [sent(call) for call in session.calls][0] == [
        (attempt_id, sequence, f"ffl_{attempt_id}")
        for sequence in (1, 2)
        for attempt_id in attempts
    ]
    assert len(session.calls) == 1
    assert reporter.report_secrets == {}  # every last report settled: its secret forgotten


async def test_a_short_attempts_running_report_waits_for_its_end_and_shares_its_call(
    tmp_path: Path,
) -> None:
    session = FakeSession(lambda _: ACCEPT)
    reporter = reporter_of(session, tmp_path, ["at-01"])
    delivering = asyncio.create_task(reporter.deliver_reports())
    try:
        await reporter.report(AttemptEvent("at-01", AttemptState.RUNNING), fencing_token=3)
        await asyncio.sleep(RUNNING_REPORT_LINGER_SECONDS / 5)  # the task ends meanwhile
        assert session.calls == []  # RUNNING alone waits for company
        await reporter.report(AttemptEvent("at-01", AttemptState.SUCCEEDED), fencing_token=3)
        reporter.close_attempt("at-01")
        await asyncio.wait_for(reporter._reports.wait_empty(), 10)
    finally:
        delivering.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await delivering

    assert [sent(call) for call in session.calls] == [
        [("at-01", 1, "ffl_at-01"), ("at-01", 2, "ffl_at-01")]
    ]


async def test_a_running_report_goes_alone_once_it_has_waited_its_while(tmp_path: Path) -> None:
    session = FakeSession(lambda _: ACCEPT)
    reporter = reporter_of(session, tmp_path, ["at-02"])
    await reporter.report(AttemptEvent("at-02", AttemptState.RUNNING), fencing_token=3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await delivered(reporter)

    assert [sent(call) for call in session.calls] == [[("at-02", 1, "ffl_at-02")]]
    assert loop.time() - started >= RUNNING_REPORT_LINGER_SECONDS * 0.9  # it did wait


async def test_a_final_report_waits_for_its_lease_file_written_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease file of an attempt that dies with the agent is written while it starts, but
    is on disk before its final report is buffered (which a restarted agent replays with it)."""
    session = FakeSession(lambda _: ACCEPT)
    reporter = reporter_of(session, tmp_path, ["at-03"])
    leases = reporter._leases
    save = leases.save

    def slow_save(*args: Any) -> None:
        time.sleep(0.2)  # a slow disk
        save(*args)

    monkeypatch.setattr(leases, "save", slow_save)
    reporter.store_lease_meanwhile(lease("at-03"), SecretStr("ffl_at-03"))
    lease_file = leases.directory / "at-03.json"

    await reporter.report(AttemptEvent("at-03", AttemptState.RUNNING), fencing_token=3)
    assert not lease_file.exists()  # a RUNNING report does not wait for it
    await reporter.report(AttemptEvent("at-03", AttemptState.SUCCEEDED), fencing_token=3)

    assert lease_file.exists()
    assert reporter.final_report_tokens() == {"at-03": 3}


class LaunchOnlyExecutor:
    """Stand-in for the local-process executor (attempts die with the agent): records whether
    each attempt's lease file was on disk when its launch ran."""

    attempts_survive_agent = False

    def __init__(self, leases: Path) -> None:
        self.leases = leases
        self.file_at_launch: dict[str, bool] = {}

    async def launch(self, assignment: TaskAssignment) -> None:
        await asyncio.sleep(0.05)  # staging and starting the process
        path = self.leases / f"{assignment.attempt_id}.json"
        self.file_at_launch[assignment.attempt_id] = path.exists()

    def running(self) -> list[str]:
        return []  # every process ended, its event not reported yet


def supervised(reporter: Reporter, tmp_path: Path) -> tuple[LaunchOnlyExecutor, Supervisor]:
    """A supervisor over `reporter` and a stand-in executor."""
    executor = LaunchOnlyExecutor(reporter._leases.directory)
    settings = AgentSettings(control_plane="127.0.0.1:1", token="ffa_unit", work_dir=tmp_path)
    supervisor = Supervisor(
        settings,
        executor,  # type: ignore[arg-type]
        reporter,
        asyncio.Event(),
        AttemptLogFields(),
    )
    return executor, supervisor


async def test_a_lease_file_is_written_once_its_attempts_process_started(tmp_path: Path) -> None:
    """Its fsyncs would slow the attempt's staging down; its final report still waits for it."""
    reporter = reporter_of(FakeSession(lambda _: ACCEPT), tmp_path, [])
    executor, supervisor = supervised(reporter, tmp_path)

    supervisor.launch(lease("at-04"), SecretStr("ffl_at-04"))
    await asyncio.gather(*supervisor._launches)
    await reporter.report(AttemptEvent("at-04", AttemptState.SUCCEEDED), fencing_token=3)

    assert executor.file_at_launch == {"at-04": False}
    assert (reporter._leases.directory / "at-04.json").exists()
    assert reporter.final_report_tokens() == {"at-04": 3}


async def test_a_heartbeat_holds_an_attempt_until_its_final_report_is_queued(
    tmp_path: Path,
) -> None:
    """The executor forgets an attempt as its process ends, before the supervisor reports its
    end: a heartbeat in between must still list it, or the control plane marks it LOST (CI saw
    a SUCCEEDED report refused so)."""
    reporter = reporter_of(FakeSession(lambda _: ACCEPT), tmp_path, [])
    _, supervisor = supervised(reporter, tmp_path)

    supervisor.launch(lease("at-05"), SecretStr("ffl_at-05"))
    launching = supervisor.heartbeat_attempt_ids()
    await asyncio.gather(*supervisor._launches)

    assert launching == {"at-05"}  # still staging
    assert supervisor.heartbeat_attempt_ids() == {"at-05"}  # ended, not reported yet


async def test_a_burst_goes_in_calls_of_at_most_the_batch(tmp_path: Path) -> None:
    session = FakeSession(lambda _: ACCEPT)
    attempts = [f"at-{n:03x}" for n in range(REPORT_BATCH + 6)]
    reporter = reporter_of(session, tmp_path, attempts)
    await report_all(reporter, attempts)
    await delivered(reporter)

    assert max(len(call) for call in session.calls) == REPORT_BATCH
    assert sum(len(call) for call in session.calls) == 2 * len(attempts)


async def test_each_answer_is_taken_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A refused report and an ignored one are settled (never sent again); the accepted one
    beside them is delivered."""
    answers = {
        "at-0a": ACCEPT,
        "at-0b": ReportAnswer(False, "report for attempt at-0b refused: no secret", refused=True),
        "at-0c": ReportAnswer(False, "stale fencing token"),
    }
    session = FakeSession(lambda request: answers[request.attempt_id])
    with caplog.at_level(logging.INFO, logger="data_plane_agent.agent"):
        reporter = reporter_of(session, tmp_path, list(answers))
        for attempt_id in answers:
            await reporter.report(AttemptEvent(attempt_id, AttemptState.RUNNING), 3)
        await delivered(reporter)

    assert [sent(call) for call in session.calls] == [
        [(attempt_id, 1, f"ffl_{attempt_id}") for attempt_id in answers]
    ]
    lines = {(r.levelname, r.getMessage()) for r in caplog.records}
    assert (
        "ERROR",
        "attempt at-0b: the control plane refused its RUNNING report (sequence 1): report for "
        "attempt at-0b refused: no secret",
    ) in lines
    assert (
        "INFO",
        "attempt at-0c: the control plane ignored its RUNNING report (sequence 1): stale "
        "fencing token",
    ) in lines


async def test_a_failed_call_sends_its_reports_again(tmp_path: Path) -> None:
    failures = [rpc_error(grpc.StatusCode.UNAVAILABLE, "connection reset")]

    class Flaky(FakeSession):
        async def report_statuses(self, requests: list[ReportStatusRequest]) -> Any:
            if failures:
                self.calls.append(list(requests))
                raise failures.pop()
            return await super().report_statuses(requests)

    session = Flaky(lambda _: ACCEPT)
    attempts = ["at-01", "at-02"]
    reporter = reporter_of(session, tmp_path, attempts)
    for attempt_id in attempts:
        await reporter.report(AttemptEvent(attempt_id, AttemptState.SUCCEEDED), 3)
    await delivered(reporter)

    assert [sent(call) for call in session.calls] == [
        [("at-01", 1, "ffl_at-01"), ("at-02", 1, "ffl_at-02")]
    ] * 2


async def test_a_control_plane_without_batches_gets_one_report_per_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    session = FakeSession(lambda _: ACCEPT, batches=False)
    attempts = ["at-01", "at-02", "at-03"]
    with caplog.at_level(logging.INFO, logger="data_plane_agent.agent"):
        reporter = reporter_of(session, tmp_path, attempts)
        await report_all(reporter, attempts)
        await delivered(reporter)

    assert all(len(call) == 1 for call in session.calls)
    assert sorted(r for call in session.calls for r in sent(call)) == sorted(
        (attempt_id, sequence, f"ffl_{attempt_id}")
        for attempt_id in attempts
        for sequence in (1, 2)
    )
    # Each attempt's reports still in order; and the fallback said once.
    for attempt_id in attempts:
        sequences = [
            r.sequence for call in session.calls for r in call if r.attempt_id == attempt_id
        ]
        assert sequences == [1, 2]
    predates = [r for r in caplog.records if "predates ReportStatuses" in r.getMessage()]
    assert len(predates) == 1
