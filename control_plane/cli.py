"""`fleetflow control-plane …`: run the control plane's processes and migrate its database."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

import typer

from control_plane.settings import Settings
from fleetflow.errors import FleetflowError

app = typer.Typer(help="Run the control plane (REST API, agent gRPC service, Temporal worker).")


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # Temporal's SDK is chatty at INFO about worker internals.
    logging.getLogger("temporalio").setLevel(logging.WARNING)


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
        None, "--database-url", envvar="FLEETFLOW_DATABASE_URL", help="SQLAlchemy URL"
    ),
) -> None:
    """Create or upgrade the database schema (alembic migrations)."""
    from control_plane.db.migrate import upgrade_database

    from sqlalchemy.exc import OperationalError

    url = database_url or Settings().database.url
    try:
        upgrade_database(url)
    except OperationalError as exc:
        reason = " ".join(str(exc.orig or exc).split())
        raise FleetflowError(f"cannot migrate the database at {_redact(url)}: {reason}") from None
    typer.echo(f"database is at the latest schema: {_redact(url)}")


@app.command()
def serve(
    with_worker: bool = typer.Option(
        False, "--with-worker", help="Also run the Temporal worker in this process (dev)."
    ),
    log_level: str = typer.Option("INFO", "--log-level"),
) -> None:
    """Serve the REST API and the agent gRPC service."""
    from control_plane.server import Parts, run_control_plane

    configure_logging(log_level)
    settings = Settings()
    parts = Parts(api=True, grpc=True, worker=with_worker)
    run_until_signalled(lambda stop: run_control_plane(settings, parts, stop))


@app.command()
def worker(log_level: str = typer.Option("INFO", "--log-level")) -> None:
    """Run the Temporal worker that drives executions."""
    from control_plane.server import Parts, run_control_plane

    configure_logging(log_level)
    settings = Settings()
    parts = Parts(api=False, grpc=False, worker=True)
    run_until_signalled(lambda stop: run_control_plane(settings, parts, stop))


def _redact(url: str) -> str:
    """Hide a password in a database URL before printing it."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
