"""`fleetflow run --remote` and `fleetflow register`: bundle, register, launch, follow, print.

The work itself is `fleetflow.Client`'s (`register`, `launch`, `wait_for_execution`; the
command hands in the client, acting in its tenant), so the CLI and Python programs run
workflows the same way; this module only shows it: a live table of
task attempts on a terminal, one plain line per change otherwise (logs, CI, tests).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from fleetflow.client import Client, ExecutionTimeoutError
from fleetflow.errors import FleetflowError

if TYPE_CHECKING:
    from fleetflow.workflow import WorkflowFunction

ATTEMPT_STYLES = {
    "SUCCEEDED": "green",
    "FAILED": "red",
    "CANCELLED": "yellow",
    "LOST": "yellow",
    "RUNNING": "cyan",
}


class ExecutionFailedError(FleetflowError):
    """A remote execution ended in FAILED or CANCELLED."""


def register_remote(
    client: Client, wf: WorkflowFunction[..., Any], root: Path, console: Console
) -> dict[str, Any]:
    """Upload the code bundle if needed and register the spec, saying what happened."""
    registered = client.register(wf, root=root)
    bundle = registered["bundle"]
    console.print(
        f"code bundle {bundle['digest'][:12]} ({bundle['size_bytes']} bytes) "
        + ("uploaded" if bundle["uploaded"] else "already on the control plane"),
        highlight=False,
    )
    console.print(
        f"registered [bold]{registered['name']}[/bold] version {registered['version']}",
        highlight=False,
    )
    return registered


def run_remote(
    client: Client,
    wf: WorkflowFunction[..., Any],
    root: Path,
    values: dict[str, Any],
    *,
    wait: bool,
    timeout: float | None,
    console: Console,
    priority: int = 0,
) -> dict[str, Any]:
    """Run `wf` on the control plane `client` talks to; with `wait`, follow it and print its
    outputs as JSON.

    Raises:
        ExecutionFailedError: it ended FAILED or CANCELLED (after printing why).
        ExecutionTimeoutError: still running after `timeout` seconds.
    """
    wf.inputs_to_literals(values)  # a wrong input fails here, before anything is uploaded
    registered = register_remote(client, wf, root, console)
    execution = client.launch(
        wf, values, version=registered["version"], name=registered["name"], priority=priority
    )
    execution_id = execution["id"]
    console.print(f"execution [bold]{execution_id}[/bold] {execution['status']}")
    follow = f"fleetflow executions get {execution_id}"
    if not wait:
        console.print(f"follow it with: {follow}", markup=False, highlight=False)
        console.out(execution_id, highlight=False)  # last line: the id, for scripts
        return execution
    try:
        with AttemptProgress(console) as progress:
            final = client.wait_for_execution(
                execution_id, timeout=timeout, on_change=progress.update
            )
    except ExecutionTimeoutError as exc:
        raise ExecutionTimeoutError(f"{exc}; it keeps running: {follow}") from None
    except KeyboardInterrupt:
        console.print(
            f"stopped waiting; the execution keeps running: {follow} "
            f"(cancel it with: fleetflow executions cancel {execution_id})",
            markup=False,
            highlight=False,
        )
        raise
    print_execution(final, console)
    if final["status"] != "SUCCEEDED":
        raise ExecutionFailedError(f"execution {final['id']} {final['status']}")
    return final


def describe_attempt(attempt: dict[str, Any]) -> str:
    """`n1-square[2] (attempt 1) SUCCEEDED on local`, as plain progress lines show it."""
    node = attempt["node_id"]
    if attempt.get("map_index") is not None:
        node = f"{node}[{attempt['map_index']}]"
    where = f" on {attempt['cluster']}" if attempt.get("cluster") else ""
    cached = " (cache hit)" if attempt.get("cache_hit") else ""
    waiting = f" - waiting: {attempt['pending_reason']}" if _waiting_reason(attempt) else ""
    return (
        f"{node} (attempt {attempt['attempt_number']}) {attempt['status']}{cached}{where}{waiting}"
    )


def _waiting_reason(attempt: dict[str, Any]) -> str | None:
    """Why a not-yet-running attempt waits (quota, no capacity, unschedulable), if known."""
    if attempt["status"] in ("PENDING", "ASSIGNED", "LEASED"):
        return attempt.get("pending_reason") or None
    return None


class AttemptProgress:
    """Shows an execution's task attempts while it runs: a live table on a terminal, a line
    per attempt change elsewhere."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._seen: dict[str, str] = {}
        self._live: Live | None = None
        if console.is_terminal:
            self._live = Live(
                self._table({}), console=console, refresh_per_second=4, transient=False
            )

    def __enter__(self) -> AttemptProgress:
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def update(self, execution: dict[str, Any]) -> None:
        if self._live is not None:
            self._live.update(self._table(execution))
            return
        for attempt in execution.get("attempts", []):
            seen = f"{attempt['status']} {_waiting_reason(attempt) or ''}"
            if self._seen.get(attempt["id"]) != seen:
                self._seen[attempt["id"]] = seen
                self._console.print(f"  {describe_attempt(attempt)}", highlight=False)

    @staticmethod
    def _table(execution: dict[str, Any]) -> Table:
        status = execution.get("status", "QUEUED")
        table = Table(
            title=Text(f"execution {execution.get('id', '')} {status}", style="bold"),
            title_justify="left",
            box=None,
            pad_edge=False,
        )
        for column in ("NODE", "ELEMENT", "ATTEMPT", "STATUS", "CLUSTER"):
            table.add_column(column, no_wrap=True)
        table.add_column("WAITING FOR")
        for attempt in execution.get("attempts", []):
            style = ATTEMPT_STYLES.get(attempt["status"], "")
            status_text = attempt["status"] + (" (cache hit)" if attempt.get("cache_hit") else "")
            index = attempt.get("map_index")
            table.add_row(
                attempt["node_id"],
                "" if index is None else str(index),
                str(attempt["attempt_number"]),
                Text(status_text, style=style),
                attempt.get("cluster") or "",
                Text(_waiting_reason(attempt) or "", style="yellow"),
            )
        return table


def outputs_json(outputs: dict[str, Any] | None) -> str:
    """Outputs by name as one line of JSON: what scripts read from `fleetflow run`."""
    return json.dumps(outputs or {}, sort_keys=False)


def print_execution(execution: dict[str, Any], console: Console, *, attempts: bool = False) -> None:
    """One execution for humans: status, (inputs and attempts), then outputs or the error.

    Outputs are printed as one line of JSON, by output name.
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
            console.print(f"  {describe_attempt(attempt)}", highlight=False)
    if execution["status"] == "SUCCEEDED":
        console.print("[bold]outputs:[/bold]")
        console.out(outputs_json(execution.get("outputs")), highlight=False)
    error = execution.get("error")
    if error:
        who = f"task {error['node_id']}" if error.get("node_id") else "execution"
        console.print(
            Text(f"{who} failed: ", style="red").append(str(error.get("message")), style="")
        )
        if error.get("traceback"):
            console.print(error["traceback"], markup=False, highlight=False)


def preview_remote(
    client: Client,
    wf: WorkflowFunction[..., Any],
    root: Path,
    values: dict[str, Any],
    *,
    console: Console,
) -> dict[str, Any]:
    """`fleetflow run --remote --dry-run`: upload and register (both idempotent), then only
    preview where each task would run now; no execution is created."""
    literals = wf.inputs_to_literals(values)  # a wrong input fails before any upload
    registered = register_remote(client, wf, root, console)
    literals = client.upload_inputs(wf, literals)
    preview = client.preview_execution(registered["name"], literals, version=registered["version"])
    print_preview(preview, console)
    return preview


def _quantity(number_of_bytes: int) -> str:
    for unit, size in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if number_of_bytes >= size:
            return f"{round(number_of_bytes / size, 1):g}{unit}"
    return str(number_of_bytes)


def describe_resources(resources: dict[str, Any]) -> str:
    """`2 CPU, 4Gi, 8 GPU (H100 or A100), zone=eu`: a task's request on one line."""
    parts = [f"{resources['cpu']:g} CPU"]
    if resources.get("memory_bytes"):
        parts.append(_quantity(resources["memory_bytes"]))
    if resources.get("gpu"):
        types = resources.get("gpu_types") or []
        parts.append(f"{resources['gpu']} GPU" + (f" ({' or '.join(types)})" if types else ""))
    parts += [f"{key}={value}" for key, value in sorted((resources.get("labels") or {}).items())]
    return ", ".join(parts)


def print_preview(preview: dict[str, Any], console: Console) -> None:
    """A dry run for humans: a table of tasks and where each would run now, then, per task,
    the clusters it cannot run on and why."""
    console.print(
        f"dry run of [bold]{preview['workflow']}[/bold] version {preview['version']} "
        f"(placement: {preview['strategy']}): nothing was created",
        highlight=False,
    )
    table = Table(box=None, pad_edge=False)
    for column in ("TASK", "NODES", "REQUESTS", "WOULD RUN ON", "ELIGIBLE", "QUOTA"):
        table.add_column(column, no_wrap=column in ("TASK", "NODES"))
    for task in preview["tasks"]:
        if task["cluster"]:
            gpu = f" ({task['gpu_type']})" if task.get("gpu_type") else ""
            where = Text(f"{task['cluster']}{gpu}", style="green")
        else:
            where = Text(f"waits: {task.get('waiting_reason') or 'no cluster fits'}", style="red")
        table.add_row(
            task["task"].rsplit(".", 1)[-1],
            ", ".join(task["nodes"]),
            describe_resources(task["resources"]),
            where,
            ", ".join(e["cluster"] for e in task["eligible"]) or "none",
            task["quota"],
        )
    console.print(table)
    for task in preview["tasks"]:
        if task["excluded"]:
            console.print(Text(f"{task['task']} cannot run on:", style="bold"))
            for excluded in task["excluded"]:
                console.print(Text(f"  {excluded['cluster']}: {excluded['reason']}"))
