"""The agent against a fake control plane: a real grpc.aio `AgentService` server in the test.

The real control plane needs a database and Temporal; these tests pin down the agent's side of
the protocol on its own: registration, leasing, status reports with increasing sequence
numbers, each carrying its lease's report secret (on disk only in the agent's lease file, never
in logs or in the task's environment), stop requests, reconnection with buffered reports (across the
agent's own restart), authentication failure and graceful shutdown. Tasks really run
(local-process executor, real code bundle on a local blob store).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from data_plane_agent.agent import Agent
from data_plane_agent.lease_store import LEASES_DIR
from data_plane_agent.report_buffer import (
    REPORTS_DIR,
    CorruptReportError,
    encode_report,
    read_report,
)
from data_plane_agent.settings import AgentSettings
from fleetflow.agent.v1 import agent_pb2, agent_pb2_grpc
from fleetflow.bundle import build_bundle
from fleetflow.storage import LocalBlobStore, read_uri
from tests.polling import wait_until_async

pytestmark = pytest.mark.integration

STAND_IN_BUNDLE = Path(__file__).resolve().parents[1] / "fixtures" / "stand_in_bundle"
TOKEN = "test-cluster-token"
DEADLINE_SECONDS = 60.0
RUNNING = agent_pb2.ATTEMPT_STATE_RUNNING
SUCCEEDED = agent_pb2.ATTEMPT_STATE_SUCCEEDED
FAILED = agent_pb2.ATTEMPT_STATE_FAILED
CANCELLED = agent_pb2.ATTEMPT_STATE_CANCELLED
LOST = agent_pb2.ATTEMPT_STATE_LOST


class FakeAgentService(agent_pb2_grpc.AgentServiceServicer):
    """A fake control plane: checks the token, hands out queued assignments, records calls.

    Like the real one, it refuses a report about a lease it handed out that does not carry the
    lease's report secret (PERMISSION_DENIED); reports about leases it never handed out (made
    to another fake, before a restart) it takes as they come.
    """

    def __init__(self, heartbeat_interval_seconds: int = 1) -> None:
        self.heartbeat_interval_seconds = heartbeat_interval_seconds
        self.registrations: list[agent_pb2.RegisterRequest] = []
        self.heartbeats: list[agent_pb2.HeartbeatRequest] = []
        self.lease_requests: list[agent_pb2.LeaseAttemptsRequest] = []
        self.reports: list[agent_pb2.ReportStatusRequest] = []
        self.stop_attempt_ids: set[str] = set()
        self.refused_reports: list[agent_pb2.ReportStatusRequest] = []
        # Attempt id -> an event its reports wait for before they are answered.
        self.hold: dict[str, asyncio.Event] = {}
        self.arrived: list[agent_pb2.ReportStatusRequest] = []  # as they came, held or not
        self._secrets: dict[tuple[str, int], str] = {}
        self._assignments: asyncio.Queue[agent_pb2.Assignment] = asyncio.Queue()
        self._changed = asyncio.Condition()

    def assign(self, assignment: agent_pb2.Assignment) -> None:
        self.assign_secret(
            assignment.attempt_id, assignment.fencing_token, assignment.report_secret
        )
        self._assignments.put_nowait(assignment)

    def assign_secret(self, attempt_id: str, fencing_token: int, secret: str) -> None:
        """The report secret this fake wants from now on for the lease."""
        self._secrets[(attempt_id, fencing_token)] = secret

    async def _record(self, calls: list[Any], request: Any, context: Any) -> None:
        metadata = dict(context.invocation_metadata() or ())
        if metadata.get("authorization") != f"Bearer {TOKEN}":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown cluster token")
        async with self._changed:
            calls.append(request)
            self._changed.notify_all()

    async def wait_until(self, predicate: Callable[[], bool], what: str) -> None:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(predicate), DEADLINE_SECONDS)
            except TimeoutError:
                raise AssertionError(f"timed out waiting for {what}") from None

    def reports_for(self, attempt_id: str) -> list[agent_pb2.ReportStatusRequest]:
        return [r for r in self.reports if r.attempt_id == attempt_id]

    def has_report(self, attempt_id: str, state: int) -> bool:
        return any(r.state == state for r in self.reports_for(attempt_id))

    async def Register(self, request: Any, context: Any) -> agent_pb2.RegisterResponse:
        await self._record(self.registrations, request, context)
        return agent_pb2.RegisterResponse(
            cluster_name="fake-cluster",
            heartbeat_interval_seconds=self.heartbeat_interval_seconds,
        )

    async def Heartbeat(self, request: Any, context: Any) -> agent_pb2.HeartbeatResponse:
        await self._record(self.heartbeats, request, context)
        return agent_pb2.HeartbeatResponse(stop_attempt_ids=sorted(self.stop_attempt_ids))

    async def LeaseAttempts(self, request: Any, context: Any) -> agent_pb2.LeaseAttemptsResponse:
        await self._record(self.lease_requests, request, context)
        try:
            first = await asyncio.wait_for(self._assignments.get(), request.wait_seconds)
        except TimeoutError:
            return agent_pb2.LeaseAttemptsResponse()
        batch = [first]
        while len(batch) < request.max_attempts and not self._assignments.empty():
            batch.append(self._assignments.get_nowait())
        return agent_pb2.LeaseAttemptsResponse(assignments=batch)

    async def ReportStatus(self, request: Any, context: Any) -> agent_pb2.ReportStatusResponse:
        self.arrived.append(request)
        if request.attempt_id in self.hold:
            await self.hold[request.attempt_id].wait()
        expected = self._secrets.get((request.attempt_id, request.fencing_token))
        if expected is not None and request.report_secret != expected:
            await self._record(self.refused_reports, request, context)
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"report for attempt {request.attempt_id} refused: wrong report secret",
            )
        await self._record(self.reports, request, context)
        return agent_pb2.ReportStatusResponse(accepted=True)


class FakeControlPlaneServer:
    """Serves a `FakeAgentService` on a loopback port; can be stopped and started again."""

    def __init__(self, service: FakeAgentService, port: int = 0) -> None:
        self.service = service
        self.port = port
        self._server: grpc.aio.Server | None = None

    async def start(self) -> int:
        self._server = grpc.aio.server()
        agent_pb2_grpc.add_AgentServiceServicer_to_server(self.service, self._server)
        bound = self._server.add_insecure_port(f"127.0.0.1:{self.port}")
        assert bound, f"could not bind 127.0.0.1:{self.port}"
        self.port = bound
        await self._server.start()
        return bound

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None


@contextlib.asynccontextmanager
async def fake_control_plane(
    service: FakeAgentService, port: int = 0
) -> AsyncIterator[tuple[FakeAgentService, int]]:
    server = FakeControlPlaneServer(service, port)
    bound = await server.start()
    try:
        yield service, bound
    finally:
        await server.stop()


class Blobs:
    def __init__(self, root: Path) -> None:
        self.store = LocalBlobStore(root)
        digest, data = build_bundle(STAND_IN_BUNDLE)
        self.bundle_uri = self.store.put(f"bundles/{digest}.tar.gz", data)

    def assignment(
        self, attempt_id: str, function: str, inputs: dict[str, Any], fencing_token: int = 7
    ) -> agent_pb2.Assignment:
        return agent_pb2.Assignment(
            attempt_id=attempt_id,
            fencing_token=fencing_token,
            execution_id="exec-1",
            node_id="n0",
            tenant="default",
            task_module="stand_in_tasks",
            task_function=function,
            bundle_uri=self.bundle_uri,
            inputs_uri=self.store.put(f"{attempt_id}/inputs.json", json.dumps(inputs).encode()),
            outputs_uri=self.store.uri(f"{attempt_id}/outputs.json"),
            resources=agent_pb2.Resources(cpu=0.5, memory_bytes=1 << 20),
            report_secret=f"ffl_{secrets.token_urlsafe(32)}",
        )


@pytest.fixture
def blobs(tmp_path: Path) -> Blobs:
    return Blobs(tmp_path / "blobs")


def agent_settings(tmp_path: Path, port: int, **overrides: Any) -> AgentSettings:
    values: dict[str, Any] = {
        "control_plane": f"127.0.0.1:{port}",
        "token": TOKEN,
        "work_dir": tmp_path / "agent",
        "max_parallel": 2,
        "lease_wait_seconds": 1,
        "labels": {"zone": "test"},
        "reconnect_initial_backoff_seconds": 0.05,
        "reconnect_max_backoff_seconds": 0.5,
        "kill_grace_seconds": 1.0,
    }
    values.update(overrides)
    return AgentSettings(**values)


@contextlib.asynccontextmanager
async def running_agent(settings: AgentSettings) -> AsyncIterator[Agent]:
    agent = Agent(settings)
    task = asyncio.create_task(agent.run())
    try:
        yield agent
    finally:
        agent.request_stop()
        await asyncio.wait_for(task, DEADLINE_SECONDS)


def states(reports: list[agent_pb2.ReportStatusRequest]) -> list[tuple[int, int]]:
    return [(r.state, r.sequence) for r in reports]


async def test_registers_leases_runs_and_reports(blobs: Blobs, tmp_path: Path) -> None:
    async with fake_control_plane(FakeAgentService()) as (fake, port):
        async with running_agent(agent_settings(tmp_path, port)):
            await fake.wait_until(lambda: bool(fake.registrations), "registration")
            ok = blobs.assignment("att-ok", "add", {"a": 2, "b": 3})
            boom = blobs.assignment("att-boom", "explode", {"reason": "diverged"})
            fake.assign(ok)
            fake.assign(boom)
            await fake.wait_until(
                lambda: (
                    fake.has_report("att-ok", SUCCEEDED) and fake.has_report("att-boom", FAILED)
                ),
                "terminal reports",
            )

    registration = fake.registrations[0]
    assert registration.executors == ["local-process"]
    assert dict(registration.labels) == {"zone": "test"}
    assert registration.agent_version
    assert registration.capacity.cpu_allocatable >= 1
    assert registration.capacity.memory_bytes_allocatable > 0
    assert not registration.capacity.gpus

    assert states(fake.reports_for("att-ok")) == [(RUNNING, 1), (SUCCEEDED, 2)]
    assert {r.fencing_token for r in fake.reports_for("att-ok")} == {7}
    assert {r.report_secret for r in fake.reports_for("att-ok")} == {ok.report_secret}
    assert {r.report_secret for r in fake.reports_for("att-boom")} == {boom.report_secret}
    assert not fake.refused_reports
    assert all(r.observed_at.seconds > 0 for r in fake.reports)
    assert json.loads(read_uri(ok.outputs_uri)) == {"o0": 5}

    assert states(fake.reports_for("att-boom")) == [(RUNNING, 1), (FAILED, 2)]
    failed = fake.reports_for("att-boom")[-1]
    assert failed.message == "ValueError: diverged"
    assert "in explode" in failed.error_traceback

    assert all(0 < r.max_attempts <= 2 for r in fake.lease_requests)
    assert all(r.wait_seconds == 1 for r in fake.lease_requests)


async def test_a_report_slow_to_be_answered_holds_up_no_other_attempts(
    exchange_dir: Path, blobs: Blobs, tmp_path: Path
) -> None:
    """Reports of different attempts go side by side; an attempt's own go one at a time and
    in order (its SUCCEEDED never overtakes its RUNNING)."""
    may_end = exchange_dir / "att-slow-may-end"
    async with fake_control_plane(FakeAgentService()) as (fake, port):
        async with running_agent(agent_settings(tmp_path, port)):
            await fake.wait_until(lambda: bool(fake.registrations), "registration")
            fake.hold["att-slow"] = asyncio.Event()
            inputs = {"path": str(may_end), "deadline_seconds": 120}
            fake.assign(blobs.assignment("att-slow", "wait_for_file", inputs))
            await wait_until_async(
                lambda: any(r.attempt_id == "att-slow" for r in fake.arrived),
                timeout=DEADLINE_SECONDS,
                message="att-slow's first report",
            )
            may_end.touch()  # it ends while its RUNNING report is still unanswered
            fake.assign(blobs.assignment("att-fast", "add", {"a": 2, "b": 2}))

            await fake.wait_until(lambda: fake.has_report("att-fast", SUCCEEDED), "att-fast")

            assert [r.state for r in fake.arrived if r.attempt_id == "att-slow"] == [RUNNING]
            fake.hold["att-slow"].set()
            await fake.wait_until(lambda: fake.has_report("att-slow", SUCCEEDED), "att-slow")

    assert states(fake.reports_for("att-slow")) == [(RUNNING, 1), (SUCCEEDED, 2)]
    assert states(fake.reports_for("att-fast")) == [(RUNNING, 1), (SUCCEEDED, 2)]


async def test_stop_attempt_ids_kill_the_running_attempt(
    exchange_dir: Path, blobs: Blobs, tmp_path: Path
) -> None:
    async with fake_control_plane(FakeAgentService()) as (fake, port):
        async with running_agent(agent_settings(tmp_path, port)):
            inputs = {"path": str(exchange_dir / "never"), "deadline_seconds": 120}
            fake.assign(blobs.assignment("att-stop", "wait_for_file", inputs))
            await fake.wait_until(
                lambda: any("att-stop" in h.running_attempt_ids for h in fake.heartbeats),
                "a heartbeat listing the running attempt",
            )
            fake.stop_attempt_ids.add("att-stop")
            await fake.wait_until(lambda: fake.has_report("att-stop", CANCELLED), "CANCELLED")

    assert states(fake.reports_for("att-stop")) == [(RUNNING, 1), (CANCELLED, 2)]
    assert fake.reports_for("att-stop")[-1].message == "stopped by the control plane"


async def test_leases_no_more_than_max_parallel(
    exchange_dir: Path, blobs: Blobs, tmp_path: Path
) -> None:
    release = exchange_dir / "release"
    async with fake_control_plane(FakeAgentService()) as (fake, port):
        async with running_agent(agent_settings(tmp_path, port, max_parallel=1)):
            hold = {"path": str(release), "deadline_seconds": 120}
            fake.assign(blobs.assignment("att-hold", "wait_for_file", hold))
            fake.assign(blobs.assignment("att-next", "add", {"a": 1, "b": 1}))
            await fake.wait_until(lambda: fake.has_report("att-hold", RUNNING), "RUNNING")
            seen = len(fake.heartbeats)
            await fake.wait_until(lambda: len(fake.heartbeats) >= seen + 2, "two heartbeats")

            # The only slot is taken: the second attempt is still waiting to be leased.
            assert not fake.reports_for("att-next")
            busy = fake.heartbeats[-1]
            assert list(busy.running_attempt_ids) == ["att-hold"]
            assert busy.capacity.cpu_in_use == 0.5

            release.touch()
            await fake.wait_until(lambda: fake.has_report("att-next", SUCCEEDED), "att-next")

    assert all(r.max_attempts == 1 for r in fake.lease_requests)
    assert states(fake.reports_for("att-hold")) == [(RUNNING, 1), (SUCCEEDED, 2)]


async def test_reconnects_and_delivers_reports_made_while_away(
    exchange_dir: Path, blobs: Blobs, tmp_path: Path
) -> None:
    release = exchange_dir / "release"
    inputs = {"path": str(release), "deadline_seconds": 120}
    first = FakeControlPlaneServer(FakeAgentService())
    port = await first.start()
    second = FakeControlPlaneServer(FakeAgentService(), port)
    away = blobs.assignment("att-away", "wait_for_file", inputs)
    try:
        async with running_agent(agent_settings(tmp_path, port)):
            first.service.assign(away)
            await first.service.wait_until(
                lambda: first.service.has_report("att-away", RUNNING), "RUNNING"
            )
            await first.stop()

            # The control plane is away while the attempt finishes.
            release.touch()
            outputs_uri = blobs.store.uri("att-away/outputs.json")
            await wait_for(lambda: blobs.store.exists(outputs_uri), "the task's outputs")

            await second.start()
            await second.service.wait_until(
                lambda: second.service.has_report("att-away", SUCCEEDED), "the buffered report"
            )
    finally:
        await first.stop()
        await second.stop()

    assert states(first.service.reports_for("att-away")) == [(RUNNING, 1)]
    assert states(second.service.reports_for("att-away")) == [(SUCCEEDED, 2)]
    assert second.service.registrations, "the agent registered again after reconnecting"
    # The control plane restarted, the agent did not: it still holds the lease's secret.
    assert second.service.reports_for("att-away")[0].report_secret == away.report_secret


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    await wait_until_async(predicate, timeout=DEADLINE_SECONDS, message=what)


def agent_process_env(tmp_path: Path, port: int, token: str) -> dict[str, str]:
    return {
        **os.environ,
        "FLEETFLOW_AGENT_TOKEN": token,
        "FLEETFLOW_AGENT_CONTROL_PLANE": f"127.0.0.1:{port}",
        "FLEETFLOW_AGENT_WORK_DIR": str(tmp_path / "agent"),
        "FLEETFLOW_AGENT_LEASE_WAIT_SECONDS": "1",
        "FLEETFLOW_AGENT_KILL_GRACE_SECONDS": "1",
    }


async def start_agent_process(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with open(log, "wb") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "data_plane_agent",
            "run",
            env=env,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )


async def test_rejected_token_exits_with_a_clear_error(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    async with fake_control_plane(FakeAgentService()) as (fake, port):
        process = await start_agent_process(agent_process_env(tmp_path, port, "wrong"), log)
        returncode = await asyncio.wait_for(process.wait(), DEADLINE_SECONDS)

    output = log.read_text()
    assert returncode == 1, output
    assert "rejected this agent's cluster token (UNAUTHENTICATED" in output
    assert "Traceback" not in output
    assert not fake.registrations


async def test_sigterm_gives_up_running_attempts_as_lost_and_exits(
    exchange_dir: Path, blobs: Blobs, tmp_path: Path
) -> None:
    """A shutting-down agent is not the task's failure: it reports LOST, so the control plane
    runs the attempt again elsewhere without using the task's retries."""
    log = tmp_path / "agent.log"
    inputs = {"path": str(exchange_dir / "never"), "deadline_seconds": 120}
    async with fake_control_plane(FakeAgentService()) as (fake, port):
        process = await start_agent_process(agent_process_env(tmp_path, port, TOKEN), log)
        try:
            fake.assign(blobs.assignment("att-term", "wait_for_file", inputs))
            await fake.wait_until(lambda: fake.has_report("att-term", RUNNING), "RUNNING")

            process.send_signal(signal.SIGTERM)

            returncode = await asyncio.wait_for(process.wait(), DEADLINE_SECONDS)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    output = log.read_text()
    assert returncode == 0, output
    assert states(fake.reports_for("att-term")) == [(RUNNING, 1), (LOST, 2)]
    assert fake.reports_for("att-term")[-1].message == "agent shut down"
    assert "agent stopped" in output


def files_containing(root: Path, secret: str) -> list[Path]:
    """The files under `root` whose bytes contain `secret`, or it without its prefix."""
    found = []
    for path in root.rglob("*"):
        with contextlib.suppress(OSError):  # removed meanwhile, or not a regular file
            if path.is_file() and secret[4:].encode() in path.read_bytes():
                found.append(path)
    return found


def file_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


async def test_the_report_secret_is_on_disk_only_in_its_lease_file(
    exchange_dir: Path, blobs: Blobs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The lease's secret goes out with each report and is kept nowhere but in memory and in
    `<work_dir>/leases/<attempt id>.json` (mode 0600, in a 0700 directory) until the attempt's
    last report is settled: not in the task's environment or arguments, its attempt directory,
    the buffered reports, or a log record. A report the control plane refuses
    (PERMISSION_DENIED) is not sent again."""
    caplog.set_level(logging.DEBUG)
    release = exchange_dir / "release"
    work_dir = tmp_path / "agent"
    leases = work_dir / LEASES_DIR
    async with fake_control_plane(FakeAgentService()) as (fake, port):
        async with running_agent(agent_settings(tmp_path, port)) as agent:
            looked = blobs.assignment("at-e0e0", "own_environment", {})
            fake.assign(looked)
            inputs = {"path": str(release), "deadline_seconds": 120}
            held = blobs.assignment("at-4e1d", "wait_for_file", inputs)
            fake.assign(held)
            await fake.wait_until(
                lambda: (
                    fake.has_report("at-e0e0", SUCCEEDED) and fake.has_report("at-4e1d", RUNNING)
                ),
                "the reports",
            )
            # Written in the background once the task started; before any final report.
            await wait_for(lambda: (leases / "at-4e1d.json").exists(), "the lease file")
            during = files_containing(work_dir, held.report_secret)
            modes = (file_mode(leases), file_mode(leases / "at-4e1d.json"))
            stored = json.loads((leases / "at-4e1d.json").read_text())
            # The control plane now wants another secret for at-4e1d: its final report is
            # refused, once, and the agent moves on.
            fake.assign_secret("at-4e1d", held.fencing_token, "ffl_another-secret-entirely")
            release.touch()
            await fake.wait_until(lambda: bool(fake.refused_reports), "the refused report")
            await wait_for(lambda: not agent._reporter.report_secrets, "the secrets forgotten")
            await wait_for(lambda: not any(leases.iterdir()), "the lease files deleted")

    seen_by_task = json.loads(read_uri(looked.outputs_uri))["o0"]
    assert "PATH=" in seen_by_task  # it did see its environment
    assert looked.report_secret[4:] not in seen_by_task
    assert {r.report_secret for r in fake.reports_for("at-e0e0")} == {looked.report_secret}
    assert during == [leases / "at-4e1d.json"]
    assert modes == (0o700, 0o600)
    assert stored == {
        "attempt_id": "at-4e1d",
        "fencing_token": held.fencing_token,
        "report_secret": held.report_secret,
    }
    for secret in (looked.report_secret, held.report_secret):
        assert files_containing(work_dir, secret) == []  # settled: deleted
        assert secret[4:] not in caplog.text
    assert [(r.attempt_id, r.state) for r in fake.refused_reports] == [("at-4e1d", SUCCEEDED)]
    assert "refused its SUCCEEDED report" in caplog.text


async def test_an_attempt_id_that_cannot_name_a_file_keeps_its_secret_in_memory(
    blobs: Blobs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Only an id of the control plane's form (`at-<hex>`) names a lease file: another one
    still reports with its secret, which is then written nowhere."""
    caplog.set_level(logging.DEBUG)
    odd = blobs.assignment("att-odd", "add", {"a": 1, "b": 2})
    async with fake_control_plane(FakeAgentService()) as (fake, port):
        async with running_agent(agent_settings(tmp_path, port)):
            fake.assign(odd)
            await fake.wait_until(lambda: fake.has_report("att-odd", SUCCEEDED), "the reports")

    assert {r.report_secret for r in fake.reports_for("att-odd")} == {odd.report_secret}
    assert list((tmp_path / "agent" / LEASES_DIR).iterdir()) == []
    assert "kept in memory only" in caplog.text
    assert odd.report_secret[4:] not in caplog.text


def buffered_reports(work_dir: Path) -> list[agent_pb2.ReportStatusRequest]:
    """The reports an agent has on disk waiting for delivery (read only, oldest first)."""
    reports = []
    for path in sorted((work_dir / REPORTS_DIR).glob("*.report")):
        with contextlib.suppress(CorruptReportError):  # delivered and removed meanwhile
            reports.append(read_report(path))
    return reports


async def test_a_restarted_agent_delivers_the_report_its_killed_predecessor_buffered(
    exchange_dir: Path, blobs: Blobs, tmp_path: Path
) -> None:
    """Control plane down when the task finishes, agent SIGKILLed: the next agent process on
    the same work dir holds the attempt when it registers and delivers the terminal report.

    The report on disk has no report secret; the lease file beside it has, and the new process
    loads it: the report is replayed with the lease's secret, which the control plane (this
    one requires it too) accepts, and the lease file is deleted once it is delivered."""
    work_dir = tmp_path / "agent"
    release = exchange_dir / "release"
    inputs = {"path": str(release), "deadline_seconds": 120}
    first = FakeControlPlaneServer(FakeAgentService())
    port = await first.start()
    first_process = await start_agent_process(
        agent_process_env(tmp_path, port, TOKEN), tmp_path / "first-agent.log"
    )
    second_process: asyncio.subprocess.Process | None = None
    second = FakeControlPlaneServer(FakeAgentService())
    try:
        kept = blobs.assignment("at-cee9", "wait_for_file", inputs, 11)
        first.service.assign(kept)
        await wait_for(
            lambda: first.service.has_report("at-cee9", RUNNING) and not buffered_reports(work_dir),
            "the RUNNING report, delivered and no longer buffered",
        )
        await first.stop()

        # The control plane is away while the attempt finishes; then the agent dies hard.
        release.touch()
        await wait_for(
            lambda: [r.state for r in buffered_reports(work_dir)] == [SUCCEEDED],
            "the SUCCEEDED report on disk",
        )
        assert files_containing(work_dir, kept.report_secret) == [
            work_dir / LEASES_DIR / "at-cee9.json"
        ]
        assert [r.report_secret for r in buffered_reports(work_dir)] == [""]
        first_process.kill()
        await asyncio.wait_for(first_process.wait(), DEADLINE_SECONDS)

        # The same control plane, restarted: it wants the lease's secret on the report.
        second.service.assign_secret("at-cee9", 11, kept.report_secret)
        port = await second.start()
        second_process = await start_agent_process(
            agent_process_env(tmp_path, port, TOKEN), tmp_path / "second-agent.log"
        )
        await second.service.wait_until(
            lambda: second.service.has_report("at-cee9", SUCCEEDED), "the replayed report"
        )
        await wait_for(lambda: not buffered_reports(work_dir), "an empty report buffer")
        await wait_for(
            lambda: not (work_dir / LEASES_DIR / "at-cee9.json").exists(), "the lease file deleted"
        )
        second_process.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(second_process.wait(), DEADLINE_SECONDS)
    finally:
        for process in (first_process, second_process):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
        await first.stop()
        await second.stop()

    assert returncode == 0, (tmp_path / "second-agent.log").read_text()
    assert states(first.service.reports_for("at-cee9")) == [(RUNNING, 1)]
    assert first.service.reports_for("at-cee9")[0].report_secret == kept.report_secret
    registration = second.service.registrations[0]
    assert [(r.attempt_id, r.fencing_token) for r in registration.running] == [("at-cee9", 11)]
    replayed = second.service.reports_for("at-cee9")
    assert states(replayed) == [(SUCCEEDED, 2)]
    assert replayed[0].fencing_token == 11
    assert replayed[0].report_secret == kept.report_secret
    assert not second.service.refused_reports
    assert files_containing(work_dir, kept.report_secret) == []
    for log in ("first-agent.log", "second-agent.log"):
        assert kept.report_secret not in (tmp_path / log).read_text()
    assert json.loads(read_uri(blobs.store.uri("at-cee9/outputs.json"))) == {"o0": "released"}


async def test_a_restarted_agent_holds_only_attempts_with_a_final_report_pending(
    tmp_path: Path,
) -> None:
    """An attempt with only its RUNNING report left behind died with the previous agent: the
    new one does not claim it (the control plane marks it lost at once), but still replays it.
    (An agent writes only final reports now; one of an earlier version left RUNNING ones too.)"""
    left_behind = tmp_path / "agent" / REPORTS_DIR
    left_behind.mkdir(parents=True)
    for index, (attempt_id, state, sequence, token) in enumerate(
        [("att-orphan", RUNNING, 1, 3), ("att-done", RUNNING, 1, 4), ("att-done", FAILED, 2, 4)]
    ):
        request = agent_pb2.ReportStatusRequest(
            attempt_id=attempt_id, state=state, sequence=sequence, fencing_token=token
        )
        (left_behind / f"{index:020d}.report").write_bytes(encode_report(request))

    async with fake_control_plane(FakeAgentService()) as (fake, port):
        async with running_agent(agent_settings(tmp_path, port)):
            await fake.wait_until(lambda: len(fake.reports) == 3, "the three replayed reports")

    assert [(r.attempt_id, r.fencing_token) for r in fake.registrations[0].running] == [
        ("att-done", 4)
    ]
    assert [(r.attempt_id, r.state, r.sequence) for r in fake.reports] == [
        ("att-orphan", RUNNING, 1),
        ("att-done", RUNNING, 1),
        ("att-done", FAILED, 2),
    ]
    assert not buffered_reports(tmp_path / "agent")
