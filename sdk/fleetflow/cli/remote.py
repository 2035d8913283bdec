"""`fleetflow run --remote`: bundle, register, launch, follow, print outputs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from fleetflow.bundle import build_bundle
from fleetflow.client import Client
from fleetflow.errors import FleetflowError

if TYPE_CHECKING:
    from fleetflow.workflow import WorkflowFunction


class ExecutionFailedError(FleetflowError):
    """A remote execution ended in FAILED or CANCELLED."""


def run_remote(
    wf: WorkflowFunction,
    root: Path,
    values: dict[str, Any],
    *,
    wait: bool,
    timeout: float | None,
    console: Console,
) -> dict[str, Any]:
    inputs = wf.inputs_to_literals(values)
    digest, data = build_bundle(root)
    with Client() as client:
        uploaded = client.upload_bundle(digest, data)
        console.print(
            f"code bundle {digest[:12]} ({len(data)} bytes) "
            + ("uploaded" if uploaded else "already on the control plane")
        )
        registered = client.register_workflow(wf.spec, digest)
        console.print(
            f"registered [bold]{registered['name']}[/bold] version {registered['version']}"
        )
        execution = client.create_execution(wf.spec.name, inputs, version=registered["version"])
        console.print(f"execution [bold]{execution['id']}[/bold] {execution['status']}")
        if not wait:
            return execution
        seen: dict[str, str] = {}

        def show_progress(snapshot: dict[str, Any]) -> None:
            for attempt in snapshot.get("attempts", []):
                if seen.get(attempt["id"]) != attempt["status"]:
                    seen[attempt["id"]] = attempt["status"]
                    where = f" on {attempt['cluster']}" if attempt.get("cluster") else ""
                    console.print(
                        f"  {attempt['node_id']} (attempt {attempt['attempt_number']})"
                        f" {attempt['status']}{where}"
                    )

        final = client.wait_for_execution(execution["id"], timeout=timeout, on_change=show_progress)
    if final["status"] != "SUCCEEDED":
        print_execution(final, console)
        raise ExecutionFailedError(f"execution {final['id']} {final['status']}")
    print_execution(final, console, outputs=wf.outputs_to_python(final["outputs"]))
    return final


def print_execution(execution: dict[str, Any], console: Console, outputs: Any = None) -> None:
    """One execution for humans: status, then outputs or the failing task's error."""
    style = {"SUCCEEDED": "green", "FAILED": "red", "CANCELLED": "yellow"}.get(
        execution["status"], "cyan"
    )
    console.print(
        f"execution [bold]{execution['id']}[/bold] ({execution['workflow']}) "
        f"[{style}]{execution['status']}[/{style}]"
    )
    if execution["status"] == "SUCCEEDED":
        console.print("[bold]outputs:[/bold]")
        shown = outputs if outputs is not None else execution.get("outputs")
        console.print(repr(shown), markup=False)
    error = execution.get("error")
    if error:
        console.print(
            f"[red]task {error.get('node_id')} failed:[/red] {error.get('message')}",
            highlight=False,
        )
        if error.get("traceback"):
            console.print(error["traceback"], markup=False, highlight=False)
