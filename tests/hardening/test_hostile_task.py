"""A hostile task on the local-process executor (issue 13, findings 2 and 3).

The task is untrusted code. It runs under a real `LocalProcessExecutor` (real runtime, real
staging, a uid of its own) next to a victim attempt of another tenant, in a machine laid out as
`fleetflow dev up` lays it out: the blob store with another tenant's upload and bundle, the
control plane's database and admin token, the agent's token file and lease files. The hostile
task tries to read, list and write all of it and to signal the victim's processes; every try
must be refused. Then the ways a task could make the agent act for it: a link planted among its
outputs (the agent would upload, with its rights, what the link points at), and a process left
behind in a session of its own (it would outlive the attempt and share the next one's uid).

Tasks run as users of their own only when the agent can switch users (root); elsewhere these
tests skip loudly, and fail under FLEETFLOW_REQUIRE_TASK_USERS=1 as in CI. Each runs twice: with
task processes forked by the warm task runtime (the default) and exec'd.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from data_plane_agent.executors.local_process import LocalProcessExecutor
from fleetflow.states import AttemptState
from tests.integration.stack import process_alive
from tests.polling import wait_until_async
from tests.tiers import tier_unavailable
from tests.unit.agent.test_local_process_executor import Blobs, next_event, the_code_made_ahead

DEADLINE_SECONDS = 60.0


@pytest.fixture(autouse=True)
def _task_users() -> None:
    if os.geteuid() != 0:
        tier_unavailable(
            "HOSTILE-TASK TESTS SKIPPED - tasks run as users of their own only under an agent "
            "running as root; run the tests as root",
            "FLEETFLOW_REQUIRE_TASK_USERS",
        )


@dataclass
class Machine:
    """What a machine running `fleetflow dev up` holds, and the agent running its tasks."""

    blobs: Blobs
    executor: LocalProcessExecutor
    work_dir: Path
    secrets: dict[str, Path]  # what a task must not read, by name


@pytest.fixture(params=[True, False], ids=["warm", "exec"])
async def machine(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Machine]:
    blobs = Blobs(tmp_path / "blobs")
    state = tmp_path / "control-plane"
    state.mkdir()
    work_dir = tmp_path / "agent"
    (work_dir / "leases").mkdir(parents=True, mode=0o700)
    secrets = {
        "another tenant's upload": Path(
            blobs.store.uri("tenants/beta/uploads/files/" + "1" * 64 + "/secret.txt").removeprefix(
                "file://"
            )
        ),
        "the database": state / "fleetflow.db",
        "the admin token": state / "admin-token",
        "the agent's token file": work_dir / "agent-token",
        "a lease file": work_dir / "leases" / "at-victim.json",
    }
    for path in secrets.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("secret")
    secrets["the agent's token file"].chmod(0o600)
    secrets["a lease file"].chmod(0o600)
    executor = LocalProcessExecutor(work_dir, kill_grace_seconds=1.0, warm_runtime=request.param)
    try:
        yield Machine(blobs, executor, work_dir, secrets)
    finally:
        await executor.shutdown("test over")


async def finished(executor: LocalProcessExecutor, attempt_id: str) -> tuple[AttemptState, str]:
    while True:
        event = await next_event(executor)
        if event.attempt_id == attempt_id and event.state.terminal:
            return event.state, event.message


async def test_a_hostile_task_finds_nothing_of_the_agent_the_control_plane_or_other_tenants(
    machine: Machine, exchange_dir: Path
) -> None:
    blobs, executor = machine.blobs, machine.executor
    # An attempt that ended leaves its bundle's next copy made ahead, for the next attempt.
    warm_up = blobs.assignment("at-warm-up", "add", {"a": 1, "b": 2})
    await executor.launch(warm_up)
    assert (await finished(executor, "at-warm-up"))[0] is AttemptState.SUCCEEDED
    spare = await the_code_made_ahead(executor)
    spares = spare.parent
    victim_pid_file = exchange_dir / "victim.pid"
    victim = blobs.assignment("at-victim", "spawn_and_wait", {"pid_file": str(victim_pid_file)})
    await executor.launch(victim)
    await wait_until_async(
        victim_pid_file.exists, timeout=DEADLINE_SECONDS, message=f"{victim_pid_file} to appear"
    )
    victim_pid = int(victim_pid_file.read_text())
    victim_sandbox = executor.sandbox_dir("at-victim")
    blob_root = blobs.store.root

    targets = {
        "read": [
            *(str(path) for path in machine.secrets.values()),
            blobs.bundle_uri.removeprefix("file://"),
            str(victim_sandbox / "staged" / "inputs.json"),
            str(executor.attempt_dir("at-victim") / "log.txt"),
            f"/proc/{os.getpid()}/environ",  # the agent's
            f"/proc/{victim_pid}/environ",
            str(spare / "stand_in_tasks.py"),
        ],
        "list_dirs": [
            str(blob_root),
            str(machine.work_dir),
            str(victim_sandbox),
            str(victim_sandbox.parent),  # every running attempt's sandbox
            str(spares),
            str(spare),
        ],
        "write": [
            str(blob_root / "tenants" / "beta"),
            str(blob_root),
            str(victim_sandbox),
            str(machine.work_dir),
            str(spares),
            str(spare),  # the next attempt's code
        ],
        "signal_pids": [victim_pid, os.getpid()],
    }
    hostile = blobs.assignment("at-hostile", "probe", targets)
    await executor.launch(hostile)
    state, message = await finished(executor, "at-hostile")
    assert state is AttemptState.SUCCEEDED, message

    found = blobs.outputs(hostile)["o0"]
    task_uid = found.pop("uid")
    assert task_uid not in ("0", str(os.getuid())), "the task ran as the agent's user"
    allowed = {"denied"}
    refused = {attempt: outcome for attempt, outcome in found.items() if outcome in allowed}
    assert refused == found, f"a hostile task got further than it may: {found}"
    assert not list(blob_root.rglob("planted-by-a-task"))
    assert process_alive(victim_pid), "the victim's process was harmed"


async def test_a_hostile_task_cannot_change_the_code_that_later_attempts_run(
    machine: Machine,
) -> None:
    """Its modules are links to the agent's unpacked bundle, read-only and not the task's:
    writing, chmod and chown are refused; replacing one in its own `code/` changes only its
    own directory, and the next attempt imports the bundled module."""
    executor = machine.executor
    tamper = machine.blobs.assignment("at-tamper", "tamper_with_code", {})
    await executor.launch(tamper)
    state, message = await finished(executor, "at-tamper")
    assert state is AttemptState.SUCCEEDED, message
    assert machine.blobs.outputs(tamper)["o0"] == {
        "append to the module": "denied",
        "make the module writable": "denied",
        "take the module": "denied",
        "append to its bytecode": "denied",
        "replace the module": "done",
    }

    after = machine.blobs.assignment("at-after", "add", {"a": 1, "b": 2})
    await executor.launch(after)
    state, message = await finished(executor, "at-after")
    assert state is AttemptState.SUCCEEDED, message
    assert machine.blobs.outputs(after) == {"o0": 3}


async def test_a_link_planted_among_the_outputs_is_not_followed_by_the_agent(
    machine: Machine,
) -> None:
    secret = machine.secrets["a lease file"]
    assignment = machine.blobs.assignment("at-link", "plant_output_link", {"target": str(secret)})
    await machine.executor.launch(assignment)

    state, message = await finished(machine.executor, "at-link")

    assert state is AttemptState.FAILED
    assert "output files/" in message and "stolen.txt" in message
    uploaded = list(machine.blobs.store.root.rglob("stolen.txt"))
    assert uploaded == [], "the agent uploaded what a task's link pointed at"


async def test_a_process_a_task_leaves_behind_dies_with_its_attempt(
    machine: Machine, exchange_dir: Path
) -> None:
    pid_file = exchange_dir / "escaped.pid"
    assignment = machine.blobs.assignment(
        "at-escape", "escape_and_linger", {"pid_file": str(pid_file)}
    )
    await machine.executor.launch(assignment)

    state, message = await finished(machine.executor, "at-escape")

    assert state is AttemptState.SUCCEEDED, message
    escaped = int(pid_file.read_text())
    await wait_until_async(
        lambda: not process_alive(escaped),
        timeout=DEADLINE_SECONDS,
        interval=0.05,
        message="a task's escaped process to end with its attempt",
    )
    # Its sandbox goes right after its end is out.
    await wait_until_async(
        lambda: not machine.executor.sandbox_dir("at-escape").exists(),
        timeout=DEADLINE_SECONDS,
        interval=0.05,
        message="the attempt's sandbox to be removed",
    )
