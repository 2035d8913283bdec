"""Throw-away PostgreSQL servers for tests and local development.

Fleetflow runs on SQLite and PostgreSQL alike, and the PostgreSQL tier must run wherever the
tests run, without Docker. This module uses Debian's `postgresql` package: it finds `initdb`
and `pg_ctl` (installing the package with apt-get when missing and running as root), creates a
cluster in a temporary directory, starts it on a free loopback port, and deletes everything
when stopped.

As a module (tests/conftest.py)::

    server = start_postgres()
    url = server.url()                      # postgresql+psycopg://…@127.0.0.1:PORT/fleetflow
    other = server.create_database("t_1")  # one more empty database on the same server
    server.stop()                           # and its files are gone

As a command::

    python infra/scripts/postgres.py            # start one, print its URL, stop on Ctrl-C
    python infra/scripts/postgres.py --install  # only make sure the binaries are installed
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_process import free_port, guard_server, serve_until_stopped  # noqa: E402
from tooling import Reporter, apt_get_install, can_apt_get_install, exit_status  # noqa: E402

_report = Reporter("postgres")
_say, _loud = _report.say, _report.loud

DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
SERVICE_USER = "postgres"  # created by Debian's postgresql package
SUPERUSER = "fleetflow"
DEFAULT_DATABASE = "fleetflow"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresUnavailableError(RuntimeError):
    """PostgreSQL cannot be installed or started on this machine; the message says why."""


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    version = bin_dir.parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def find_postgres_bin_dir() -> Path | None:
    """The newest directory holding both `initdb` and `pg_ctl`, or None.

    Debian installs them outside PATH (`/usr/lib/postgresql/<major>/bin`); other systems put
    them on PATH.
    """
    candidates = [
        d
        for d in Path("/").glob(DEBIAN_BIN_GLOB.lstrip("/"))
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file()
    ]
    if candidates:
        return max(candidates, key=_version_key)
    initdb = shutil.which("initdb")
    if initdb and (Path(initdb).parent / "pg_ctl").is_file():
        return Path(initdb).parent
    return None


def ensure_postgres_installed() -> Path:
    """Return the binaries' directory, installing Debian's `postgresql` package if needed.

    Raises:
        PostgresUnavailableError: the binaries are missing and cannot be installed here
            (not root, no apt-get, or the installation failed).
    """
    found = find_postgres_bin_dir()
    if found is not None:
        return found
    if not can_apt_get_install():
        raise PostgresUnavailableError(
            "PostgreSQL binaries (initdb, pg_ctl) were not found and cannot be installed "
            "automatically (needs root and apt-get). Install them with "
            "`sudo apt-get install -y postgresql`."
        )
    _loud(
        "PostgreSQL is not installed. INSTALLING IT NOW with "
        "`apt-get update && apt-get install -y postgresql` (system-wide, as root) so that "
        "the PostgreSQL test tier can run."
    )
    apt_get_install(["postgresql"], PostgresUnavailableError)
    found = find_postgres_bin_dir()
    if found is None:
        raise PostgresUnavailableError(
            "apt-get installed `postgresql` but initdb/pg_ctl are still not found under "
            f"{DEBIAN_BIN_GLOB}"
        )
    _say(f"installed PostgreSQL binaries in {found}")
    return found


@dataclass
class PostgresServer:
    """A running throw-away server. `stop()` shuts it down and deletes its files."""

    bin_dir: Path
    base_dir: Path
    port: int
    password: str
    run_as: str | None  # the OS user the server runs as when we are root
    database: str = DEFAULT_DATABASE
    _stopped: bool = field(default=False, repr=False)
    # pg_ctl daemonizes the server: this child of ours stops it if we die without `stop()`.
    _guard: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "server.log"

    def url(self, database: str | None = None) -> str:
        """SQLAlchemy URL of `database` (default: the one created at start)."""
        name = database or self.database
        return f"postgresql+psycopg://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{name}"

    def _admin_execute(self, statement: str) -> None:
        import psycopg  # the server extra's driver; imported late so --install works without it

        conninfo = (
            f"host=127.0.0.1 port={self.port} user={SUPERUSER} "
            f"password={self.password} dbname=postgres"
        )
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(statement)

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        _check_identifier(name)
        self._admin_execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever still uses it."""
        _check_identifier(name)
        self._admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop the server (immediately: its data is thrown away) and delete its directory."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if (self.data_dir / "postmaster.pid").exists():
                _run(
                    self,
                    [
                        str(self.bin_dir / "pg_ctl"),
                        "-D",
                        str(self.data_dir),
                        "-m",
                        "immediate",
                        "-w",
                        "stop",
                    ],
                    check=False,
                )
        finally:
            if self._guard is not None:
                self._guard.kill()
                self._guard.wait()
            shutil.rmtree(self.base_dir, ignore_errors=True)


def _check_identifier(name: str) -> None:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"invalid database name {name!r}: use lowercase letters, digits and _")


def _run(server: PostgresServer, argv: Sequence[str], *, check: bool = True) -> str:
    """Run a PostgreSQL tool as the server's OS user (initdb and postgres refuse root)."""
    command = list(argv)
    if server.run_as is not None:
        command = ["runuser", "-u", server.run_as, "--", *command]
    result = subprocess.run(
        command, cwd=server.base_dir, capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        log = (
            server.log_file.read_text(errors="replace")[-3000:] if server.log_file.exists() else ""
        )
        raise PostgresUnavailableError(
            f"`{' '.join(command)}` failed with exit code {result.returncode}:\n"
            f"{result.stdout[-2000:]}{result.stderr[-2000:]}\n{log}"
        )
    return result.stdout


def _service_user() -> str | None:
    """None when we may run the server ourselves; the `postgres` user when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise PostgresUnavailableError(
            f"running as root, but there is no `{SERVICE_USER}` system user to run PostgreSQL "
            "as (initdb refuses root). Debian's `postgresql` package creates it."
        ) from None
    return SERVICE_USER


def start_postgres(database: str = DEFAULT_DATABASE, *, attempts: int = 3) -> PostgresServer:
    """Create and start a throw-away server with one empty database; the caller stops it.

    Raises:
        PostgresUnavailableError: PostgreSQL cannot be installed or started here.
    """
    _check_identifier(database)
    bin_dir = ensure_postgres_installed()
    run_as = _service_user()
    base_dir = Path(tempfile.mkdtemp(prefix="fleetflow-pg-"))
    server = PostgresServer(
        bin_dir=bin_dir,
        base_dir=base_dir,
        port=0,
        password=secrets.token_hex(16),
        run_as=run_as,
        database=database,
    )
    try:
        pwfile = base_dir / "pwfile"
        pwfile.write_text(server.password + "\n")
        if run_as is not None:
            user = pwd.getpwnam(run_as)
            for path in (base_dir, pwfile):
                os.chown(path, user.pw_uid, user.pw_gid)
        _run(
            server,
            [
                str(bin_dir / "initdb"),
                "-D",
                str(server.data_dir),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
        )
        pwfile.unlink()
        # Another process may take the port between choosing and binding it: retry.
        for attempt in range(1, attempts + 1):
            server.port = free_port()
            options = (
                f"-p {server.port} -h 127.0.0.1 -k {base_dir} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                _run(
                    server,
                    [
                        str(bin_dir / "pg_ctl"),
                        "-D",
                        str(server.data_dir),
                        "-l",
                        str(server.log_file),
                        "-o",
                        options,
                        "-w",
                        "-t",
                        "60",
                        "start",
                    ],
                )
                break
            except PostgresUnavailableError:
                if attempt == attempts:
                    raise
        postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])
        server._guard = guard_server(postmaster, signal.SIGQUIT)  # SIGQUIT: immediate shutdown
        server.create_database(database)
    except BaseException:
        server.stop()
        raise
    return server


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--database", default=DEFAULT_DATABASE, help="database to create")
    parser.add_argument(
        "--install", action="store_true", help="only install the binaries if missing, then exit"
    )
    args = parser.parse_args(argv)
    if args.install:
        return exit_status(
            lambda: _say(f"PostgreSQL binaries in {ensure_postgres_installed()}"),
            PostgresUnavailableError,
            _report,
        )
    return exit_status(lambda: _serve(args.database), PostgresUnavailableError, _report)


def _serve(database: str) -> None:
    server = start_postgres(database)
    serve_until_stopped(
        server,
        printed=server.url() + "\n",
        note=f"running on 127.0.0.1:{server.port} (data in {server.base_dir}); Ctrl-C stops",
        report=_report,
    )


if __name__ == "__main__":
    sys.exit(main())
