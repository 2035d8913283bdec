"""The warm task runtime (`fleetflow.forkserver`, `data_plane_agent.executors.warm_runtime`) under
a real `LocalProcessExecutor`: real fork server, real runtime, real tasks (as users of their own
when the tests run as root, as in CI).

What a forked attempt must be is what an exec'd one is: the same process as the task sees it
(parity), nothing left of the attempt before it (isolation), nothing of the fork server it could
reach (security), and an end the agent always hears of, even when the fork server dies.
"""

from __future__ import annotations

import array
import asyncio
import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from data_plane_agent.attempts import AttemptEvent, TaskAssignment, TaskSecret
from data_plane_agent.executors import warm_runtime
from data_plane_agent.executors.local_process import LocalProcessExecutor
from data_plane_agent.sandbox import Interpreter, resolve_isolation
from data_plane_agent.settings import AgentSettings
from fleetflow import forkserver
from fleetflow.bundle import build_bundle
from fleetflow.states import AttemptState
from tests.polling import wait_until_async
from tests.tiers import tier_unavailable
from tests.unit.agent.test_local_process_executor import (
    AGENT_SECRETS,
    Blobs,
    next_event,
    process_gone,
)

DEADLINE_SECONDS = 60.0
ROOT = os.geteuid() == 0


@pytest.fixture
async def executor(tmp_path: Path) -> AsyncIterator[LocalProcessExecutor]:
    executor = LocalProcessExecutor(
        tmp_path / "agent",
        kill_grace_seconds=1.0,
        env={**os.environ, **AGENT_SECRETS},
    )
    try:
        yield executor
    finally:
        await executor.shutdown("test over")


@pytest.fixture
def blobs(tmp_path: Path) -> Blobs:
    return Blobs(tmp_path / "blobs")


async def run(executor: LocalProcessExecutor, assignment: TaskAssignment) -> AttemptEvent:
    """Launch `assignment` and wait for its terminal event."""
    await executor.launch(assignment)
    while True:
        event = await next_event(executor)
        if event.attempt_id == assignment.attempt_id and event.state.terminal:
            return event


async def described(
    executor: LocalProcessExecutor, blobs: Blobs, attempt_id: str
) -> dict[str, Any]:
    assignment = blobs.assignment(attempt_id, "describe_process", {})
    event = await run(executor, assignment)
    assert event.state is AttemptState.SUCCEEDED, (event.message, event.traceback)
    found: dict[str, Any] = json.loads(blobs.outputs(assignment)["o0"])
    return found


async def test_a_task_is_forked_and_runs_as_its_own_user_in_its_own_session(
    executor: LocalProcessExecutor, blobs: Blobs
) -> None:
    found = await described(executor, blobs, "at-who")

    server = executor.warm_runtime_pid
    assert server is not None, "the attempt ran without the warm runtime"
    assert found["pid"] != server
    assert found["own_group"] and found["own_session"]
    if ROOT:
        assert 50000 <= found["uid"] <= 59999
        assert (found["gid"], found["groups"]) == (found["uid"], [])
        assert found["umask"] == 0o077
    else:
        assert found["uid"] == os.getuid()
    assert found["dumpable"] == 1  # as after an exec, though the fork server is not
    assert found["cwd"] == str(executor.sandbox_dir("at-who") / "code")
    log = (executor.attempt_dir("at-who") / "log.txt").read_text()
    assert "to stdout" in log and "to stderr" in log
    assert "running stand_in_tasks.describe_process" in log  # the runtime's own lines


async def test_a_task_holds_no_descriptor_but_its_stdio(
    executor: LocalProcessExecutor, blobs: Blobs
) -> None:
    found = await described(executor, blobs, "at-fds")

    log = str(executor.attempt_dir("at-fds") / "log.txt")
    assert found["fds"] == {"0": "/dev/null", "1": log, "2": log}


async def test_a_forked_task_sees_what_an_exec_d_one_sees(blobs: Blobs, tmp_path: Path) -> None:
    """Parity: the same process as the task can tell, forked or exec'd."""
    seen = {}
    for warm in (True, False):
        executor = LocalProcessExecutor(tmp_path / f"agent-{warm}", warm_runtime=warm)
        try:
            seen[warm] = await described(executor, blobs, f"at-{warm}")
            sandbox = str(executor.sandbox_dir(f"at-{warm}"))
        finally:
            await executor.shutdown("test over")
        found = seen[warm]
        assert executor.warm_runtime_pid is None
        for key in ("cwd", "argv0", "tempdir"):
            found[key] = found[key].replace(sandbox, "<sandbox>")
        found["path"] = [entry.replace(sandbox, "<sandbox>") for entry in found["path"]]
        found["environ"] = {
            name: value.replace(sandbox, "<sandbox>").replace(f"at-{warm}", "<attempt>")
            for name, value in found["environ"].items()
        }
        found["fds"] = sorted(found["fds"])
        for varying in ("pid", "uid", "gid", "groups", "random"):
            del found[varying]

    assert seen[True] == seen[False]
    assert seen[True]["logging"] == [
        "INFO",
        "StreamHandler to fd 2: %(asctime)s %(levelname)s %(name)s: %(message)s",
    ]
    assert seen[True]["tempdir"] == "<sandbox>/tmp"
    assert seen[True]["path"][:2] == ["<sandbox>/code", "<sandbox>"]


async def test_a_forked_task_finds_the_sdk_imported_and_its_names_bound(
    executor: LocalProcessExecutor, blobs: Blobs
) -> None:
    """`from fleetflow import task, workflow` in a task module costs each attempt nothing: the
    fork server imported those modules (a fresh child would import, and maybe compile, them)."""
    assignment = blobs.assignment("at-sdk", "sdk_at_import", {})
    event = await run(executor, assignment)
    assert event.state is AttemptState.SUCCEEDED, (event.message, event.traceback)
    found = blobs.outputs(assignment)["o0"]

    for name in ("task", "workflow", "map_task", "Resources", "File", "Directory"):
        assert name in found["bound"], name
    for module in ("fleetflow.task", "fleetflow.workflow", "fleetflow.fanout", "fleetflow.files"):
        assert module in found["modules"], module
    assert "fleetflow.client" not in found["modules"]  # the HTTP client stays out


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("abort", "task process exited with code -6 (SIGABRT)"),
        ("segfault", "task process exited with code -11 (SIGSEGV)"),
        ("exit", "SystemExit: 3"),
    ],
)
async def test_a_crashing_task_fails_and_the_next_attempt_runs(
    executor: LocalProcessExecutor, blobs: Blobs, how: str, message: str
) -> None:
    crashed = await run(executor, blobs.assignment(f"at-{how}", "crash", {"how": how}))
    server = executor.warm_runtime_pid

    assert (crashed.state, crashed.message) == (AttemptState.FAILED, message)
    if how != "exit":  # no result file: the log's last lines stand in for a traceback
        assert f"crashing by {how}" in crashed.traceback
    assert server is not None
    after = blobs.assignment(f"at-after-{how}", "add", {"a": 1, "b": 2})
    assert (await run(executor, after)).state is AttemptState.SUCCEEDED
    assert blobs.outputs(after) == {"o0": 3}
    assert executor.warm_runtime_pid == server, "a task's crash took the fork server with it"


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "exec"])
async def test_a_thread_left_running_does_not_keep_the_attempt_or_the_next(
    blobs: Blobs, tmp_path: Path, warm: bool
) -> None:
    executor = LocalProcessExecutor(tmp_path / "agent", warm_runtime=warm)
    try:
        for attempt_id in ("at-thread", "at-thread-again"):
            event = await run(executor, blobs.assignment(attempt_id, "leave_a_thread", {}))
            assert event.state is AttemptState.SUCCEEDED, event.message
    finally:
        await executor.shutdown("test over")


async def test_nothing_an_attempt_changes_reaches_the_next(
    executor: LocalProcessExecutor, blobs: Blobs
) -> None:
    first = await described(executor, blobs, "at-before")
    tampered = await run(executor, blobs.assignment("at-tamper", "tamper", {}))
    assert tampered.state is AttemptState.SUCCEEDED, tampered.message

    after = await described(executor, blobs, "at-after")

    assert after["cwd"] == str(executor.sandbox_dir("at-after") / "code")
    assert "FLEETFLOW_TAMPERED" not in after["environ"]
    assert after["environ"]["FLEETFLOW_ATTEMPT_ID"] == "at-after"
    assert "/tampered" not in after["path"]
    assert not after["modules_tampered"] and not after["runtime_tampered"]
    assert after["tempdir"] == str(executor.sandbox_dir("at-after") / "tmp")
    assert after["sigterm_default"]
    assert after["umask"] == first["umask"]
    assert len({first["random"], after["random"]}) == 2  # a random state of its own


def two_bundles_with_a_helpers_module(root: Path) -> dict[str, Path]:
    """Two code bundles, each with its own `helpers.py`, and a task that reports which one
    `import helpers` found."""
    bundles = {}
    for name in ("alpha", "beta"):
        directory = root / name
        directory.mkdir(parents=True)
        (directory / "helpers.py").write_text(f"WHO = {name!r}\n")
        (directory / "which_helpers.py").write_text(
            textwrap.dedent(
                """\
                import helpers


                class _Task:
                    fn = staticmethod(lambda: helpers.WHO)
                    input_types = {}
                    output_type = str


                who = _Task()
                """
            )
        )
        bundles[name] = directory
    return bundles


async def test_a_module_of_one_bundle_is_not_the_next_bundles(
    executor: LocalProcessExecutor, blobs: Blobs, tmp_path: Path
) -> None:
    for name, directory in two_bundles_with_a_helpers_module(tmp_path / "bundles").items():
        digest, data = build_bundle(directory)
        bundle_uri = blobs.store.put(f"bundles/{digest}.tar.gz", data)
        assignment = dataclasses.replace(
            blobs.assignment(f"at-{name}", "who", {}),
            bundle_uri=bundle_uri,
            task_module="which_helpers",
        )
        event = await run(executor, assignment)
        assert event.state is AttemptState.SUCCEEDED, (event.message, event.traceback)
        assert blobs.outputs(assignment) == {"o0": name}


async def test_neither_the_fork_server_nor_its_tasks_hold_the_agents_secrets(
    executor: LocalProcessExecutor, blobs: Blobs
) -> None:
    found = await described(executor, blobs, "at-secrets")

    assert not set(AGENT_SECRETS) & set(found["environ"])
    server = executor.warm_runtime_pid
    assert server is not None
    if not ROOT:
        tier_unavailable(
            "FORK-SERVER ENVIRONMENT CHECK SKIPPED - the fork server is not dumpable: only root "
            "reads its environment; run the tests as root",
            "FLEETFLOW_REQUIRE_TASK_USERS",
        )
    environ = Path(f"/proc/{server}/environ").read_bytes()
    for name, value in AGENT_SECRETS.items():
        assert name.encode() not in environ and value.encode() not in environ


@pytest.mark.parametrize("target", ["the fork server", "the spare"])
async def test_a_task_cannot_reach_the_fork_server_nor_the_waiting_spare(
    executor: LocalProcessExecutor, blobs: Blobs, target: str
) -> None:
    if not ROOT:
        tier_unavailable(
            "FORK-SERVER REACH CHECK SKIPPED - tasks run as the agent's user, which owns the fork "
            "server: root only; run the tests as root",
            "FLEETFLOW_REQUIRE_TASK_USERS",
        )
    await described(executor, blobs, "at-warm-up")
    server = executor.warm_runtime_pid
    assert server is not None

    probe = (
        blobs.assignment("at-reach", "reach_process", {"pid": server})
        if target == "the fork server"
        else blobs.assignment("at-reach", "reach_spare", {"server": server})
    )
    event = await run(executor, probe)

    assert event.state is AttemptState.SUCCEEDED, event.message
    assert blobs.outputs(probe)["o0"] == {
        "signal": "denied",
        "environ": "denied",
        "mem": "denied",
        "fds": "denied",
        "ptrace": "denied",
    }


async def test_killing_the_fork_server_loses_its_tasks_and_the_next_launch_starts_another(
    executor: LocalProcessExecutor, blobs: Blobs, exchange_dir: Path
) -> None:
    pid_file = exchange_dir / "grandchild.pid"
    await executor.launch(
        blobs.assignment("at-doomed", "spawn_and_wait", {"pid_file": str(pid_file)})
    )
    assert (await next_event(executor)).state is AttemptState.RUNNING
    await wait_until_async(pid_file.exists, timeout=DEADLINE_SECONDS, message="the task to start")
    grandchild = int(pid_file.read_text())
    server = executor.warm_runtime_pid
    assert server is not None

    os.kill(server, signal.SIGKILL)

    lost = await next_event(executor)
    assert (lost.attempt_id, lost.state) == ("at-doomed", AttemptState.LOST)
    assert "warm task runtime died" in lost.message
    assert executor.running() == []
    await wait_until_async(
        lambda: process_gone(grandchild),
        timeout=DEADLINE_SECONDS,
        message="the lost task's own child to die with it",
    )
    after = blobs.assignment("at-after", "add", {"a": 2, "b": 3})
    assert (await run(executor, after)).state is AttemptState.SUCCEEDED
    assert executor.warm_runtime_pid not in (None, server)


def children_of(pid: int) -> list[int]:
    """The live (not zombie) processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


async def the_spare(executor: LocalProcessExecutor) -> int:
    """The process the agent holds for the next attempt, forked ahead by the fork server."""

    def spares() -> list[int]:
        server = executor.warm_runtime
        return server.spares if server is not None else []

    await wait_until_async(
        lambda: len(spares()) == 1,
        timeout=DEADLINE_SECONDS,
        message="the agent to hold a spare process",
    )
    (spare,) = spares()
    return spare


def memory_holds(pid: int, needle: bytes) -> bool:
    """Whether any readable mapping of process `pid` holds `needle` (root only)."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if not perms.startswith("r") or line.rstrip().endswith(("[vvar]", "[vsyscall]")):
                continue
            start, end = (int(bound, 16) for bound in span.split("-"))
            mem.seek(start)
            try:
                if needle in mem.read(end - start):
                    return True
            except OSError:  # a mapping that cannot be read (a guard page)
                continue
    return False


async def test_the_next_attempts_process_holds_nothing_of_the_last_request(
    executor: LocalProcessExecutor, blobs: Blobs
) -> None:
    if not ROOT:
        tier_unavailable(
            "SPARE MEMORY CHECK SKIPPED - reading another process's memory needs root; run the "
            "tests as root",
            "FLEETFLOW_REQUIRE_TASK_USERS",
        )
    marker = "spare-check-6f1d2c9a8b7e"
    secret = TaskSecret(name="token", env_var="FLEETFLOW_TEST_TOKEN", value=marker)
    assignment = dataclasses.replace(
        blobs.assignment("at-secret", "add", {"a": 1, "b": 2}), secrets=(secret,)
    )
    assert (await run(executor, assignment)).state is AttemptState.SUCCEEDED

    spare = await the_spare(executor)

    assert not memory_holds(spare, marker.encode())
    assert not memory_holds(executor.warm_runtime_pid or 0, marker.encode())


@pytest.mark.parametrize("heard", [True, False], ids=["its-end-heard-of", "its-end-not-heard-of"])
async def test_a_spare_killed_while_it_waits_is_replaced_and_the_next_attempt_runs(
    executor: LocalProcessExecutor, blobs: Blobs, heard: bool
) -> None:
    await described(executor, blobs, "at-warm-up")
    spare = await the_spare(executor)
    server = executor.warm_runtime
    assert server is not None

    os.kill(spare, signal.SIGKILL)
    if heard:  # the fork server reaped it and the agent read so: it asks for another
        await wait_until_async(
            lambda: spare not in server.spares,
            timeout=DEADLINE_SECONDS,
            message="the agent to hear of its killed spare",
        )
    else:  # dead, and the agent's loop not run since: the launch finds its socket closed
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not process_gone(spare) and time.monotonic() < deadline:
            time.sleep(0.01)  # pacing, on purpose without yielding to the agent's loop
        assert spare in server.spares

    found = await described(executor, blobs, "at-after")

    assert found["pid"] != spare
    assert executor.running() == []


async def test_the_next_spare_is_forked_after_the_launch_or_at_once_for_a_waiting_one(
    executor: LocalProcessExecutor, blobs: Blobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    await described(executor, blobs, "at-warm-up")  # a spare is in hand from here on
    server = executor.warm_runtime_pid
    assert server is not None
    monkeypatch.setattr(warm_runtime, "SPARE_AFTER_SECONDS", 3600.0)

    first = await described(executor, blobs, "at-takes-the-spare")
    await wait_until_async(
        lambda: not children_of(server),  # the attempt reaped; no spare forked behind it
        timeout=DEADLINE_SECONDS,
        message="the attempt to end",
    )
    second = await described(executor, blobs, "at-waits-for-one")

    assert first["pid"] != second["pid"]
    assert executor.running() == []


def test_the_fork_server_refuses_a_malformed_ask_and_a_spare_a_malformed_request(
    tmp_path: Path,
) -> None:
    """The protocol as a buggy (or hostile) agent would speak it: an answer for every ask, an
    exit code for every spare, and the next ask served."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    process = subprocess.Popen(
        [sys.executable, "-m", forkserver.__name__, str(theirs.fileno())],
        pass_fds=(theirs.fileno(),),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    theirs.close()
    ours.settimeout(DEADLINE_SECONDS)

    def spare() -> tuple[int, socket.socket]:
        ours.send(forkserver.ASK_FOR_SPARE)
        data, ancillary, _, _ = ours.recvmsg(4096, forkserver.FD_SPACE)
        (fd,) = forkserver.received_fds(ancillary)
        return json.loads(data)["spare"], socket.socket(fileno=fd)

    try:
        assert "ready" in json.loads(ours.recv(4096))
        ours.send(b"fork me a root shell")
        assert json.loads(ours.recv(4096)) == {"error": "malformed ask"}

        pid, channel = spare()
        channel.send(b'{"args": []}')  # no log descriptor with it
        channel.close()
        assert json.loads(ours.recv(4096)) == {"pid": pid, "returncode": 2}

        pid, channel = spare()
        request = {"args": ["--help"], "env": {}, "cwd": str(tmp_path), "uid": None}
        log = tmp_path / "task.log"
        with open(log, "wb") as log_file:
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [log_file.fileno()]))]
            channel.sendmsg([json.dumps(request).encode()], rights)
        channel.close()
        assert json.loads(ours.recv(4096)) == {"pid": pid, "returncode": 0}
        assert "--bundle-uri" in log.read_text()  # the runtime's usage: the spare ran it
    finally:
        ours.close()  # the server leaves
        assert process.wait(DEADLINE_SECONDS) == 0


async def test_without_a_fork_server_tasks_start_the_usual_way_with_one_warning(
    blobs: Blobs,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(warm_runtime, "FORKSERVER_MODULE", "fleetflow.no_such_module")
    executor = LocalProcessExecutor(tmp_path / "agent")
    try:
        with caplog.at_level(logging.WARNING, logger=warm_runtime.__name__):
            for attempt_id in ("at-cold-1", "at-cold-2"):
                assignment = blobs.assignment(attempt_id, "add", {"a": 1, "b": 1})
                assert (await run(executor, assignment)).state is AttemptState.SUCCEEDED
                assert executor.warm_runtime_pid is None
    finally:
        await executor.shutdown("test over")
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == warm_runtime.__name__ and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1, warnings
    assert "the warm task runtime could not start" in warnings[0]


def test_the_warm_runtime_is_on_unless_the_agent_setting_turns_it_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert AgentSettings(token="t").warm_runtime is True
    monkeypatch.setenv("FLEETFLOW_AGENT_WARM_RUNTIME", "false")
    assert AgentSettings(token="t").warm_runtime is False


async def test_an_agent_without_the_warm_runtime_starts_no_fork_server(
    blobs: Blobs, tmp_path: Path
) -> None:
    executor = LocalProcessExecutor(tmp_path / "agent", warm_runtime=False)
    try:
        await executor.start()
        assignment = blobs.assignment("at-cold", "add", {"a": 1, "b": 1})
        assert (await run(executor, assignment)).state is AttemptState.SUCCEEDED
        assert executor.warm_runtime_pid is None
    finally:
        await executor.shutdown("test over")


async def test_shutdown_stops_the_fork_server(tmp_path: Path) -> None:
    executor = LocalProcessExecutor(tmp_path / "agent")
    await executor.start()  # warms up in the background
    await wait_until_async(
        lambda: executor.warm_runtime_pid,
        timeout=DEADLINE_SECONDS,
        message="the fork server to be warm",
    )
    server = executor.warm_runtime_pid
    assert server is not None

    await executor.shutdown("test over")

    assert process_gone(server)
    assert executor.warm_runtime_pid is None


def test_an_import_path_others_may_write_to_is_found(exchange_dir: Path, tmp_path: Path) -> None:
    safe = tmp_path / "site"
    safe.mkdir()
    assert warm_runtime.writable_import_path(f"{safe}:{safe / 'not-yet'}") is None
    open_to_all = exchange_dir  # mode 1777, as /tmp
    assert warm_runtime.writable_import_path(f"{safe}:{open_to_all}") == str(open_to_all)
    # Not there yet: whoever may create it there decides what it holds.
    assert warm_runtime.writable_import_path(str(open_to_all / "later")) == str(open_to_all)
    # The agent's own directory inside a sticky one: others cannot replace it.
    owned = open_to_all / "agents"
    owned.mkdir(mode=0o755)
    assert warm_runtime.writable_import_path(str(owned)) is None
    owned.chmod(0o757)
    assert warm_runtime.writable_import_path(str(owned / "sub")) == str(owned)


async def test_no_fork_server_imports_from_where_a_task_could_write(
    blobs: Blobs, tmp_path: Path, exchange_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    isolation = resolve_isolation(tmp_path / "agent")
    interpreter = isolation.interpreter
    exposed = Interpreter(interpreter.executable, (*interpreter.pythonpath, str(exchange_dir)))
    executor = LocalProcessExecutor(
        tmp_path / "agent", isolation=dataclasses.replace(isolation, interpreter=exposed)
    )
    try:
        with caplog.at_level(logging.WARNING, logger=warm_runtime.__name__):
            assignment = blobs.assignment("at-exposed", "add", {"a": 2, "b": 2})
            assert (await run(executor, assignment)).state is AttemptState.SUCCEEDED
    finally:
        await executor.shutdown("test over")
    assert executor.warm_runtime_pid is None
    assert f"the tasks' import path holds {exchange_dir}" in caplog.text


async def test_attempts_launched_together_each_get_their_own_process(
    executor: LocalProcessExecutor, blobs: Blobs
) -> None:
    assignments = [blobs.assignment(f"at-many-{n}", "add", {"a": n, "b": 100}) for n in range(6)]

    await asyncio.gather(*(executor.launch(assignment) for assignment in assignments))
    ended: dict[str, AttemptEvent] = {}
    while len(ended) < len(assignments):
        event = await next_event(executor)
        if event.state.terminal:
            ended[event.attempt_id] = event

    assert {event.state for event in ended.values()} == {AttemptState.SUCCEEDED}
    for n, assignment in enumerate(assignments):
        assert blobs.outputs(assignment) == {"o0": n + 100}
    assert executor.warm_runtime_pid is not None
