"""The lifecycle of a throw-away native server that a tooling script runs for tests and
development: free loopback ports, a process group of its own that dies with this process, a wait
until it answers, a group-wide stop, and the foreground mode of the script's command.

PostgreSQL (`postgres.py`, a daemon `pg_ctl` starts), the S3 server (`s3_server.py`) and
Temporal (`temporal.py`) each run such a server; this module is that lifecycle once. The scripts
put this folder on `sys.path` to import it, as they do `tooling`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from tooling import Reporter


def free_ports(count: int) -> list[int]:
    """Distinct TCP ports on 127.0.0.1 that were free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return free_ports(1)[0]


def spawn_server(
    argv: list[str], *, log: IO[bytes] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a native server in a process group of its own, its output (stdout and stderr) to
    `log`, that dies with this process (SIGTERM through the parent-death signal), even when the
    test run is killed."""
    from fleetflow.child_processes import die_with_parent_argv, parent_env

    return subprocess.Popen(
        die_with_parent_argv(argv),
        env={**os.environ, **parent_env()},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def guard_server(pid: int, sig: signal.Signals) -> subprocess.Popen[bytes]:
    """For a server that daemonized itself: a guard child that sends it `sig` when this process
    dies, and exits by itself once the server has."""
    from fleetflow.child_processes import guard_argv, parent_env

    return subprocess.Popen(
        guard_argv(pid, sig),
        env={**os.environ, **parent_env()},
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


@dataclass(kw_only=True)
class ServerProcess:
    """A server run as a child of this process, in a process group of its own, its output
    appended to `log_file`. It may be killed and spawned again."""

    name: str  # for messages: "SeaweedFS", "the Temporal server"
    log_file: Path
    process: subprocess.Popen[bytes] | None = None

    def spawn(self, argv: list[str], *, cwd: Path | None = None) -> None:
        """Start it, after a line in the log naming the command."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            log.write(f"--- starting: {' '.join(argv)}\n".encode())
            log.flush()
            self.process = spawn_server(argv, log=log, cwd=cwd)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self) -> str:
        if not self.log_file.exists():
            return ""
        return self.log_file.read_text(errors="replace")[-4000:]

    def wait_until_answering(
        self,
        answers: Callable[[], bool],
        *,
        deadline: float,
        interval: float,
        unavailable: type[Exception],
    ) -> None:
        """Call `answers` every `interval` seconds until it returns True (an exception it raises
        means: not yet).

        Raises:
            unavailable: the server exited, or did not answer by `deadline` (a
                `time.monotonic()` value); the message has the end of its log.
        """
        assert self.process is not None, "spawn it first"
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise unavailable(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                if answers():
                    return
            except Exception as exc:  # not up yet: connection refused, 503, ...
                last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(interval)
        raise unavailable(f"{self.name} did not answer in time ({last_error}):\n{self.log_tail()}")

    def kill(self, sig: signal.Signals = signal.SIGKILL, *, timeout: float = 30) -> None:
        """Send `sig` to the server's process group and wait for it to exit (SIGKILL after
        `timeout`), then SIGKILL whatever it left in its group."""
        process = self.process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


class Stoppable(Protocol):
    def stop(self) -> None: ...


def serve_until_stopped(server: Stoppable, *, printed: str, note: str, report: Reporter) -> None:
    """A script's foreground mode: print `printed` on stdout (what a caller reads), say `note`
    on stderr, then wait for Ctrl-C or SIGTERM, and stop `server` however this ends."""
    try:
        sys.stdout.write(printed)
        sys.stdout.flush()
        report.say(note)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    finally:
        server.stop()
