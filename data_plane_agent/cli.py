"""`fleetflow agent …`: run the data-plane agent of a cluster.

Mounted into the main CLI through the `fleetflow.cli` entry point, and runnable on its own as
`python -m data_plane_agent`. Options override the `FLEETFLOW_AGENT_*` environment; the token
is best given as a file only its owner can read (`--token-file`, or `-` for standard input):
`FLEETFLOW_AGENT_TOKEN` also works but every process started from the same shell inherits it,
and command-line arguments (`--token`) are visible to every local user in `ps`.

Before it leases anything the agent makes itself non-dumpable and drops the token's variable
from its environment (`data_plane_agent.hardening`), so that the tasks it runs, as its own
user, cannot read the token out of its `/proc/<pid>/environ` or memory.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from data_plane_agent.agent import run_agent
from data_plane_agent.hardening import make_process_undumpable
from data_plane_agent.settings import AgentSettings, AgentTokenError, load_agent_settings
from data_plane_agent.tls import channel_security
from fleetflow.child_processes import die_with_parent_if_asked
from fleetflow.logs import LogConfigError, configure_logging
from fleetflow.tls import TlsConfigError

logger = logging.getLogger(__name__)

app = typer.Typer(
    help="Run the Fleetflow data-plane agent of a cluster.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _group() -> None:
    """Run the Fleetflow data-plane agent of a cluster."""


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def _load_settings(overrides: dict[str, Any]) -> AgentSettings:
    try:
        return load_agent_settings(**overrides)
    except AgentTokenError as exc:
        raise _fail(str(exc)) from None
    except ValidationError as exc:
        errors = exc.errors()
        if any(e["type"] == "missing" and e["loc"] == ("token",) for e in errors):
            raise _fail(
                "no cluster token: pass --token-file (or set FLEETFLOW_AGENT_TOKEN_FILE) naming "
                "a file only you can read (chmod 600), or set FLEETFLOW_AGENT_TOKEN"
            ) from None
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        raise _fail(f"invalid agent settings: {details}") from None


@app.command("run")
def run(
    control_plane: Annotated[
        str | None,
        typer.Option(
            "--control-plane",
            help="host:port of the control plane's agent gRPC service, e.g. cp.example.com:9090 "
            "(env FLEETFLOW_AGENT_CONTROL_PLANE).",
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="Cluster bearer token; visible to every local user in ps: prefer --token-file "
            "(or env FLEETFLOW_AGENT_TOKEN).",
            show_default=False,
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            help="File holding the cluster bearer token, readable by its owner only (chmod 600); "
            "- reads it from standard input (env FLEETFLOW_AGENT_TOKEN_FILE).",
            show_default=False,
        ),
    ] = None,
    work_dir: Annotated[
        Path | None,
        typer.Option(
            "--work-dir",
            help="Attempt directories, logs and undelivered status reports; keep it across "
            "restarts (env FLEETFLOW_AGENT_WORK_DIR).",
            show_default=False,
        ),
    ] = None,
    max_parallel: Annotated[
        int | None,
        typer.Option(
            "--max-parallel",
            help="Attempts run at the same time (env FLEETFLOW_AGENT_MAX_PARALLEL).",
            show_default=False,
        ),
    ] = None,
    executor: Annotated[
        str | None,
        typer.Option(
            "--executor",
            help="local-process or kubernetes (env FLEETFLOW_AGENT_EXECUTOR; the Kubernetes "
            "executor reads FLEETFLOW_AGENT_K8S_*).",
            show_default=False,
        ),
    ] = None,
    keep_attempt_dirs_hours: Annotated[
        float | None,
        typer.Option(
            "--keep-attempt-dirs-hours",
            help="Hours a finished attempt's directory is kept before it is deleted; default 24 "
            "(env FLEETFLOW_AGENT_ATTEMPT_DIRS_KEEP_HOURS).",
            show_default=False,
        ),
    ] = None,
    attempt_dirs_max_gib: Annotated[
        float | None,
        typer.Option(
            "--attempt-dirs-max-gib",
            help="Cap on all attempt directories, in GiB: above it finished ones are deleted, "
            "oldest first; default 5, 0 for none (env FLEETFLOW_AGENT_ATTEMPT_DIRS_MAX_GIB).",
            show_default=False,
        ),
    ] = None,
    task_uids: Annotated[
        str | None,
        typer.Option(
            "--task-uids",
            help="Uids tasks run as, one per running attempt, as FIRST-LAST; auto (default): "
            "50000-59999 when the agent is root, else the agent's user; off: the agent's user, "
            "refused for root (env FLEETFLOW_AGENT_TASK_UIDS).",
            show_default=False,
        ),
    ] = None,
    task_python: Annotated[
        str | None,
        typer.Option(
            "--task-python",
            help="Python executable tasks run with; default: the agent's, or a system Python of "
            "the same version the task users can run (env FLEETFLOW_AGENT_TASK_PYTHON).",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[
        str, typer.Option("--log-level", help="Log verbosity: DEBUG, INFO, WARNING or ERROR.")
    ] = "INFO",
) -> None:
    """Connect to the control plane, lease task attempts and run them until SIGINT/SIGTERM."""
    die_with_parent_if_asked()
    settings = _load_settings(
        {
            "control_plane": control_plane,
            "token": token,
            "token_file": token_file,
            "work_dir": work_dir,
            "max_parallel": max_parallel,
            "executor": executor,
            "attempt_dirs_keep_hours": keep_attempt_dirs_hours,
            "attempt_dirs_max_gib": attempt_dirs_max_gib,
            "task_uids": task_uids,
            "task_python": task_python,
        }
    )
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise _fail(f"unknown log level {log_level!r}")
    try:
        channel_security(settings)  # TLS files readable and settings consistent, before starting
        configure_logging(log_level)
    except (TlsConfigError, LogConfigError) as exc:
        raise _fail(str(exc)) from None
    if token is not None:
        logger.warning("--token shows the cluster token to every local user (ps); use --token-file")
    # Before anything is leased: tasks run as our user and must not read our environment or
    # memory. After the checks above, so that a refused command line leaves an in-process
    # caller (a test) dumpable.
    try:
        make_process_undumpable()
    except OSError as exc:
        raise _fail(f"cannot protect the agent's memory from its tasks: {exc}") from None
    code = asyncio.run(run_agent(settings))
    if code:
        raise typer.Exit(code=code)
