"""`fleetflow dev up`: the whole platform on one machine, in the foreground.

Temporal (dev or test server), the control plane on SQLite with its worker, a local blob
directory and one local-process agent. Ctrl-C stops everything; children die with us even if we
are killed, because each is started with a parent-death signal in its own process group.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import typer
from rich.console import Console

from control_plane import processes
from control_plane.bootstrap import bootstrap_local_cluster
from control_plane.cli import configure_logging, run_until_signalled
from control_plane.settings import (
    ApiSettings,
    BlobSettings,
    DatabaseSettings,
    GrpcSettings,
    Settings,
    TemporalSettings,
)
from fleetflow.config import CliConfig, save_cli_config

app = typer.Typer(help="Run the embedded Fleetflow stack for development.")
console = Console()
log = logging.getLogger(__name__)

LOCAL_CLUSTER = "local"
DEFAULT_HOME = Path.home() / ".fleetflow" / "dev"


@app.command()
def up(
    home: Path = typer.Option(DEFAULT_HOME, "--home", help="Where the stack keeps its state."),
    api_port: int = typer.Option(8080, "--api-port", help="REST API port (another if busy)."),
    grpc_port: int = typer.Option(9090, "--grpc-port", help="Agent gRPC port (another if busy)."),
    temporal_port: int = typer.Option(
        7233, "--temporal-port", help="Temporal port (another if busy)."
    ),
    log_level: str = typer.Option("WARNING", "--log-level"),
) -> None:
    """Start Temporal, the control plane and a local agent; Ctrl-C stops them all."""
    configure_logging(log_level)
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    ports = {
        "api": processes.free_port(api_port),
        "grpc": processes.free_port(grpc_port),
        "temporal": processes.free_port(temporal_port),
    }
    settings = Settings(
        database=DatabaseSettings(url=f"sqlite:///{home / 'fleetflow.db'}"),
        temporal=TemporalSettings(address=f"127.0.0.1:{ports['temporal']}"),
        blob=BlobSettings(root=(home / "blobs").as_uri()),
        api=ApiSettings(port=ports["api"]),
        grpc=GrpcSettings(port=ports["grpc"]),
    )
    run_until_signalled(lambda stop: _run_stack(settings, home, stop))


async def _run_stack(settings: Settings, home: Path, stop: asyncio.Event) -> None:
    from control_plane.db.migrate import upgrade_database
    from control_plane.db.session import make_engine, make_session_factory
    from control_plane.server import Parts, run_control_plane

    logs = home / "logs"
    temporal_port = int(settings.temporal.address.rsplit(":", 1)[1])
    argv, temporal_kind = processes.temporal_server_command(temporal_port, home)
    temporal = processes.spawn(argv, log_file=logs / "temporal.log")
    agent = None
    try:
        await asyncio.to_thread(
            processes.wait_for_port, "127.0.0.1", temporal_port, timeout=60, process=temporal
        )
        await asyncio.to_thread(upgrade_database, settings.database.url)
        engine = make_engine(settings.database.url)
        token = bootstrap_local_cluster(
            make_session_factory(engine),
            tenant=settings.api.default_tenant,
            cluster=LOCAL_CLUSTER,
            labels={"executor": "local-process"},
        )
        engine.dispose()

        started = asyncio.Event()
        control_plane = asyncio.create_task(
            run_control_plane(settings, Parts(), stop, started), name="control-plane"
        )
        started_wait = asyncio.create_task(started.wait())
        await asyncio.wait([control_plane, started_wait], return_when=asyncio.FIRST_COMPLETED)
        if control_plane.done():
            control_plane.result()  # start-up failed: raise its error
        agent = processes.spawn(
            [
                sys.executable,
                "-m",
                "data_plane_agent",
                "run",
                "--control-plane",
                f"127.0.0.1:{settings.grpc.port}",
                "--work-dir",
                str(home / "agent"),
            ],
            log_file=logs / "agent.log",
            env={"FLEETFLOW_AGENT_TOKEN": token},
        )
        api_url = f"http://127.0.0.1:{settings.api.port}"
        config_path = save_cli_config(CliConfig(api_url=api_url))
        _print_banner(settings, temporal_kind, api_url, config_path, logs)
        await _watch_children(stop, control_plane, {"Temporal": temporal, "agent": agent}, logs)
        await control_plane
    finally:
        stop.set()
        if agent is not None:
            await asyncio.to_thread(processes.stop, agent)
        await asyncio.to_thread(processes.stop, temporal)
        console.print("stopped the Fleetflow dev stack")


async def _watch_children(
    stop: asyncio.Event,
    control_plane: asyncio.Task[None],
    children: dict[str, object],
    logs: Path,
) -> None:
    """Return on Ctrl-C, or stop everything when a part of the stack dies on its own."""
    while not stop.is_set() and not control_plane.done():
        for name, child in children.items():
            code = child.poll()  # type: ignore[attr-defined]
            if code is not None:
                console.print(
                    f"[red]{name} exited with code {code}; see {logs}. Stopping the stack.[/red]"
                )
                stop.set()
        try:
            await asyncio.wait_for(stop.wait(), timeout=1)
        except TimeoutError:
            pass


def _print_banner(
    settings: Settings, temporal_kind: str, api_url: str, config_path: Path, logs: Path
) -> None:
    console.print("[bold green]Fleetflow dev stack is up[/bold green]")
    console.print(f"  REST API     {api_url}  (OpenAPI: {api_url}/docs)")
    console.print(f"  agent gRPC   127.0.0.1:{settings.grpc.port}")
    console.print(f"  Temporal     {settings.temporal.address}  ({temporal_kind})")
    console.print(f"  database     {settings.database.url}")
    console.print(f"  blob store   {settings.blob.root}")
    console.print(f"  agent        cluster '{LOCAL_CLUSTER}', local-process executor")
    console.print(f"  logs         {logs}")
    console.print(f"  CLI config   {config_path}")
    console.print("Try: fleetflow run --remote examples/hello.py hello_pipeline   (Ctrl-C stops)")
