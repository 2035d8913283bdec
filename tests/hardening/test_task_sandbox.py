"""A hostile task against the agent that runs it (issue 13, finding 2).

When the agent cannot give its tasks users of their own, local-process tasks run as its own
user. Such a task used to read the cluster token out
of the agent's `/proc/<pid>/environ` (or its memory) and lease other tenants' work with it. The
agent now makes itself non-dumpable, removes the token's variable from its environment once
read, and takes the token from a file only its owner may read (`data_plane_agent.hardening`,
`data_plane_agent.settings`).

The attacks run in real processes: a running agent (`python -m data_plane_agent run`, dialling
a port where nothing listens, so it keeps retrying) and a same-user "task" reading its `/proc`
entries. Both are started without capabilities, so that the test means the same as root as it
does as an ordinary user: root's CAP_SYS_PTRACE would read any process, dumpable or not (which
is why the local-process agent must not run as root).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from data_plane_agent.cli import app
from data_plane_agent.settings import AgentTokenError, load_agent_settings
from tests.polling import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "ffa_stolen-if-you-can-read-this"
DEADLINE_SECONDS = 60.0

# Runs argv[1:] without any capability: bounding set emptied (so exec as root gains none),
# then permitted, effective and inheritable sets cleared. Stdlib only (run with -I).
WITHOUT_CAPABILITIES = r"""
import ctypes, os, sys

class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

class Data(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint32) for n in ("effective", "permitted", "inheritable")]

libc = ctypes.CDLL(None, use_errno=True)
if os.geteuid() == 0:
    last = int(open("/proc/sys/kernel/cap_last_cap").read())
    for cap in range(last + 1):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), f"PR_CAPBSET_DROP {cap}")
libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
if libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()) != 0:  # version 3
    raise OSError(ctypes.get_errno(), "capset")
os.execv(sys.argv[1], sys.argv[1:])
"""

# The hostile task: reads the process argv[1]'s environment and opens its memory, prints what
# it got as one JSON line, then (with argv[2] == "linger") waits to be killed.
HOSTILE_TASK = r"""
import json, os, sys, time

pid, secret = sys.argv[1], sys.argv[2]
found = {}
try:
    environ = open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace")
    found["environ"] = "read, with the token" if secret in environ else "read, no token"
except PermissionError:
    found["environ"] = "denied"
try:
    open(f"/proc/{pid}/mem", "rb").close()
    found["mem"] = "opened"
except PermissionError:
    found["mem"] = "denied"
found["own_environment_has_token"] = any(secret in v for v in os.environ.values())
print(json.dumps(found), flush=True)
if sys.argv[3:] == ["linger"]:
    time.sleep(600)
"""

DENIED = {"environ": "denied", "mem": "denied", "own_environment_has_token": False}


@pytest.fixture(autouse=True)
def _clean_agent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FLEETFLOW_AGENT_"):
            monkeypatch.delenv(name)


@pytest.fixture
def linux() -> None:
    if sys.platform != "linux":
        pytest.skip(
            f"NOT RUN on {sys.platform}: these attacks use Linux's /proc and the agent's "
            "protection against them (PR_SET_DUMPABLE) is Linux only"
        )


def without_capabilities(argv: list[str]) -> list[str]:
    return [sys.executable, "-I", "-c", WITHOUT_CAPABILITIES, *argv]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETFLOW_AGENT_")}
    return {**env, **extra}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def running_agent(linux: None, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real agent, token in its initial environment, retrying a control plane that is not
    there; yielded once it dials (past its settings and its hardening)."""
    log = tmp_path / "agent.log"
    env = clean_env(
        FLEETFLOW_AGENT_TOKEN=SECRET,
        FLEETFLOW_AGENT_CONTROL_PLANE=f"127.0.0.1:{closed_port()}",
        FLEETFLOW_AGENT_WORK_DIR=str(tmp_path / "agent"),
        # Without capabilities it cannot give its tasks users of their own (none run here):
        # as root it must then be told to run them as itself.
        FLEETFLOW_AGENT_TASK_UIDS="off",
    )
    with open(log, "wb") as out:
        agent = subprocess.Popen(
            without_capabilities([sys.executable, "-m", "data_plane_agent", "run"]),
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:

        def dialling() -> bool:
            assert agent.poll() is None, f"the agent exited:\n{log.read_text()}"
            return "dialling the control plane" in log.read_text(errors="replace")

        wait_until(
            dialling,
            timeout=DEADLINE_SECONDS,
            interval=0.05,
            message="the agent to start",
            details=log.read_text,
        )
        yield agent
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(timeout=30)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()


def test_a_task_of_the_agents_user_cannot_read_its_environment_or_memory(
    running_agent: subprocess.Popen[bytes],
) -> None:
    attack = subprocess.run(
        without_capabilities(
            [sys.executable, "-I", "-c", HOSTILE_TASK, str(running_agent.pid), SECRET]
        ),
        env=clean_env(),
        capture_output=True,
        timeout=DEADLINE_SECONDS,
        check=True,
    )
    assert json.loads(attack.stdout) == DENIED
    assert running_agent.poll() is None, "the agent is still running"


# A stand-in for the agent's start, in a process of its own: the token in its initial
# environment, settings loaded, the process hardened, then a task started the way the
# local-process executor starts one that must die with the agent (die_with_parent_argv and
# parent_env), a task that attacks it. Prints the task's pid, then its findings, and exits.
HARDENED_PARENT = r"""
import os, subprocess, sys

from data_plane_agent.hardening import make_process_undumpable
from data_plane_agent.settings import load_agent_settings
from fleetflow.child_processes import die_with_parent_argv, parent_env

hostile, secret = sys.argv[1], sys.argv[2]
assert load_agent_settings().token.get_secret_value() == secret
assert make_process_undumpable()
task = subprocess.Popen(
    die_with_parent_argv([sys.executable, "-I", "-c", hostile, str(os.getpid()), secret, "linger"]),
    env={**os.environ, **parent_env()},
    stdout=subprocess.PIPE,
)
print(task.pid, flush=True)
print(task.stdout.readline().decode().strip(), flush=True)
"""


def test_the_agents_own_task_cannot_read_it_and_still_dies_with_it(linux: None) -> None:
    parent = subprocess.run(
        without_capabilities([sys.executable, "-c", HARDENED_PARENT, HOSTILE_TASK, SECRET]),
        cwd=REPO_ROOT,
        env=clean_env(FLEETFLOW_AGENT_TOKEN=SECRET),
        capture_output=True,
        timeout=DEADLINE_SECONDS,
    )
    assert parent.returncode == 0, parent.stderr.decode()
    pid_line, findings = parent.stdout.decode().splitlines()
    task_pid = int(pid_line)
    try:
        assert json.loads(findings) == DENIED
        wait_until(
            lambda: not alive(task_pid),
            timeout=DEADLINE_SECONDS,
            interval=0.05,
            message="the task to die with its (non-dumpable) parent",
        )
    finally:
        if alive(task_pid):
            os.kill(task_pid, signal.SIGKILL)


# ------------------------------------------------------------------------------ token file


def write_token(path: Path, mode: int, text: str = SECRET + "\n") -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_token_file_others_can_read_is_refused_with_how_to_fix_it(tmp_path: Path) -> None:
    token_file = write_token(tmp_path / "token", 0o644)

    with pytest.raises(AgentTokenError) as refused:
        load_agent_settings(token_file=token_file)
    assert "mode 0644" in str(refused.value)
    assert f"chmod 600 {token_file}" in str(refused.value)
    assert SECRET not in str(refused.value)

    result = CliRunner().invoke(app, ["run", "--token-file", str(token_file)])
    assert result.exit_code == 2
    assert f"error: the token file {token_file} is open to its group or to others" in (
        result.output
    )
    assert f"chmod 600 {token_file}" in result.output
    assert "Traceback" not in result.output

    write_token(token_file, 0o640)
    with pytest.raises(AgentTokenError, match="chmod 600"):
        load_agent_settings(token_file=token_file)


def test_an_owner_only_token_file_gives_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = write_token(tmp_path / "token", stat.S_IRUSR | stat.S_IWUSR)
    assert load_agent_settings(token_file=token_file).token.get_secret_value() == SECRET

    monkeypatch.setenv("FLEETFLOW_AGENT_TOKEN_FILE", str(token_file))
    settings = load_agent_settings()
    assert settings.token.get_secret_value() == SECRET
    assert SECRET not in repr(settings)

    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{SECRET}\n"))
    assert load_agent_settings(token_file=Path("-")).token.get_secret_value() == SECRET


@pytest.mark.parametrize(
    ("content", "error"), [("\n", "is empty"), (None, "cannot read the token file")]
)
def test_an_empty_or_missing_token_file_is_refused(
    tmp_path: Path, content: str | None, error: str
) -> None:
    token_file = tmp_path / "token"
    if content is not None:
        write_token(token_file, 0o600, content)
    with pytest.raises(AgentTokenError, match=error):
        load_agent_settings(token_file=token_file)


def test_a_token_given_twice_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETFLOW_AGENT_TOKEN", "another")
    with pytest.raises(AgentTokenError, match="given twice"):
        load_agent_settings(token_file=write_token(tmp_path / "token", 0o600))


def test_the_token_leaves_the_environment_once_the_settings_are_loaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLEETFLOW_AGENT_TOKEN", SECRET)

    settings = load_agent_settings(control_plane="cp.example:9443", max_parallel=None)

    assert settings.token.get_secret_value() == SECRET
    assert settings.control_plane == "cp.example:9443" and settings.max_parallel == 16
    assert "FLEETFLOW_AGENT_TOKEN" not in os.environ
    # Gone from the C environment too: a child started without an explicit env inherits that.
    child = subprocess.run(
        [sys.executable, "-I", "-c", "import os; print(os.environ.get('FLEETFLOW_AGENT_TOKEN'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.strip() == "None"
