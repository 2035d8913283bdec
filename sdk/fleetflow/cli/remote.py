"""`fleetflow run --remote`: bundle, register, launch, follow, print outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.text import Text

from fleetflow.bundle import build_bundle
from fleetflow.client import Client, ExecutionTimeoutError
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
            + ("uploaded" if uploaded else "already on the control plane"),
            highlight=False,
        )
        registered = client.register_workflow(wf.spec, digest)
        console.print(
            f"registered [bold]{registered['name']}[/bold] version {registered['version']}",
            highlight=False,
        )
        execution = client.create_execution(wf.spec.name, inputs, version=registered["version"])
        execution_id = execution["id"]
        console.print(f"execution [bold]{execution_id}[/bold] {execution['status']}")
        follow = f"fleetflow executions get {execution_id}"
        if not wait:
            console.print(f"follow it with: {follow}", markup=False, highlight=False)
            return execution
        seen: dict[str, str] = {}

        def show_progress(snapshot: dict[str, Any]) -> None:
            for attempt in snapshot.get("attempts", []):
                if seen.get(attempt["id"]) != attempt["status"]:
                    seen[attempt["id"]] = attempt["status"]
                    where = f" on {attempt['cluster']}" if attempt.get("cluster") else ""
                    console.print(
                        f"  {attempt['node_id']} (attempt {attempt['attempt_number']})"
                        f" {attempt['status']}{where}",
                        highlight=False,
                    )

        try:
            final = client.wait_for_execution(
                execution_id, timeout=timeout, on_change=show_progress
            )
        except ExecutionTimeoutError as exc:
            raise ExecutionTimeoutError(f"{exc}; it keeps running: {follow}") from None
        except KeyboardInterrupt:
            console.print(
                f"stopped waiting; the execution keeps running: {follow}",
                markup=False,
                highlight=False,
            )
            raise
    if final["status"] != "SUCCEEDED":
        print_execution(final, console)
        raise ExecutionFailedError(f"execution {final['id']} {final['status']}")
    print_execution(final, console, outputs=wf.outputs_to_python(final["outputs"]))
    return final


def print_execution(
    execution: dict[str, Any], console: Console, outputs: Any = None, *, attempts: bool = False
) -> None:
    """One execution for humans: status, (inputs and attempts), then outputs or the error.

    `outputs` is the Python value when the caller knows the workflow's types; without it the
    JSON outputs are shown by name.
    """
    style = {"SUCCEEDED": "green", "FAILED": "red", "CANCELLED": "yellow"}.get(
        execution["status"], "cyan"
    )
    console.print(
        f"execution [bold]{execution['id']}[/bold] ({execution['workflow']}) "
        f"[{style}]{execution['status']}[/{style}]",
        highlight=False,
    )
    if attempts:
        if execution.get("inputs") is not None:
            console.print(Text("inputs: ").append(json.dumps(execution["inputs"])))
        for attempt in execution.get("attempts", []):
            where = f" on {attempt['cluster']}" if attempt.get("cluster") else ""
            console.print(
                f"  {attempt['node_id']} (attempt {attempt['attempt_number']})"
                f" {attempt['status']}{where}",
                highlight=False,
            )
    if execution["status"] == "SUCCEEDED":
        console.print("[bold]outputs:[/bold]")
        if outputs is not None:
            console.print(repr(outputs), markup=False)
        else:
            for name, value in (execution.get("outputs") or {}).items():
                console.print(Text(f"  {name}: ").append(json.dumps(value)))
    error = execution.get("error")
    if error:
        who = f"task {error['node_id']}" if error.get("node_id") else "execution"
        console.print(
            Text(f"{who} failed: ", style="red").append(str(error.get("message")), style="")
        )
        if error.get("traceback"):
            console.print(error["traceback"], markup=False, highlight=False)
