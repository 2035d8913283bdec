"""`fleetflow dev up`: the whole platform on one machine, in the foreground.

Temporal (dev or test server), the control plane on SQLite with its worker, a local blob
directory and one local-process agent. It says on stderr what it waits for, one line per part
as it becomes ready, then prints on stdout where everything listens and the admin token that
signs in to the dashboard (the CLI is logged in already). Ctrl-C stops everything; children
die with us even if we are killed, because each is started with a parent-death signal in its
own process group.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from sqlalchemy.orm import Session, sessionmaker

from control_plane import processes
from control_plane.auth.rbac import Authorizer
from control_plane.bootstrap import (
    bootstrap_local_cluster,
    ensure_platform_admin,
    write_secret_file,
)
from control_plane.cli import configure_logging, log_level_option, run_until_signalled
from control_plane.db.models import utcnow
from control_plane.db.repositories import clusters as clusters_repo
from control_plane.settings import (
    ApiSettings,
    BlobSettings,
    DatabaseSettings,
    GrpcSettings,
    Settings,
    TemporalSettings,
)
from fleetflow.config import CliConfig, save_cli_config
from fleetflow.errors import FleetflowError
from fleetflow.timestamps import as_utc

app = typer.Typer(help="Run the embedded Fleetflow stack for development.", no_args_is_help=True)
console = Console(soft_wrap=True)
# Start-up progress goes to stderr: stdout carries the banner, for whoever reads it.
progress_console = Console(stderr=True, soft_wrap=True)
log = logging.getLogger(__name__)

LOCAL_CLUSTER = "local"
DEFAULT_HOME = Path.home() / ".fleetflow" / "dev"
TEMPORAL_START_SECONDS = 60
AGENT_REGISTER_SECONDS = 60


class DevStackError(FleetflowError):
    """The embedded stack cannot start, or a part of it stopped on its own."""


@app.command()
def up(
    home: Path = typer.Option(
        DEFAULT_HOME, "--home", help="State directory: database, blobs, logs, agent work dir."
    ),
    api_port: int = typer.Option(
        8080, "--api-port", help="REST API port; another free one if it is busy."
    ),
    grpc_port: int = typer.Option(
        9090, "--grpc-port", help="Agent gRPC port; another free one if it is busy."
    ),
    temporal_port: int = typer.Option(
        7233, "--temporal-port", help="Temporal port; another free one if it is busy."
    ),
    log_level: str = log_level_option("WARNING"),
) -> None:
    """Start Temporal, the control plane and a local agent; Ctrl-C stops them all."""
    configure_logging(log_level)
    home = home.expanduser().resolve()
    ports = _choose_ports(
        [
            ("api", api_port, "--api-port", "the REST API"),
            ("grpc", grpc_port, "--grpc-port", "the agent gRPC service"),
            ("temporal", temporal_port, "--temporal-port", "Temporal"),
        ]
    )
    try:
        temporal_argv, temporal_kind = processes.temporal_server_command(ports["temporal"], home)
    except FileNotFoundError as exc:
        raise DevStackError(f"cannot start the dev stack: {exc}") from None
    # The database, blobs and admin token are the stack's: no other user (tasks run as users of
    # their own) may read them.
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    if home.stat().st_mode & 0o077:
        log.warning(
            "other users can read the dev stack's state in %s (its database, blobs and admin "
            "token): chmod 700 it",
            home,
        )
    settings = stack_settings(home, ports, temporal_kind)
    progress_console.print(
        f"starting the Fleetflow dev stack in {home}: Temporal, the database, the control plane "
        "(REST API, agent gRPC service, Temporal worker) and a local agent …",
        highlight=False,
    )
    run_until_signalled(
        lambda stop: _run_stack(settings, home, (temporal_argv, temporal_kind), stop)
    )


def stack_settings(home: Path, ports: dict[str, int], temporal_kind: str) -> Settings:
    """The control plane's settings in the dev stack, on the ports `_choose_ports` chose."""
    return Settings(
        database=DatabaseSettings(url=f"sqlite:///{home / 'fleetflow.db'}"),
        temporal=TemporalSettings(
            address=f"127.0.0.1:{ports['temporal']}",
            # The worker keeps workflows in memory instead of replaying each history at every
            # step, so a step costs the same early and late in a long chain. The test server
            # never hands a replaced worker's workflows to the next one: they are restarted
            # from the database instead (services/sticky_recovery.py).
            max_cached_workflows=1000,
            sticky_recovery=temporal_kind == processes.TEMPORAL_TEST_SERVER,
        ),
        blob=BlobSettings(root=(home / "blobs").as_uri()),
        api=ApiSettings(port=ports["api"]),
        grpc=GrpcSettings(port=ports["grpc"]),
    )


def _choose_ports(wanted: list[tuple[str, int, str, str]]) -> dict[str, int]:
    """Each part's port: the one asked for when it is free, else any free one, said aloud."""
    chosen: dict[str, int] = {}
    options: dict[int, str] = {}
    for key, port, option, what in wanted:
        actual = processes.free_port(port) if port not in options else 0
        while actual == 0 or actual in options:
            actual = processes.free_port()
        if actual != port:
            why = f"goes to {options[port]}" if port in options else "is busy"
            console.print(
                f"[yellow]port {port} ({option}) {why}; {what} uses port {actual}[/yellow]",
                highlight=False,
            )
        chosen[key] = actual
        options[actual] = option
    return chosen


async def _run_stack(
    settings: Settings, home: Path, temporal_command: tuple[list[str], str], stop: asyncio.Event
) -> None:
    from control_plane.db.migrate import upgrade_database
    from control_plane.db.session import make_engine, make_session_factory
    from control_plane.server import Parts, run_control_plane

    logs = home / "logs"
    temporal_argv, temporal_kind = temporal_command
    temporal_port = int(settings.temporal.address.rsplit(":", 1)[1])
    progress = StartupProgress(progress_console)
    temporal = processes.spawn(temporal_argv, log_file=logs / "temporal.log", native=True)
    agent: subprocess.Popen[bytes] | None = None
    # Its own stop event: on the way down the agent goes first, while the control plane can
    # still take its last reports.
    control_plane_stop = asyncio.Event()
    control_plane: asyncio.Task[None] | None = None
    failure: str | None = None
    try:
        progress.waiting(f"the Temporal server on {settings.temporal.address}")
        await _wait_for_temporal(temporal, temporal_port, logs / "temporal.log")
        progress.ready(f"{temporal_kind} up on {settings.temporal.address}")
        progress.waiting("the database migrations")
        await asyncio.to_thread(upgrade_database, settings.database.url)
        progress.ready(f"database migrated: {settings.database.url}")
        engine = make_engine(settings.database.url)
        sessions = make_session_factory(engine)
        try:
            token = bootstrap_local_cluster(
                sessions,
                tenant=settings.api.default_tenant,
                cluster=LOCAL_CLUSTER,
                labels={"executor": "local-process"},
            )
            admin_token = _admin_token(sessions, settings, home)

            started = asyncio.Event()
            control_plane = asyncio.create_task(
                run_control_plane(settings, Parts(), control_plane_stop, started, freeze_heap=True),
                name="control-plane",
            )
            grpc_address = f"127.0.0.1:{settings.grpc.port}"
            progress.waiting(f"the agent gRPC service on {grpc_address}")
            await _until_started(
                control_plane, _port_accepts("127.0.0.1", settings.grpc.port), "agent gRPC service"
            )
            progress.ready(f"agent gRPC service listening on {grpc_address}")
            api_url = f"http://127.0.0.1:{settings.api.port}"
            progress.waiting(f"the REST API on {api_url}")
            await _until_started(control_plane, started.wait(), "REST API")
            progress.ready(f"REST API listening on {api_url} (with the Temporal worker)")
            # Spawned from this thread on purpose: the parent-death signal fires when the thread
            # that started a child ends, and this one lives as long as the stack.
            agent_spawned_at = utcnow()
            agent = processes.spawn(
                [
                    sys.executable,
                    "-m",
                    "data_plane_agent",
                    "run",
                    "--control-plane",
                    grpc_address,
                    "--work-dir",
                    str(home / "agent"),
                ],
                log_file=logs / "agent.log",
                env={"FLEETFLOW_AGENT_TOKEN": token},
            )
            progress.waiting(f"the local agent to register for cluster '{LOCAL_CLUSTER}'")
            await _wait_for_agent(
                sessions, agent, control_plane, agent_spawned_at, logs / "agent.log"
            )
            progress.ready(f"agent registered for cluster '{LOCAL_CLUSTER}' (local-process)")
        finally:
            progress.close()
            engine.dispose()
        config_path = save_cli_config(CliConfig(api_url=api_url, token=admin_token))
        _print_banner(settings, temporal_kind, api_url, config_path, logs, home, admin_token)
        failure = await _watch_children(
            stop, control_plane, {"Temporal": temporal, "agent": agent}, logs
        )
    finally:
        progress.close()
        stop.set()
        if agent is not None:
            await asyncio.to_thread(processes.stop, agent)
        control_plane_stop.set()
        if control_plane is not None:
            await asyncio.wait([control_plane])
        await asyncio.to_thread(processes.stop, temporal)
        console.print("stopped the Fleetflow dev stack")
    if control_plane is not None:
        control_plane.result()  # the control plane's own error, if it had one
    if failure:
        raise DevStackError(failure)


class StartupProgress:
    """What `dev up` waits for: one line on stderr as each part becomes ready, with the time
    since the start; on a terminal, also a spinner naming the part it is waiting for."""

    def __init__(self, out: Console) -> None:
        self._out = out
        self._began = time.monotonic()
        self._status = out.status("", spinner="dots") if out.is_terminal else None
        self._spinning = False

    def waiting(self, what: str) -> None:
        if self._status is None:
            return
        self._status.update(f"waiting for {what} …")
        if not self._spinning:
            self._status.start()
            self._spinning = True

    def ready(self, what: str) -> None:
        elapsed = time.monotonic() - self._began
        self._out.print(f"  [green]✓[/green] {what}  [dim]({elapsed:.1f}s)[/dim]", highlight=False)

    def close(self) -> None:
        if self._status is not None and self._spinning:
            self._status.stop()
            self._spinning = False


async def _until_started(
    control_plane: asyncio.Task[None], ready: Coroutine[Any, Any, object], what: str
) -> None:
    """Wait for `ready`, or raise the control plane's error if it stops first."""
    waiting = asyncio.ensure_future(ready)
    await asyncio.wait([control_plane, waiting], return_when=asyncio.FIRST_COMPLETED)
    if waiting.done():
        waiting.result()
        return
    waiting.cancel()
    control_plane.result()  # start-up failed: raise its error
    raise DevStackError(f"the control plane stopped before its {what} was up")


async def _port_accepts(host: str, port: int) -> None:
    """Return once something accepts TCP connections on host:port."""
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return


async def _wait_for_agent(
    sessions: sessionmaker[Session],
    agent: subprocess.Popen[bytes],
    control_plane: asyncio.Task[None],
    since: datetime,
    log_file: Path,
) -> None:
    """Wait until the local cluster's agent has registered (its first heartbeat after
    `since`); raise if it or the control plane exits, or after AGENT_REGISTER_SECONDS."""

    def registered() -> bool:
        with sessions() as session:
            cluster = clusters_repo.get_cluster_by_name(session, LOCAL_CLUSTER)
            seen = cluster.last_heartbeat_at if cluster is not None else None
            return seen is not None and as_utc(seen) >= since

    deadline = time.monotonic() + AGENT_REGISTER_SECONDS
    while not await asyncio.to_thread(registered):
        if control_plane.done():
            control_plane.result()  # its error
            raise DevStackError("the control plane stopped while the agent registered")
        code = agent.poll()
        if code is not None:
            raise DevStackError(f"the agent exited during start-up (code {code}); see {log_file}")
        if time.monotonic() > deadline:
            raise DevStackError(
                f"the agent did not register within {AGENT_REGISTER_SECONDS}s; see {log_file}"
            )
        await asyncio.sleep(0.1)


async def _wait_for_temporal(temporal: subprocess.Popen[bytes], port: int, log_file: Path) -> None:
    try:
        await asyncio.to_thread(
            processes.wait_for_port,
            "127.0.0.1",
            port,
            timeout=TEMPORAL_START_SECONDS,
            process=temporal,
        )
    except RuntimeError:
        raise DevStackError(
            f"the Temporal server exited during start-up (code {temporal.returncode}); "
            f"see {log_file}"
        ) from None
    except TimeoutError:
        raise DevStackError(
            f"the Temporal server did not listen on port {port} within "
            f"{TEMPORAL_START_SECONDS}s; see {log_file}"
        ) from None


async def _watch_children(
    stop: asyncio.Event,
    control_plane: asyncio.Task[None],
    children: dict[str, subprocess.Popen[bytes]],
    logs: Path,
) -> str | None:
    """Return on Ctrl-C (None), or with what went wrong when a part of the stack dies."""
    while not stop.is_set() and not control_plane.done():
        for name, child in children.items():
            code = child.poll()
            if code is not None:
                console.print(f"[red]{name} exited with code {code}; stopping the stack.[/red]")
                return f"{name} exited on its own with code {code}; see {logs}"
        try:
            await asyncio.wait_for(stop.wait(), timeout=1)
        except TimeoutError:
            pass
    return None


def _print_banner(
    settings: Settings,
    temporal_kind: str,
    api_url: str,
    config_path: Path,
    logs: Path,
    home: Path,
    admin_token: str | None,
) -> None:
    console.print("[bold green]Fleetflow dev stack is up[/bold green]")
    console.print(f"  REST API     {api_url}  (OpenAPI: {api_url}/docs)", highlight=False)
    console.print(f"  web console  {api_url}/ui  (sign in with an API token)", highlight=False)
    # As `prefect server start` and `temporal server start-dev` do: what signs you in, shown
    # to whoever started the stack. The dashboard's form takes the token; a link carrying it
    # would leave it in the browser's history and in access logs.
    token_file = home / "admin-token"
    if admin_token is not None:
        console.print(
            f"  dashboard    {api_url}/dashboard  (sign in with the admin token below)",
            highlight=False,
        )
        console.print(
            f"  admin token  {admin_token}  (kept in {token_file}, readable by you only)",
            highlight=False,
        )
    else:
        console.print(
            f"  dashboard    {api_url}/dashboard  (sign in with an API token of yours: "
            f"{token_file} is missing)",
            highlight=False,
        )
    console.print(f"  agent gRPC   127.0.0.1:{settings.grpc.port}", highlight=False)
    console.print(f"  Temporal     {settings.temporal.address}  ({temporal_kind})", highlight=False)
    console.print(f"  database     {settings.database.url}", highlight=False)
    console.print(f"  blob store   {settings.blob.root}", highlight=False)
    console.print(f"  agent        cluster '{LOCAL_CLUSTER}', local-process executor")
    console.print(f"  logs         {logs}", highlight=False)
    console.print(
        f"  CLI config   {config_path}  (logged in as the platform admin 'admin')",
        highlight=False,
    )
    console.print(
        "Try: fleetflow run --remote examples/hello.py hello_pipeline   (Ctrl-C stops)",
        highlight=False,
    )


def _admin_token(sessions: sessionmaker[Session], settings: Settings, home: Path) -> str | None:
    """The platform admin's token for the CLI config: created on the stack's first start and
    kept in `<home>/admin-token` (0600) for the next ones."""
    path = home / "admin-token"
    token = ensure_platform_admin(
        sessions, Authorizer(sessions.kw["bind"]), tenant=settings.api.default_tenant
    )
    if token is not None:
        write_secret_file(path, token)
        return token
    if path.is_file():
        return path.read_text().strip() or None
    console.print(
        f"[yellow]warning:[/] {path} is missing: the CLI has no admin token for this stack "
        "(`fleetflow login` with a token of yours, or delete the stack's home to start over)",
        highlight=False,
    )
    return None
