"""`fleetflow dev up` as a user meets it: start it, run a workflow through the CLI, inspect the
execution, stop it with Ctrl-C (SIGINT) or lose it to SIGKILL, and find nothing left behind:
no Temporal server, no agent, no task process, no port still held."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from control_plane import processes
from fleetflow.client import Client
from fleetflow.config import CliConfig
from fleetflow.forkserver import TASK_PROCESS_NAME
from tests.polling import wait_until

pytestmark = pytest.mark.integration

FLEETFLOW = str(Path(sys.executable).parent / "fleetflow")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
START_SECONDS = 120
BANNER = "Fleetflow dev stack is up"

SLEEPY_WORKFLOW = """
import time

from fleetflow import task, workflow


@task
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@workflow
def sleepy(seconds: float = 600.0) -> float:
    return nap(seconds=seconds)
"""


# Processes, read from /proc: (pid, start time) names one process even if the pid is reused.


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(")", 1)[1].split()  # the name, in parentheses, may hold spaces
    return fields[0], int(fields[1]), int(fields[19])


def _cmdline(pid: int) -> str:
    """The command line, and the process's name when it differs (a task forked by the warm
    runtime keeps the fork server's command line but is named `fleetflow-task`)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
    return f"{command} [{name}]" if name == TASK_PROCESS_NAME else command


def runs_a_task(command: str) -> bool:
    return "fleetflow.runtime" in command or f"[{TASK_PROCESS_NAME}]" in command


def descendants(root: int) -> dict[tuple[int, int], str]:
    """Every live process below `root`: (pid, start time) -> command line."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            state, ppid, started = stat
            if state != "Z":
                children.setdefault(ppid, []).append((int(entry.name), started))
    found: dict[tuple[int, int], str] = {}
    pending = [root]
    while pending:
        for pid, started in children.get(pending.pop(), []):
            found[(pid, started)] = _cmdline(pid)
            pending.append(pid)
    return found


def alive(pid: int, started: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[2] == started and stat[0] != "Z"


@dataclass
class DevUp:
    """A `fleetflow dev up` subprocess and what a user's shell would have around it."""

    process: subprocess.Popen[bytes]
    home: Path
    workdir: Path
    env: dict[str, str]
    ports: dict[str, int]
    log: Path  # its stdout: the banner
    err_log: Path  # its stderr: start-up progress, warnings, errors
    config: Path  # the CLI config it writes
    api_url: str = ""
    # What a test saw running below dev up, so that teardown can clean up after a failure.
    seen: dict[tuple[int, int], str] = field(default_factory=dict)

    def output(self) -> str:
        parts = [
            f"--- dev up (stdout) ---\n{self.log.read_text(errors='replace')[-4000:]}",
            f"--- dev up (stderr) ---\n{self.err_log.read_text(errors='replace')[-4000:]}",
        ]
        for log in sorted((self.home / "logs").glob("*.log")):
            parts.append(f"--- {log.name} ---\n{log.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def client(self) -> Client:
        """A client logged in as dev up's CLI config says (its platform admin)."""
        config = CliConfig.model_validate_json(self.config.read_text())
        assert config.token, "dev up wrote no admin token into the CLI config"
        return Client(self.api_url, token=config.token)

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FLEETFLOW, *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _ready(stack: DevUp) -> bool:
    if stack.process.poll() is not None:
        raise AssertionError(f"dev up exited with {stack.process.returncode}:\n{stack.output()}")
    if not stack.config.is_file() or BANNER not in stack.log.read_text():
        return False
    stack.api_url = json.loads(stack.config.read_text())["api_url"]
    try:
        return httpx.get(f"{stack.api_url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


@contextlib.contextmanager
def start_dev_up(
    tmp_path: Path, *, env: dict[str, str] | None = None, home: Path | None = None
) -> Iterator[DevUp]:
    """`fleetflow dev up` on free ports, its state in `home` (default `tmp_path/home`), ready
    when this yields; killed with everything below it afterwards.

    The user's own FLEETFLOW_* settings do not leak in; `env` adds to the environment (e.g. a
    HOME of its own). Without FLEETFLOW_CONFIG there, the CLI config goes to
    `tmp_path/cli-config.json`, never to the user's ~/.fleetflow.
    """
    ports = {"api": 0, "grpc": 0, "temporal": 0}
    for name in ports:
        ports[name] = processes.free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETFLOW_")}
    full_env.update(env or {})
    if "FLEETFLOW_CONFIG" in full_env:
        config = Path(full_env["FLEETFLOW_CONFIG"])
    elif env and "HOME" in env:
        config = Path(env["HOME"]) / ".fleetflow" / "config.json"
    else:
        config = tmp_path / "cli-config.json"
        full_env["FLEETFLOW_CONFIG"] = str(config)
    home = home or tmp_path / "home"
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    log = tmp_path / "dev-up.log"
    err_log = tmp_path / "dev-up.err.log"
    with open(log, "wb") as out, open(err_log, "wb") as err:
        process = subprocess.Popen(
            [
                FLEETFLOW,
                "dev",
                "up",
                "--home",
                str(home),
                "--api-port",
                str(ports["api"]),
                "--grpc-port",
                str(ports["grpc"]),
                "--temporal-port",
                str(ports["temporal"]),
            ],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=workdir,
            start_new_session=True,
        )
    stack = DevUp(process, home, workdir, full_env, ports, log, err_log, config)
    try:
        wait_until(lambda: _ready(stack), timeout=START_SECONDS, message="dev up ready")
        yield stack
    finally:
        if process.poll() is None:
            stack.seen.update(descendants(process.pid))
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        for pid, started in stack.seen:
            if alive(pid, started):  # only after a failed test
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def dev_up(tmp_path: Path) -> Iterator[DevUp]:
    with start_dev_up(tmp_path) as stack:
        yield stack


def start_sleeping_task(stack: DevUp) -> tuple[str, dict[tuple[int, int], str]]:
    """Submit a task that sleeps; return its execution id and dev up's processes meanwhile."""
    code = stack.workdir / "sleepy"
    code.mkdir()
    (code / "sleepy.py").write_text(SLEEPY_WORKFLOW)
    submitted = stack.cli("run", "--remote", "--no-wait", str(code / "sleepy.py"), "sleepy")
    assert submitted.returncode == 0, submitted.stderr + stack.output()
    match = re.search(r"execution (ex-[0-9a-f]+)", submitted.stdout)
    assert match, submitted.stdout
    execution_id = match.group(1)

    def task_running() -> bool:
        with stack.client() as client:
            attempts = client.executions.get(execution_id).attempts
        return any(a.status == "RUNNING" for a in attempts) and any(
            runs_a_task(cmd) for cmd in descendants(stack.process.pid).values()
        )

    wait_until(task_running, timeout=120, message="the sleeping task runs")
    started = descendants(stack.process.pid)
    stack.seen.update(started)
    return execution_id, started


def assert_started_all_parts(started: dict[tuple[int, int], str]) -> None:
    commands = list(started.values())
    assert any("temporal" in cmd for cmd in commands), commands
    assert any("data_plane_agent" in cmd for cmd in commands), commands
    assert any(runs_a_task(cmd) for cmd in commands), commands


def assert_all_gone(started: dict[tuple[int, int], str], *, timeout: float) -> None:
    def gone() -> bool:
        return not any(alive(pid, t) for pid, t in started)

    try:
        wait_until(gone, timeout=timeout, message="dev up's processes end")
    except AssertionError:
        left = {pid: cmd for (pid, t), cmd in started.items() if alive(pid, t)}
        raise AssertionError(f"processes left behind: {left}") from None


def port_is_free(port: int) -> bool:
    return processes.free_port(port) == port


def test_dev_up_says_what_it_waits_for_and_how_to_sign_in(dev_up: DevUp) -> None:
    progress = dev_up.err_log.read_text()
    api_url = f"http://127.0.0.1:{dev_up.ports['api']}"
    expected = [
        f"starting the Fleetflow dev stack in {dev_up.home}",
        f"up on 127.0.0.1:{dev_up.ports['temporal']}",  # the Temporal server, of either kind
        f"database migrated: sqlite:///{dev_up.home / 'fleetflow.db'}",
        f"agent gRPC service listening on 127.0.0.1:{dev_up.ports['grpc']}",
        f"REST API listening on {api_url}",
        "agent registered for cluster 'local'",
    ]
    lines = progress.splitlines()
    found = [next((i for i, line in enumerate(lines) if text in line), -1) for text in expected]
    assert -1 not in found and found == sorted(found), progress  # each once ready, in order
    assert BANNER not in progress  # the banner is stdout's, the progress stderr's

    banner = dev_up.log.read_text()
    token = (dev_up.home / "admin-token").read_text().strip()
    assert (dev_up.home / "admin-token").stat().st_mode & 0o077 == 0
    assert f"dashboard    {api_url}/dashboard" in banner, banner
    assert f"web console  {api_url}/ui" in banner, banner
    assert f"admin token  {token}  (kept in {dev_up.home / 'admin-token'}" in banner, banner
    assert "✓" not in banner
    config = CliConfig.model_validate_json(dev_up.config.read_text())
    assert config.token == token  # the CLI is logged in as the same admin

    # What a user does with it: paste the token into the dashboard's form (which carries an
    # anti-forgery token; the browser adds its Origin).
    with httpx.Client(base_url=api_url, follow_redirects=True) as browser:
        form = browser.get("/dashboard")
        assert form.status_code == 401  # the sign-in form
        csrf = re.search(r'name=csrf value="([^"]+)"', form.text)
        assert csrf, form.text
        page = browser.post(
            "/dashboard/login",
            data={"token": token, "csrf": csrf.group(1)},
            headers={"Origin": api_url},
        )
    assert page.status_code == 200 and "Signed in as admin" in page.text, page.text


def test_dev_up_runs_a_workflow_and_ctrl_c_stops_everything(dev_up: DevUp) -> None:
    assert dev_up.api_url == f"http://127.0.0.1:{dev_up.ports['api']}"

    run = dev_up.cli("run", "--remote", str(EXAMPLES / "hello.py"), "hello_pipeline", "--n", "10")
    assert run.returncode == 0, run.stdout + run.stderr + dev_up.output()
    outputs = json.loads(run.stdout.strip().splitlines()[-1])  # last line: outputs as JSON
    assert "mse" in outputs["o0"] and outputs["o0"]["n_points"] == 10, run.stdout
    match = re.search(r"execution (ex-[0-9a-f]+)", run.stdout)
    assert match, run.stdout
    execution_id = match.group(1)

    listed = dev_up.cli("executions", "list")
    assert listed.returncode == 0, listed.stderr
    row = next((line for line in listed.stdout.splitlines() if execution_id in line), None)
    assert row is not None, listed.stdout  # the full id, never shortened
    assert "SUCCEEDED" in row and "hello.hello_pipeline" in row

    shown = dev_up.cli("executions", "get", execution_id)
    assert shown.returncode == 0, shown.stderr
    assert f"execution {execution_id} (hello.hello_pipeline) SUCCEEDED" in shown.stdout
    assert "n2-evaluate (attempt 1) SUCCEEDED on local" in shown.stdout
    assert '"n_points": 10' in shown.stdout

    missing = dev_up.cli("executions", "get", "ex-doesnotexist")
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: execution ex-doesnotexist not found"), missing.stderr
    assert "Traceback" not in missing.stderr

    _, started = start_sleeping_task(dev_up)
    assert_started_all_parts(started)

    os.kill(dev_up.process.pid, signal.SIGINT)
    try:
        code = dev_up.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"dev up still running 60s after SIGINT:\n{dev_up.output()}") from None
    assert code == 0, dev_up.output()
    assert "stopped the Fleetflow dev stack" in dev_up.log.read_text()
    assert_all_gone(started, timeout=10)
    for name, port in dev_up.ports.items():
        assert port_is_free(port), f"{name} port {port} still in use"
    # The agent stopped before the control plane, so its last report arrived.
    agent_log = (dev_up.home / "logs" / "agent.log").read_text()
    assert "could not be delivered" not in agent_log, agent_log[-3000:]


def test_sigkill_of_dev_up_still_takes_its_children_down(dev_up: DevUp) -> None:
    _, started = start_sleeping_task(dev_up)
    assert_started_all_parts(started)

    dev_up.process.send_signal(signal.SIGKILL)
    dev_up.process.wait(timeout=30)

    # Temporal and the agent get SIGTERM from the kernel (parent-death signal); the agent then
    # stops its task before it exits.
    assert_all_gone(started, timeout=60)
    for name, port in dev_up.ports.items():
        wait_until(lambda p=port: port_is_free(p), timeout=30, message=f"{name} port {port} free")


CHAIN_WORKFLOW = """
import os
import time
from pathlib import Path

from fleetflow import task, workflow


@task
def step(previous: int, index: int, marker_dir: str) -> int:
    markers = Path(marker_dir)
    first_run = not list(markers.glob(f"step-{index}.*.started"))
    (markers / f"step-{index}.{os.getpid()}.started").touch()
    # Step 2 naps long the first time, so the stack can be killed while it runs.
    time.sleep(600 if index == 2 and first_run else 0.5)
    (markers / f"step-{index}.{os.getpid()}.done").touch()
    return previous * 10 + index


@workflow
def chain(marker_dir: str) -> int:
    one = step(previous=0, index=1, marker_dir=marker_dir)
    two = step(previous=one, index=2, marker_dir=marker_dir)
    return step(previous=two, index=3, marker_dir=marker_dir)
"""


def test_an_execution_survives_a_sigkill_of_dev_up_and_a_restart(
    tmp_path: Path, exchange_dir: Path
) -> None:
    """The embedded Temporal server keeps workflows in memory: after `kill -9` of dev up and a
    new `dev up` on the same home, the execution's workflow is resumed from the attempts on
    record. Step 1 is not run again; step 2, killed mid-run, runs again once; step 3 runs once;
    the execution succeeds."""
    markers = exchange_dir  # written by the tasks, users of their own
    home = tmp_path / "home"
    for directory in (tmp_path / "first", tmp_path / "second"):
        directory.mkdir()

    def count(index: int, kind: str) -> int:
        return len(list(markers.glob(f"step-{index}.*.{kind}")))

    with start_dev_up(tmp_path / "first", home=home) as first:
        code = first.workdir / "chain"
        code.mkdir()
        (code / "chain.py").write_text(CHAIN_WORKFLOW)
        submitted = first.cli(
            "run", "--remote", "--no-wait", str(code / "chain.py"), "chain",
            "--marker-dir", str(markers),
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr + first.output()
        match = re.search(r"execution (ex-[0-9a-f]+)", submitted.stdout)
        assert match, submitted.stdout
        execution_id = match.group(1)
        wait_until(lambda: count(2, "started") == 1, timeout=180, message="step 2 starts")
        first.seen.update(descendants(first.process.pid))
        os.killpg(first.process.pid, signal.SIGKILL)  # dev up and everything in its group
        first.process.wait(timeout=30)
        assert_all_gone(first.seen, timeout=60)

    with start_dev_up(tmp_path / "second", home=home) as second, second.client() as client:
        final = client.wait_for_execution(execution_id, timeout=300)
        assert final.status == "SUCCEEDED", f"{final.error}\n{second.output()}"
        assert final.outputs == {"o0": 123}
    assert (count(1, "started"), count(1, "done")) == (1, 1), "step 1 ran again"
    assert (count(2, "started"), count(2, "done")) == (2, 1)
    assert (count(3, "started"), count(3, "done")) == (1, 1)
