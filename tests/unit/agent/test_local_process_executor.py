"""The local-process executor, running real `fleetflow.runtime` child processes: forked by
the warm task runtime, and exec'd (`warm_runtime=False`), each test on both."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from data_plane_agent.attempts import AttemptEvent, TaskAssignment, TaskSecret
from data_plane_agent.executors.local_process import SPARE_CODE_DIR, LocalProcessExecutor
from fleetflow.bundle import build_bundle
from fleetflow.states import AttemptState
from fleetflow.storage import LocalBlobStore, read_uri
from tests.polling import wait_until_async

STAND_IN_BUNDLE = Path(__file__).resolve().parents[2] / "fixtures" / "stand_in_bundle"
DEADLINE_SECONDS = 60.0


class Blobs:
    def __init__(self, root: Path) -> None:
        self.store = LocalBlobStore(root)
        digest, data = build_bundle(STAND_IN_BUNDLE)
        self.bundle_uri = self.store.put(f"bundles/{digest}.tar.gz", data)

    def assignment(
        self, attempt_id: str, function: str, inputs: dict[str, Any], timeout_seconds: int = 0
    ) -> TaskAssignment:
        return TaskAssignment(
            attempt_id=attempt_id,
            fencing_token=1,
            execution_id="exec-1",
            node_id="n0",
            tenant="default",
            task_module="stand_in_tasks",
            task_function=function,
            bundle_uri=self.bundle_uri,
            inputs_uri=self.store.put(f"{attempt_id}/inputs.json", json.dumps(inputs).encode()),
            outputs_uri=self.store.uri(f"{attempt_id}/outputs.json"),
            timeout_seconds=timeout_seconds,
        )

    def outputs(self, assignment: TaskAssignment) -> Any:
        return json.loads(read_uri(assignment.outputs_uri))


@pytest.fixture
def blobs(tmp_path: Path) -> Blobs:
    return Blobs(tmp_path / "blobs")


STARTS = {"warm": True, "exec": False}
"""How task processes start: forked by the warm runtime, or exec'd (`warm_runtime`)."""


@pytest.fixture(params=sorted(STARTS))
def warm(request: pytest.FixtureRequest) -> bool:
    return STARTS[request.param]


@pytest.fixture
async def executor(tmp_path: Path, warm: bool) -> AsyncIterator[LocalProcessExecutor]:
    executor = LocalProcessExecutor(tmp_path / "agent", kill_grace_seconds=1.0, warm_runtime=warm)
    try:
        yield executor
    finally:
        await executor.shutdown("test over")


async def next_event(executor: LocalProcessExecutor) -> AttemptEvent:
    return await asyncio.wait_for(executor.next_event(), DEADLINE_SECONDS)


async def wait_for_path(path: Path) -> None:
    await wait_until_async(path.exists, timeout=DEADLINE_SECONDS, message=f"{path} to appear")


def process_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # reaped before, or between open and read
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"  # a zombie waiting for its reaper


async def test_success_runs_the_task_and_keeps_its_log(
    executor: LocalProcessExecutor, blobs: Blobs, tmp_path: Path
) -> None:
    assignment = blobs.assignment("att-ok", "add", {"a": 40, "b": 2})
    await executor.launch(assignment)

    running = await next_event(executor)
    assert (running.attempt_id, running.state) == ("att-ok", AttemptState.RUNNING)
    assert executor.running() == ["att-ok"]
    done = await next_event(executor)
    assert (done.attempt_id, done.state, done.message) == ("att-ok", AttemptState.SUCCEEDED, "")
    assert executor.running() == []
    assert blobs.outputs(assignment) == {"o0": 42}
    log = (tmp_path / "agent/attempts/att-ok/log.txt").read_text()
    assert "adding 40 and 2" in log
    assert "running stand_in_tasks.add" in log


async def test_failure_carries_message_and_traceback(
    executor: LocalProcessExecutor, blobs: Blobs
) -> None:
    await executor.launch(blobs.assignment("att-boom", "explode", {"reason": "bad batch"}))

    assert (await next_event(executor)).state is AttemptState.RUNNING
    done = await next_event(executor)
    assert done.state is AttemptState.FAILED
    assert done.message == "ValueError: bad batch"
    assert "in explode" in done.traceback


async def test_exit_without_result_reports_exit_code_and_log_tail(
    executor: LocalProcessExecutor, blobs: Blobs
) -> None:
    await executor.launch(blobs.assignment("att-exit", "hard_exit", {"code": 3}))

    assert (await next_event(executor)).state is AttemptState.RUNNING
    done = await next_event(executor)
    assert done.state is AttemptState.FAILED
    assert done.message == "task process exited with code 3"
    assert "about to exit hard" in done.traceback


async def test_timeout_kills_the_attempt(
    executor: LocalProcessExecutor, blobs: Blobs, exchange_dir: Path
) -> None:
    never = str(exchange_dir / "never-created")
    assignment = blobs.assignment(
        "att-slow", "wait_for_file", {"path": never, "deadline_seconds": 120}, timeout_seconds=1
    )
    await executor.launch(assignment)

    assert (await next_event(executor)).state is AttemptState.RUNNING
    done = await next_event(executor)
    assert (done.state, done.message) == (AttemptState.FAILED, "timed out after 1s")
    assert executor.running() == []


async def test_kill_stops_the_whole_process_group(
    executor: LocalProcessExecutor, blobs: Blobs, exchange_dir: Path
) -> None:
    pid_file = exchange_dir / "grandchild.pid"
    assignment = blobs.assignment("att-kill", "spawn_and_wait", {"pid_file": str(pid_file)})
    await executor.launch(assignment)
    assert (await next_event(executor)).state is AttemptState.RUNNING
    await wait_for_path(pid_file)
    grandchild = int(pid_file.read_text())

    await executor.kill("att-kill", "stopped by the control plane")

    done = await next_event(executor)
    assert (done.state, done.message) == (AttemptState.CANCELLED, "stopped by the control plane")
    await wait_until_async(
        lambda: process_gone(grandchild),
        timeout=DEADLINE_SECONDS,
        message="the task's own child to die with the kill",
    )
    await executor.kill("att-kill", "again")  # unknown by now: a no-op


async def test_kill_gives_the_task_its_grace_after_sigterm(
    executor: LocalProcessExecutor, blobs: Blobs, exchange_dir: Path
) -> None:
    """A stop with a grace (a preemption's): a task that traps SIGTERM finishes its work in
    the grace and leaves; one that goes on is SIGKILLed once the grace is over, not before
    (the executor's own grace is 1 s here)."""
    leaves = {"marker": str(exchange_dir / "leaves.term"), "ready": str(exchange_dir / "l.ready")}
    await executor.launch(blobs.assignment("att-leaves", "on_sigterm", {**leaves, "leave": True}))
    assert (await next_event(executor)).state is AttemptState.RUNNING
    await wait_for_path(Path(leaves["ready"]))
    started = time.monotonic()
    await executor.kill("att-leaves", "stopped by the control plane (preempted)", grace_seconds=30)
    done = await next_event(executor)
    assert (done.state, done.message) == (
        AttemptState.CANCELLED,
        "stopped by the control plane (preempted)",
    )
    assert Path(leaves["marker"]).exists()  # it ran its handler
    assert time.monotonic() - started < 20  # and left without waiting for the grace

    stays = {"marker": str(exchange_dir / "stays.term"), "ready": str(exchange_dir / "s.ready")}
    await executor.launch(blobs.assignment("att-stays", "on_sigterm", {**stays, "leave": False}))
    assert (await next_event(executor)).state is AttemptState.RUNNING
    await wait_for_path(Path(stays["ready"]))
    await executor.kill("att-stays", "preempted", grace_seconds=3)
    done = await next_event(executor)
    ended = time.monotonic()
    assert done.state is AttemptState.CANCELLED
    trapped_at = float(Path(stays["marker"]).read_text())
    # Killed after the grace, which the executor's 1 s would not have given it.
    assert 2.5 <= ended - trapped_at < 3 + DEADLINE_SECONDS / 2, ended - trapped_at
    assert executor.running() == []


async def test_shutdown_cancels_every_running_attempt(
    executor: LocalProcessExecutor, blobs: Blobs, exchange_dir: Path
) -> None:
    inputs = {"path": str(exchange_dir / "never"), "deadline_seconds": 120}
    for i in range(2):
        await executor.launch(blobs.assignment(f"att-{i}", "wait_for_file", inputs))
    assert {(await next_event(executor)).state for _ in range(2)} == {AttemptState.RUNNING}

    await executor.shutdown("agent shut down")

    events = [await next_event(executor) for _ in range(2)]
    assert {(e.attempt_id, e.state, e.message) for e in events} == {
        ("att-0", AttemptState.CANCELLED, "agent shut down"),
        ("att-1", AttemptState.CANCELLED, "agent shut down"),
    }


async def test_shutting_down_at_once_after_an_end_leaves_no_sandbox_behind(
    blobs: Blobs, tmp_path: Path, warm: bool
) -> None:
    # The end is reported before the sandbox goes: a shutdown right after it must still wait
    # for that clean-up, or every short-lived agent leaves its sandboxes in the temp dir.
    executor = LocalProcessExecutor(tmp_path / "agent", warm_runtime=warm)
    sandbox_root = executor.sandbox_dir("att-quick").parent
    try:
        await executor.launch(blobs.assignment("att-quick", "add", {"a": 1, "b": 2}))
        assert (await next_event(executor)).state is AttemptState.RUNNING
        assert (await next_event(executor)).state is AttemptState.SUCCEEDED
    finally:
        await executor.shutdown("test over")
    assert not sandbox_root.exists()


AGENT_SECRETS = {
    "FLEETFLOW_AGENT_TOKEN": "cluster-secret",
    "FLEETFLOW_S3_SECRET_KEY": "bucket-secret",
    "AWS_SECRET_ACCESS_KEY": "bucket-secret",
}


async def test_agent_settings_are_not_passed_to_task_code(
    blobs: Blobs, tmp_path: Path, warm: bool
) -> None:
    executor = LocalProcessExecutor(
        tmp_path / "agent", env={**os.environ, **AGENT_SECRETS}, warm_runtime=warm
    )
    try:
        for name in AGENT_SECRETS:
            assignment = blobs.assignment(f"att-env-{name}", "env_var", {"name": name})
            await executor.launch(assignment)

            assert (await next_event(executor)).state is AttemptState.RUNNING
            assert (await next_event(executor)).state is AttemptState.SUCCEEDED
            assert blobs.outputs(assignment) == {"o0": "<unset>"}
    finally:
        await executor.shutdown("test over")


@pytest.mark.parametrize("attempt_id", ["../escape", "", "a/b"])
async def test_unusable_attempt_id_fails_without_starting(
    executor: LocalProcessExecutor, blobs: Blobs, attempt_id: str
) -> None:
    valid = blobs.assignment("att-valid", "add", {"a": 1, "b": 2})
    await executor.launch(dataclasses.replace(valid, attempt_id=attempt_id))

    event = await next_event(executor)
    assert event.state is AttemptState.FAILED
    assert event.message.startswith("could not start task process")
    assert executor.running() == []


async def test_missing_bundle_fails_before_the_task_starts(
    executor: LocalProcessExecutor, blobs: Blobs
) -> None:
    assignment = blobs.assignment("att-nobundle", "add", {"a": 1, "b": 2})
    assignment = dataclasses.replace(
        assignment, bundle_uri=blobs.store.uri("bundles/missing.tar.gz")
    )
    await executor.launch(assignment)

    done = await next_event(executor)  # the agent stages the bundle: no process is started
    assert done.state is AttemptState.FAILED
    assert done.message.startswith("could not stage the task's code: blob not found")
    assert executor.running() == []


async def finish(executor: LocalProcessExecutor, assignment: TaskAssignment) -> AttemptEvent:
    await executor.launch(assignment)
    assert (await next_event(executor)).state is AttemptState.RUNNING
    return await next_event(executor)


async def test_a_task_that_rewrites_its_code_leaves_the_next_attempts_copy_as_bundled(
    executor: LocalProcessExecutor, blobs: Blobs
) -> None:
    """The agent unpacks a bundle once and copies it into each sandbox: a task owns its copy
    and may change it, and the next attempt of the same bundle gets the bundled files."""
    rewrite = blobs.assignment("att-rewrite", "rewrite_data_file", {"text": "tampered"})
    done = await finish(executor, rewrite)
    assert done.state is AttemptState.SUCCEEDED, done.message
    assert blobs.outputs(rewrite) == {"o0": "tampered"}

    read = blobs.assignment("att-read", "read_data_file", {})
    assert (await finish(executor, read)).state is AttemptState.SUCCEEDED
    assert blobs.outputs(read) == {"o0": "hello from the bundle"}


async def the_code_made_ahead(executor: LocalProcessExecutor) -> Path:
    """The one copy of a bundle made ahead for its next attempt (after an attempt of it
    ended), once it is there."""
    spares = executor.sandbox_dir("any").parent / SPARE_CODE_DIR
    await wait_until_async(
        lambda: spares.is_dir() and any(spares.iterdir()),
        timeout=DEADLINE_SECONDS,
        message="the bundle's next copy, made ahead",
    )
    (spare,) = spares.iterdir()
    return spare


async def test_an_attempts_code_is_the_copy_made_ahead_when_its_bundles_last_attempt_ended(
    executor: LocalProcessExecutor, blobs: Blobs, exchange_dir: Path
) -> None:
    """Off the next attempt's path: it renames the copy into its sandbox."""
    first = await finish(executor, blobs.assignment("att-first", "add", {"a": 1, "b": 2}))
    assert first.state is AttemptState.SUCCEEDED
    made_ahead = (await the_code_made_ahead(executor)).stat().st_ino
    release = exchange_dir / "release"
    waiting = blobs.assignment(
        "att-next", "wait_for_file", {"path": str(release), "deadline_seconds": DEADLINE_SECONDS}
    )

    await executor.launch(waiting)
    assert (await next_event(executor)).state is AttemptState.RUNNING
    code = executor.sandbox_dir("att-next") / "code"
    assert code.stat().st_ino == made_ahead
    release.touch()
    assert (await next_event(executor)).state is AttemptState.SUCCEEDED


async def test_a_bundle_changed_after_upload_is_refused_before_any_process_starts(
    executor: LocalProcessExecutor, blobs: Blobs, tmp_path: Path
) -> None:
    evil = tmp_path / "evil"
    evil.mkdir()
    marker = tmp_path / "pwned"
    (evil / "stand_in_tasks.py").write_text(
        f"open({str(marker)!r}, 'w').write('pwned')\ndef add(**_): return 0\n"
    )
    _, forged = build_bundle(evil)
    key = blobs.bundle_uri.rsplit("/", 2)[-2:]
    blobs.store.put("/".join(key), forged)  # overwritten in place, under the genuine digest

    await executor.launch(blobs.assignment("att-forged", "add", {"a": 1, "b": 2}))
    done = await next_event(executor)
    assert done.state is AttemptState.FAILED
    assert done.message.startswith("could not stage the task's code: code bundle")
    assert "was changed after upload; refusing to run it" in done.message
    assert not marker.exists()
    assert executor.running() == []


async def test_a_secret_is_in_its_attempts_process_only(
    executor: LocalProcessExecutor, blobs: Blobs
) -> None:
    variable = "FLEETFLOW_SECRET_WANDB"
    secret = TaskSecret("wandb", variable, value="wandb-value-for-one-attempt")
    holder = dataclasses.replace(
        blobs.assignment("att-secret", "env_var", {"name": variable}), secrets=(secret,)
    )
    other = blobs.assignment("att-no-secret", "env_var", {"name": variable})
    for assignment, expected in ((holder, secret.value), (other, "<unset>")):
        await executor.launch(assignment)
        assert (await next_event(executor)).state is AttemptState.RUNNING
        assert (await next_event(executor)).state is AttemptState.SUCCEEDED
        assert blobs.outputs(assignment) == {"o0": expected}
    assert variable not in os.environ  # never the agent's own environment


async def test_a_kubernetes_secret_reference_fails_without_starting(
    executor: LocalProcessExecutor, blobs: Blobs
) -> None:
    reference = TaskSecret(
        "registry", "FLEETFLOW_SECRET_REGISTRY", kubernetes_secret="creds", kubernetes_key="k"
    )
    assignment = dataclasses.replace(
        blobs.assignment("att-ref", "add", {"a": 1, "b": 2}), secrets=(reference,)
    )
    await executor.launch(assignment)
    event = await next_event(executor)
    assert event.state is AttemptState.FAILED
    assert "'registry' are references to Kubernetes Secrets" in event.message
    assert executor.running() == []
