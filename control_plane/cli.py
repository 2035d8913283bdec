"""`fleetflow control-plane …`: run the control plane's processes and migrate its database."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import typer

from control_plane.settings import Settings
from fleetflow import logs as fleetflow_logs
from fleetflow.child_processes import die_with_parent_if_asked
from fleetflow.errors import FleetflowError

if TYPE_CHECKING:
    from control_plane.server import Parts

app = typer.Typer(
    help="Run the control plane (REST API, agent gRPC service, Temporal worker).",
    no_args_is_help=True,
)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _check_log_level(value: str) -> str:
    if value.upper() not in LOG_LEVELS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
    return value.upper()


def log_level_option(default: str) -> Any:
    """The `--log-level` option every long-running command shares."""
    return typer.Option(
        default,
        "--log-level",
        help=f"Log verbosity: {', '.join(LOG_LEVELS)}.",
        callback=_check_log_level,
    )


def configure_logging(level: str = "INFO") -> None:
    """Logs to stderr at `level`, as text or JSON (`FLEETFLOW_LOG_FORMAT`), secrets redacted."""
    fleetflow_logs.configure_logging(level)


def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `main(stop)` and set `stop` on SIGINT/SIGTERM, so shutdown is always orderly."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())


@app.command()
def migrate(
    database_url: str = typer.Option(
        None,
        "--database-url",
        envvar="FLEETFLOW_DATABASE_URL",
        help="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user:pw@host/db.",
        show_default=False,
    ),
) -> None:
    """Create or upgrade the database schema (alembic migrations)."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

    from control_plane.db.migrate import upgrade_database

    url = database_url or Settings().database.url
    try:
        upgrade_database(url)
    except OperationalError as exc:
        reason = " ".join(str(exc.orig or exc).split())
        raise FleetflowError(f"cannot migrate the database at {_redact(url)}: {reason}") from None
    except (ArgumentError, NoSuchModuleError) as exc:
        raise FleetflowError(
            f"invalid database URL {_redact(url)}: {exc}; expected e.g. sqlite:///path or "
            "postgresql+psycopg://user:pw@host/db"
        ) from None
    typer.echo(f"database is at the latest schema: {_redact(url)}")


@app.command()
def serve(
    with_worker: bool = typer.Option(
        False, "--with-worker", help="Also run the Temporal worker in this process (dev)."
    ),
    log_level: str = log_level_option("INFO"),
) -> None:
    """Serve the REST API and the agent gRPC service (configured by FLEETFLOW_* variables)."""
    from control_plane.server import Parts

    configure_logging(log_level)
    _run_parts(Settings(), Parts(api=True, grpc=True, worker=with_worker))


@app.command()
def worker(log_level: str = log_level_option("INFO")) -> None:
    """Run the Temporal worker that drives executions."""
    from control_plane.server import Parts

    configure_logging(log_level)
    _run_parts(Settings(), Parts(api=False, grpc=False, worker=True))


def _run_parts(settings: Settings, parts: Parts) -> None:
    from control_plane.server import run_control_plane

    # Started by `fleetflow dev up` or a test harness: do not outlive it.
    die_with_parent_if_asked()
    try:
        run_until_signalled(lambda stop: run_control_plane(settings, parts, stop, freeze_heap=True))
    except RuntimeError as exc:
        # temporalio's connection error; the first line is the useful part.
        if not str(exc).startswith("Failed client connect"):
            raise
        reason = str(exc).split(": tonic::", 1)[0]
        raise FleetflowError(
            f"cannot connect to Temporal at {settings.temporal.address} "
            f"(FLEETFLOW_TEMPORAL_ADDRESS): {reason}"
        ) from None


def _redact(url: str) -> str:
    """Hide a password in a database URL before printing it."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # not a URL: still hide whatever precedes a host
        return repr(f"***@{url.rsplit('@', 1)[1]}" if "@" in url else url)
