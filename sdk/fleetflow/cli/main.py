"""`fleetflow`: the root command.

The SDK owns `run` and `executions`; the control plane and the agent contribute their own
groups (`control-plane`, `dev`, `agent`) through the `fleetflow.cli` entry-point group, so this
package never imports them.
"""

from __future__ import annotations

import json
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from fleetflow.cli.inputs import split_input_flags
from fleetflow.errors import FleetflowError

app = typer.Typer(
    help="Fleetflow: typed ML workflows, run locally or on many clusters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
executions_app = typer.Typer(help="Inspect executions on the control plane.", no_args_is_help=True)
app.add_typer(executions_app, name="executions")

console = Console()
err_console = Console(stderr=True)


def _print_value(label: str, value: Any) -> None:
    console.print(f"[bold]{label}[/bold]")
    console.print(repr(value), markup=False, highlight=True)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    no_args_is_help=True,
)
def run(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="Python file that defines the workflow."),
    workflow_name: str = typer.Argument(..., metavar="WORKFLOW", help="Name of the @workflow."),
    remote: bool = typer.Option(False, "--remote", help="Run on the control plane."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait for a remote run to finish."),
    timeout: float = typer.Option(None, "--timeout", help="Seconds to wait for a remote run."),
) -> None:
    """Run WORKFLOW from FILE locally (default) or remotely; inputs as `--name value`."""
    from fleetflow.loader import load_workflow

    wf, root = load_workflow(file, workflow_name)
    values = wf.parse_cli_inputs(split_input_flags(ctx.args))
    if not remote:
        console.print(f"running [bold]{wf.spec.name}[/bold] locally")
        _print_value("outputs:", wf(**values))
        return
    from fleetflow.cli.remote import run_remote

    run_remote(wf, root, values, wait=wait, timeout=timeout, console=console)


@executions_app.command("get")
def executions_get(
    execution_id: str, as_json: bool = typer.Option(False, "--json", help="Print raw JSON.")
) -> None:
    """Show one execution with its attempts, outputs or error."""
    from fleetflow.cli.remote import print_execution
    from fleetflow.client import Client

    with Client() as client:
        execution = client.get_execution(execution_id)
    if as_json:
        console.print_json(json.dumps(execution))
    else:
        print_execution(execution, console)


@executions_app.command("list")
def executions_list(
    limit: int = typer.Option(20, "--limit", min=1, max=200),
    status: str = typer.Option(None, "--status", help="QUEUED, RUNNING, SUCCEEDED, FAILED…"),
) -> None:
    """List recent executions."""
    from rich.table import Table

    from fleetflow.client import Client

    with Client() as client:
        items = client.list_executions(limit=limit, status=status)
    table = Table("ID", "WORKFLOW", "STATUS", "CREATED")
    for item in items:
        table.add_row(item["id"], item["workflow"], item["status"], str(item["created_at"]))
    console.print(table)


def _mount_plugins() -> None:
    for ep in sorted(entry_points(group="fleetflow.cli"), key=lambda e: e.name):
        try:
            sub = ep.load()
        except ImportError as exc:
            # e.g. the agent extra is not installed: the command is absent, not broken.
            missing = exc.name or str(exc)

            def unavailable(_name: str = ep.name, _missing: str = missing) -> None:
                raise FleetflowError(
                    f"`fleetflow {_name}` needs {_missing}: pip install 'fleetflow[server,agent]'"
                )

            app.command(ep.name, help=f"(unavailable: {missing} is not installed)")(unavailable)
            continue
        app.add_typer(sub, name=ep.name)


def main() -> None:
    """Console-script entry point: clear one-line errors, tracebacks only on request."""
    # gRPC core's informational lines (e.g. about fork handlers) are not for our users; set
    # before any plugin imports grpc.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    _mount_plugins()
    try:
        app(standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # the boundary where every error becomes a message
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if os.environ.get("FLEETFLOW_DEBUG"):
            raise
        if isinstance(exc, FleetflowError):
            err_console.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        else:
            err_console.print(
                f"[red]internal error:[/red] {exc.__class__.__name__}: {exc}\n"
                "(set FLEETFLOW_DEBUG=1 to see the traceback)",
                highlight=False,
            )
        sys.exit(1)
