"""Crash consistency: `kill -9` of the control plane during heavy submission, and of the agent
during a batch of executions, loses nothing and runs nothing twice from the user's point of view.

The control-plane test submits continuously from a thread, every request with an
`Idempotency-Key` and resent with the same key until it is acknowledged, while the control
plane (with its Temporal worker) is SIGKILLed and started again. Afterwards every acknowledged
execution exists once, succeeds with the right output, has exactly one SUCCEEDED attempt per
node, and every task body ran exactly once (the workflow's tasks leave a marker line per run).

The agent test SIGKILLs the agent repeatedly while a batch runs. Tasks die with their agent, so
an attempt killed mid-run is LOST and runs again as a system retry: there a body may run more
than once, never more often than its node has attempts, and exactly one attempt per node
succeeds with the right output. The same holds for a map node run as chunk workflows (the
test stacks chunk maps of more than 4 elements), each element's end told to its chunk.

FLEETFLOW_HARDENING_ROUNDS sets the number of kills; without it, `make test` kills a few times
and `make test-hardening` (FLEETFLOW_HARDENING_EXAMPLES above the fast 10) more.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_plane import processes
from fleetflow.api_models.executions import ExecutionPublic
from fleetflow.bundle import build_bundle
from fleetflow.forkserver import TASK_PROCESS_NAME
from fleetflow.loader import load_workflow
from tests.integration.stack import (
    FLEETFLOW,
    Stack,
    TemporalServer,
    process_alive,
    sigkill,
    spawn_control_plane,
    start_agent,
    start_stack,
    start_temporal,
    wait_ready,
)
from tests.polling import wait_until

pytestmark = [pytest.mark.hardening, pytest.mark.integration]

WORKFLOWS = Path(__file__).parent / "workflows" / "crash.py"
IDEMPOTENCY = "Idempotency-Key"
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}
# The agent test kills a step's task at most this often (a step may be lost 5 times).
KILLS_PER_STEP = 3


def full_run() -> bool:
    """Under `make test-hardening`: FLEETFLOW_HARDENING_EXAMPLES above the fast budget of 10."""
    examples = os.environ.get("FLEETFLOW_HARDENING_EXAMPLES")
    return bool(examples) and int(examples or 0) > 10


def kills(fast: int, full: int) -> int:
    """How many times a test kills: FLEETFLOW_HARDENING_ROUNDS when set, else `full` under
    `make test-hardening` and `fast` under `make test`."""
    rounds = os.environ.get("FLEETFLOW_HARDENING_ROUNDS")
    return max(1, int(rounds)) if rounds else full if full_run() else fast


@pytest.fixture(scope="module")
def crash_temporal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalServer]:
    server = start_temporal(tmp_path_factory.mktemp("crash-temporal"))
    yield server
    processes.stop(server.process)


# Under `make test-hardening` PostgreSQL runs with the worker in its own process, as in
# production, killed on its own too; SQLite covers the worker inside the control plane. Both
# places of the worker on PostgreSQL would only repeat the database's half (and cost minutes).
STACKS = [
    "sqlite",
    pytest.param("postgres-split-worker" if full_run() else "postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(scope="module", params=STACKS)
def crash_stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    crash_temporal: TemporalServer,
) -> Iterator[Stack]:
    """The control plane (with its Temporal worker, or beside it with `split-worker`) and one
    local agent."""
    home = tmp_path_factory.mktemp(f"crash-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{home / 'fleetflow.db'}"
    else:
        url = request.getfixturevalue("postgres_database_factory")()
    running = start_stack(home, url, crash_temporal, split=request.param.endswith("split-worker"))
    yield running
    running.stop()


@dataclass
class Registered:
    name: str
    version: str
    marker_dir: Path
    workflow_fn: Any  # converts the inputs to literals

    def inputs(self, tag: str, seconds: float) -> dict[str, Any]:
        values = {"tag": tag, "seconds": seconds, "marker_dir": str(self.marker_dir)}
        return dict(self.workflow_fn.inputs_to_literals(values))


def register(stack: Stack, marker_dir: Path, workflow: str = "two_steps") -> Registered:
    wf, root = load_workflow(WORKFLOWS, workflow)
    digest, data = build_bundle(root)
    with stack.client() as client:
        client.workflows.upload_bundle(digest, data)
        version = client.workflows.register_spec(wf.spec, digest).version
    marker_dir.mkdir()
    marker_dir.chmod(0o1777)  # its tasks run as users of their own
    return Registered(wf.spec.name, version, marker_dir, wf)


def kill9(stack: Stack, round_: int) -> str:
    """SIGKILL (no handler runs) the control plane, with its Temporal worker when they share
    a process; with the worker apart, the API server, the worker, then both, in turn. Start
    what was killed again on the same ports and database; what it was."""
    victims = ["control-plane"]
    if stack.split:
        victims = [["control-plane"], ["worker"], ["control-plane", "worker"]][round_ % 3]
    for name in victims:
        sigkill(stack.children.pop(name))
    if "worker" in victims:
        stack.children["worker"] = processes.spawn(
            [FLEETFLOW, "control-plane", "worker"],
            log_file=stack.home / "worker.log",
            env=stack.env,
        )
    if "control-plane" in victims:
        stack.children["control-plane"] = spawn_control_plane(stack, worker=not stack.split)
        wait_ready(stack, timeout=90)
    return " and ".join(victims)


@dataclass
class Submitter:
    """Submits executions from `threads` threads, one after another in each, every request
    with its own `Idempotency-Key`, resent with the same key until it is acknowledged (a 2xx
    answer carrying the execution). Raw HTTP, so that every resend is counted."""

    stack: Stack
    workflow: Registered
    prefix: str
    seconds: float
    threads: int = 4
    pause: float = 0.05
    acknowledged: dict[str, str] = field(default_factory=dict)  # key -> execution id
    resent: set[str] = field(default_factory=set)  # keys whose request was sent again
    replayed: set[str] = field(default_factory=set)  # answered Idempotent-Replayed
    failure: BaseException | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)
    _numbers: Iterator[int] = field(default_factory=itertools.count)
    _running: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for number in range(self.threads):
            thread = threading.Thread(target=self._run, name=f"submitter-{number}", daemon=True)
            thread.start()
            self._running.append(thread)

    def stop(self) -> None:
        """Stop after the submissions under way are acknowledged."""
        self._stopping.set()
        for thread in self._running:
            thread.join(timeout=180)
            assert not thread.is_alive(), "a submitter did not finish"
        if self.failure is not None:
            raise self.failure

    def wait_for_more(self, count: int) -> None:
        """Until `count` more submissions are acknowledged (or a submitter failed)."""
        target = len(self.acknowledged) + count

        def more() -> bool:
            return len(self.acknowledged) >= target or self.failure is not None

        self.stack.wait_for(more, f"{count} more acknowledged submissions", timeout=90)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.stack.admin_token}"}
        try:
            with httpx.Client(base_url=self.stack.api_url, headers=headers, timeout=10) as http:
                while not self._stopping.is_set() and self.failure is None:
                    self._submit(http, f"{self.prefix}-{next(self._numbers):04d}")
                    time.sleep(self.pause)  # pacing the load, not a synchronisation
        except BaseException as exc:  # reported by stop()
            self.failure = exc

    def _submit(self, http: httpx.Client, key: str) -> None:
        body = {
            "workflow": self.workflow.name,
            "version": self.workflow.version,
            "inputs": self.workflow.inputs(key, self.seconds),
        }

        def acknowledged() -> bool:
            try:
                answer = http.post("/api/v1/executions", json=body, headers={IDEMPOTENCY: key})
            except httpx.TransportError:
                pass  # refused, reset, or no answer: the control plane died or restarts
            else:
                if answer.status_code in (200, 201):
                    if answer.headers.get("Idempotent-Replayed") == "true":
                        self.replayed.add(key)
                    self.acknowledged[key] = str(answer.json()["id"])
                    return True
                assert answer.status_code >= 500, (key, answer.status_code, answer.text)
            self.resent.add(key)  # the control plane is restarting: back off, send it again
            return False

        wait_until(acknowledged, timeout=120, interval=0.2, message=f"{key} to be acknowledged")


def wait_until_terminal(stack: Stack, ids: list[str], timeout: float) -> dict[str, ExecutionPublic]:
    """Every execution of `ids` as the API shows it once all are terminal."""
    finished: dict[str, ExecutionPublic] = {}
    with stack.client() as client:

        def unfinished() -> list[str]:
            for execution_id in ids:
                if execution_id not in finished:
                    execution = client.executions.get(execution_id)
                    if execution.status in TERMINAL:
                        finished[execution_id] = execution
            return sorted(set(ids) - set(finished))

        wait_until(
            unfinished,
            timeout=timeout,
            interval=0.5,
            message="every execution to finish",
            until=lambda waiting: not waiting,
            details=stack.logs,
        )
    return finished


def all_executions(stack: Stack) -> list[dict[str, Any]]:
    """Every execution of the stack's default tenant, through the API's pages."""
    found: list[dict[str, Any]] = []
    with stack.client() as client:
        while True:
            params = {"limit": 200, "offset": len(found)}
            page = client.transport.request("GET", "/api/v1/executions", params=params).json()
            items = page["items"] if isinstance(page, dict) else page
            found += items
            if len(items) < 200:
                return found


def runs_of(marker_dir: Path) -> Counter[tuple[str, int]]:
    """(tag, step index) -> how many times that step's body started."""
    counted: Counter[tuple[str, int]] = Counter()
    for path in marker_dir.glob("*.run"):
        tag, index, _, _ = path.name.rsplit(".", 3)
        counted[(tag, int(index))] += 1
    return counted


def attempts_by_step(execution: ExecutionPublic) -> dict[int, Counter[str]]:
    """Step index (1, 2: the nodes in order) -> how many of its attempts ended in each state."""
    found: dict[str, Counter[str]] = {}
    for attempt in execution.attempts:
        found.setdefault(attempt.node_id, Counter())[attempt.status] += 1
    return {index: found[node] for index, node in enumerate(sorted(found), start=1)}


def failure_report(key: str, execution: ExecutionPublic, stack: Stack) -> str:
    """Why an execution did not succeed: its error and attempts first (a long repr would cut
    them off), then the stack's logs."""
    attempts = "\n".join(
        f"  {a.node_id}[{a.map_index}] #{a.attempt_number} {a.status} on {a.cluster}: "
        f"{a.error_message}"
        for a in execution.attempts
    )
    return f"{key} {execution.id} {execution.status}: {execution.error}\n{attempts}\n{stack.logs()}"


def check_outcome(
    stack: Stack, workflow: Registered, acknowledged: dict[str, str], timeout: float
) -> tuple[dict[str, ExecutionPublic], Counter[tuple[str, int]]]:
    """Every acknowledged execution succeeded with its output, one SUCCEEDED attempt per node;
    the executions and task runs as found."""
    finished = wait_until_terminal(stack, list(acknowledged.values()), timeout)
    for key, execution_id in acknowledged.items():
        execution = finished[execution_id]
        assert execution.status == "SUCCEEDED", failure_report(key, execution, stack)
        assert execution.outputs == {"o0": f"{key}>1>2"}, (key, execution.outputs)
        steps = attempts_by_step(execution)
        assert len(steps) == 2, (key, execution.attempts)
        for index, statuses in steps.items():
            assert statuses["SUCCEEDED"] == 1, (key, index, statuses)
            assert set(statuses) <= {"SUCCEEDED", "LOST"}, (key, index, statuses)
    return finished, runs_of(workflow.marker_dir)


def test_killing_the_control_plane_during_submission_loses_and_repeats_nothing(
    exchange_dir: Path, crash_stack: Stack, tmp_path: Path
) -> None:
    stack, rounds = crash_stack, kills(fast=2, full=5)
    workflow = register(stack, exchange_dir / "markers")
    submitter = Submitter(stack, workflow, prefix=f"cp-{tmp_path.name}", seconds=0.2)
    submitter.start()
    killed: list[str] = []
    try:
        for round_ in range(rounds):
            # Kill with submissions and attempts in flight: a few more acknowledged first.
            submitter.wait_for_more(4)
            killed.append(kill9(stack, round_))
        submitter.wait_for_more(3)
    finally:
        submitter.stop()

    acknowledged = submitter.acknowledged
    finished, runs = check_outcome(stack, workflow, acknowledged, timeout=240)
    # Nothing beyond what was acknowledged: resent requests created no second execution.
    mine = [
        e
        for e in all_executions(stack)
        if e["inputs"].get("marker_dir") == str(workflow.marker_dir)
    ]
    assert sorted(e["id"] for e in mine) == sorted(acknowledged.values())
    # Each task body ran exactly once. An attempt may still be LOST: a lease answer the killed
    # control plane committed but never sent is given back at the agent's next heartbeat
    # and runs again, but its body had not started, so it is never counted twice here.
    assert runs == Counter({(key, index): 1 for key in acknowledged for index in (1, 2)}), {
        k: v for k, v in runs.items() if v != 1
    }
    lost = sum(s["LOST"] for e in finished.values() for s in attempts_by_step(e).values())
    slowest = max(seconds(e.created_at, e.finished_at) for e in finished.values())
    print(  # noqa: T201 - the figures docs/reliability.md quotes (pytest -s)
        f"\ncontrol plane: {len(acknowledged)} executions acknowledged, SIGKILLs {killed}, "
        f"{len(submitter.resent)} resent ({len(submitter.replayed)} of them created before "
        "their answer was lost), lost 0, duplicates 0, task runs "
        f"{sum(runs.values())} for {2 * len(acknowledged)} tasks, LOST attempts {lost}, "
        f"slowest execution {slowest:.1f} s"
    )


def test_killing_the_agent_repeatedly_completes_every_execution_once(
    exchange_dir: Path, crash_stack: Stack, tmp_path: Path
) -> None:
    stack, rounds = crash_stack, kills(fast=3, full=8)
    workflow = register(stack, exchange_dir / "markers")
    acknowledged: dict[str, str] = {}
    with stack.client() as client:
        for number in range(4 + 3 * rounds):
            key = f"agent-{tmp_path.name}-{number:03d}"
            created = client.executions.create(
                workflow.name,
                workflow.inputs(key, 1.0),
                version=workflow.version,
                idempotency_key=key,
            )
            acknowledged[key] = str(created.id)

    kill_the_agent_while_tasks_run(stack, workflow.marker_dir, rounds)

    finished, runs = check_outcome(stack, workflow, acknowledged, timeout=240)
    reruns = 0
    for key, execution_id in acknowledged.items():
        for index, statuses in attempts_by_step(finished[execution_id]).items():
            # A body runs at least once and at most once per attempt of its node: every run
            # beyond the first is a system retry of a LOST attempt.
            ran = runs[(key, index)]
            assert 1 <= ran <= sum(statuses.values()), (key, index, ran, statuses)
            reruns += ran - 1
    lost = sum(s["LOST"] for e in finished.values() for s in attempts_by_step(e).values())
    assert lost >= reruns
    print(  # noqa: T201 - the figures docs/reliability.md quotes (pytest -s)
        f"\nagent: {len(acknowledged)} executions, {rounds} SIGKILLs, lost 0, one SUCCEEDED "
        f"attempt per task; LOST attempts (system retries) {lost}, task bodies run again {reruns}"
    )


def test_killing_the_agent_during_a_chunked_map_runs_every_element_once(
    exchange_dir: Path, crash_stack: Stack, tmp_path: Path
) -> None:
    stack, rounds = crash_stack, kills(fast=2, full=5)
    workflow = register(stack, exchange_dir / "markers", "fan_out")
    key, elements = f"map-{tmp_path.name}", 14  # chunks of 4, 4, 4 and 2 elements
    inputs = {"tag": key, "n": elements, "seconds": 1.0, "marker_dir": str(workflow.marker_dir)}
    with stack.client() as client:
        execution_id = str(
            client.executions.create(
                workflow.name,
                dict(workflow.workflow_fn.inputs_to_literals(inputs)),
                version=workflow.version,
            ).id
        )
    kill_the_agent_while_tasks_run(stack, workflow.marker_dir, rounds)

    execution = wait_until_terminal(stack, [execution_id], timeout=240)[execution_id]
    assert execution.status == "SUCCEEDED", failure_report(key, execution, stack)
    assert execution.outputs == {"o0": [f"{key}>{i}" for i in range(elements)]}
    runs = runs_of(workflow.marker_dir)
    by_element: dict[int, Counter[str]] = {}
    for attempt in execution.attempts:
        if attempt.map_index is not None:
            by_element.setdefault(attempt.map_index, Counter())[attempt.status] += 1
    assert sorted(by_element) == list(range(elements))
    lost = 0
    for index, statuses in by_element.items():
        assert statuses["SUCCEEDED"] == 1 and set(statuses) <= {"SUCCEEDED", "LOST"}, statuses
        assert 1 <= runs[(key, index)] <= sum(statuses.values()), (index, runs, statuses)
        lost += statuses["LOST"]
    assert lost >= 1, "no element was killed: the kills missed the map"
    print(  # noqa: T201 - the figures docs/reliability.md quotes (pytest -s)
        f"\nchunked map: {elements} elements in {-(-elements // 4)} chunks, {rounds} agent "
        f"SIGKILLs, one SUCCEEDED attempt per element; LOST attempts (system retries) {lost}"
    )


def kill_the_agent_while_tasks_run(stack: Stack, marker_dir: Path, rounds: int) -> None:
    """SIGKILL the agent `rounds` times, each time while a task body runs (one that started
    since the last restart), and start it again once its tasks have died with it."""

    def tasks_running() -> list[int]:
        return [pid for pid in task_pids(marker_dir) if is_task_process(pid)]

    def killable() -> list[int]:
        """Running tasks whose step has not been killed often: once the batch thins out, the
        only task running may be one step's retry, and killing it every round would exhaust
        its system retries (MAX_SYSTEM_RETRIES), which is the platform's limit, not a loss."""
        runs = runs_of(marker_dir)
        steps = steps_of(marker_dir)
        return [
            pid
            for pid in tasks_running()
            if pid in steps and runs[steps[pid]] <= KILLS_PER_STEP  # a new one: next poll
        ]

    for _ in range(rounds):
        stack.wait_for(killable, "a task to run", timeout=90)
        sigkill(stack.children.pop("agent"))
        stack.wait_for(lambda: not tasks_running(), "the tasks to die with the agent", 30)
        stack.children["agent"] = start_agent(stack)


def seconds(start: datetime, end: datetime | None) -> float:
    """From one API timestamp to another."""
    assert end is not None
    return (end - start).total_seconds()


def steps_of(marker_dir: Path) -> dict[int, tuple[str, int]]:
    """Task pid -> the (tag, step index) it ran."""
    steps = {}
    for path in marker_dir.glob("*.run"):
        tag, index, pid, _ = path.name.rsplit(".", 3)
        steps[int(pid)] = (tag, int(index))
    return steps


def task_pids(marker_dir: Path) -> list[int]:
    """Every task process that has run (the markers name their pids)."""
    return [int(path.name.rsplit(".", 2)[1]) for path in marker_dir.glob("*.run")]


def is_task_process(pid: int) -> bool:
    """`pid` runs a task still (and is not another process that got its number since)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False
    started = b"fleetflow.runtime" in command or name == TASK_PROCESS_NAME  # exec'd or forked
    return process_alive(pid) and started
