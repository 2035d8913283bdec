"""`fleetflow run --remote` and `fleetflow register`: bundle, register, launch, follow, print.

The work itself is `fleetflow.Client`'s (`register`, `launch`, `wait_for_execution`; the
command hands in the client, acting in its tenant), so the CLI and Python programs run
workflows the same way; this module only shows it: a live table of task attempts on a
terminal (elapsed time per attempt, done/total per map node, the tail of a failed task's
output), one plain line per change otherwise (logs, CI, tests).

With `--json` the result (the execution, the registered version) is the only thing on stdout,
as JSON; what happens meanwhile goes to stderr, so the output can be piped into `jq`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from fleetflow.api_models.executions import ExecutionPublic
from fleetflow.api_models.notifications import NotificationRule
from fleetflow.api_models.previews import ExecutionPreview
from fleetflow.cli.common import api_json, print_json, print_table
from fleetflow.client import Client, ExecutionTimeoutError, RegisteredWorkflow
from fleetflow.errors import FleetflowError
from fleetflow.inlining import SEPARATOR as SUB_WORKFLOW_SEPARATOR
from fleetflow.states import partial_success
from fleetflow.timestamps import parse_time

if TYPE_CHECKING:
    from fleetflow.workflow import WorkflowFunction

ATTEMPT_STYLES = {
    "SUCCEEDED": "green",
    "FAILED": "red",
    "CANCELLED": "yellow",
    "LOST": "yellow",
    "PREEMPTED": "yellow",
    "RUNNING": "cyan",
    "SKIPPED": "dim",
}


# `fleetflow run --remote --timeout` and `executions wait --timeout` when the execution is still
# going: the exit status of timeout(1), so scripts tell it from a failure (1).
STILL_RUNNING_EXIT_CODE = 124
# Lines of a failed attempt's output shown under the table, and failed attempts shown.
LOG_TAIL_LINES = 10
_TAILS_SHOWN = 3
# A map node with more elements than this shows only those not yet done.
_ELEMENT_ROWS = 20


class ExecutionFailedError(FleetflowError):
    """A remote execution ended in FAILED or CANCELLED."""


def exit_still_running(exc: ExecutionTimeoutError, execution_id: str) -> NoReturn:
    """Say that waiting stopped, not the execution, and exit with `STILL_RUNNING_EXIT_CODE`."""
    text = Text("error: ", style="red")
    text.append(
        f"{exc}; it keeps running: fleetflow executions wait {execution_id} "
        f"(cancel it with: fleetflow executions cancel {execution_id})"
    )
    Console(stderr=True, soft_wrap=True).print(text, highlight=False)
    raise typer.Exit(STILL_RUNNING_EXIT_CODE)


def log_fetcher(client: Client, execution_id: str) -> Callable[[dict[str, Any]], str | None]:
    """What `AttemptProgress` calls to read a failed attempt's output."""

    def fetch(attempt: dict[str, Any]) -> str | None:
        entries = client.executions.logs(execution_id, attempt_ids=[attempt["id"]])
        return entries[0].log if entries else None

    return fetch


def register_remote(
    client: Client,
    wf: WorkflowFunction[..., Any],
    root: Path,
    console: Console,
    *,
    version: str | None = None,
) -> RegisteredWorkflow:
    """Upload the code bundle if needed and register the spec (under `version`, default: a
    hash of both), saying what happened on `console`."""
    registered = client.register(wf, root=root, version=version)
    bundle = registered.bundle
    console.print(
        f"code bundle {bundle.digest[:12]} ({bundle.size_bytes} bytes) "
        + ("uploaded" if bundle.uploaded else "already on the control plane"),
        highlight=False,
    )
    console.print(
        f"registered [bold]{registered.name}[/bold] version {registered.version}",
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
    notifications: Sequence[NotificationRule] = (),
    as_json: bool = False,
    err_console: Console | None = None,
) -> ExecutionPublic:
    """Run `wf` on the control plane `client` talks to (calling the webhooks of
    `notifications` when it ends); with `wait`, follow it and print its outputs as JSON.

    With `as_json` the execution (as the API answers it: created, or finished with `wait`)
    is printed as JSON on `console` and everything else on `err_console`.

    Raises:
        ExecutionFailedError: it ended FAILED or CANCELLED (after printing why).
        typer.Exit: still running after `timeout` seconds (`STILL_RUNNING_EXIT_CODE`).
    """
    info = (err_console or Console(stderr=True, soft_wrap=True)) if as_json else console
    wf.inputs_to_literals(values)  # a wrong input fails here, before anything is uploaded
    registered = register_remote(client, wf, root, info)
    execution = client.launch(
        wf,
        values,
        version=registered.version,
        name=registered.name,
        priority=priority,
        notifications=notifications,
    )
    return follow_remote(
        client, execution, wait=wait, timeout=timeout, console=console, info=info, as_json=as_json
    )


def run_launch_plan(
    client: Client,
    name: str,
    args: Sequence[str],
    *,
    command_options: Collection[str],
    wait: bool,
    timeout: float | None,
    console: Console,
    as_json: bool = False,
    err_console: Console | None = None,
) -> ExecutionPublic:
    """`fleetflow run --remote --launch-plan NAME --n 3`: the `--name value` flags in `args`
    are read against the interface of the version the plan names, then `launch_plan`."""
    from fleetflow.cli.common import LAUNCH_PLANS_HINT, not_found_hint
    from fleetflow.cli.inputs import literal_inputs, split_input_flags

    with not_found_hint(client, LAUNCH_PLANS_HINT):
        plan = client.launchplans.get(name)
    spec = client.workflows.get(plan.workflow, plan.version).spec
    inputs = literal_inputs(split_input_flags(args, spec, command_options=command_options), spec)
    info = (err_console or Console(stderr=True, soft_wrap=True)) if as_json else console
    return launch_plan(
        client,
        name,
        inputs,
        wait=wait,
        timeout=timeout,
        console=console,
        info=info,
        as_json=as_json,
    )


def launch_plan(
    client: Client,
    name: str,
    inputs: dict[str, Any],
    *,
    wait: bool,
    timeout: float | None,
    console: Console,
    info: Console,
    as_json: bool = False,
) -> ExecutionPublic:
    """Launch plan `name` now with `inputs` over its defaults (the control plane refuses one
    that overrides a fixed input), then `follow_remote`."""
    from fleetflow.cli.common import LAUNCH_PLANS_HINT, not_found_hint

    with not_found_hint(client, LAUNCH_PLANS_HINT):
        execution = client.launchplans.launch(name, inputs)
    info.print(
        f"launch plan {name}: {execution.workflow} version {execution.version}",
        markup=False,
        highlight=False,
    )
    return follow_remote(
        client, execution, wait=wait, timeout=timeout, console=console, info=info, as_json=as_json
    )


def follow_remote(
    client: Client,
    execution: ExecutionPublic,
    *,
    wait: bool,
    timeout: float | None,
    console: Console,
    info: Console,
    as_json: bool = False,
) -> ExecutionPublic:
    """After `execution` was created: say so on `info`, then print its id, or with `wait`
    follow it and print how it ended (`run_remote`; `executions relaunch` and `recover`)."""
    execution_id = execution.id
    info.print(f"execution [bold]{execution_id}[/bold] {execution.status}")
    follow = f"fleetflow executions wait {execution_id}"
    if not wait:
        info.print(f"follow it with: {follow}", markup=False, highlight=False)
        if as_json:
            print_json(execution, console)
        else:
            console.out(execution_id, highlight=False)  # last line: the id, for scripts
        return execution
    try:
        with AttemptProgress(info, fetch_log=log_fetcher(client, execution_id)) as progress:
            final = client.wait_for_execution(
                execution_id, timeout=timeout, on_change=lambda e: progress.update(api_json(e))
            )
    except ExecutionTimeoutError as exc:
        exit_still_running(exc, execution_id)
    except KeyboardInterrupt:
        info.print(
            f"stopped waiting; the execution keeps running: {follow} "
            f"(cancel it with: fleetflow executions cancel {execution_id})",
            markup=False,
            highlight=False,
        )
        raise
    if as_json:
        print_json(final, console)
    else:
        print_execution(api_json(final), console)
    if final.status != "SUCCEEDED":
        raise ExecutionFailedError(f"execution {final.id} {final.status}")
    return final


def elapsed(attempt: dict[str, Any], now: datetime | None = None) -> str:
    """How long an attempt ran (`4s`, `2m05s`, `1h02m`): to its end, else to `now`; `""`
    before it started or when it ended and `now` is not given but its end is unknown."""
    started = parse_time(attempt.get("started_at"))
    ended = parse_time(attempt.get("finished_at")) or now
    if started is None or ended is None:
        return ""
    return _duration((ended - started).total_seconds())


def _duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def describe_attempt(attempt: dict[str, Any], name: str | None = None) -> str:
    """`n1-square[2] (attempt 1) SUCCEEDED on local`, as plain progress lines show it; `name`
    in place of the node id (its last part, under its sub-workflow call in a tree)."""
    node = attempt["node_id"] if name is None else name
    if attempt.get("map_index") is not None:
        node = f"{node}[{attempt['map_index']}]"
    if attempt["status"] == "SKIPPED":
        return f"{node} SKIPPED (its branch of a conditional was not taken)"
    where = f" on {attempt['cluster']}" if attempt.get("cluster") else ""
    cached = " (cache hit)" if attempt.get("cache_hit") else ""
    waiting = f" - waiting: {attempt['pending_reason']}" if _waiting_reason(attempt) else ""
    took = elapsed(attempt) if attempt.get("finished_at") and not attempt.get("cache_hit") else ""
    after = f" after {took}" if took else ""
    borrowed = attempt.get("borrowed_gpus") or 0
    lent = (
        f" (borrowed {borrowed} {attempt.get('gpu_type') or 'GPU'} of its cohort)"
        if borrowed
        else ""
    )
    # Why it was preempted (and that its unit runs again) is the attempt's error message.
    why = (
        f" - {attempt['error_message']}"
        if attempt["status"] == "PREEMPTED" and attempt.get("error_message")
        else ""
    )
    return (
        f"{node} (attempt {attempt['attempt_number']}) {attempt['status']}{cached}{where}"
        f"{lent}{after}{waiting}{why}"
    )


def describe_child(child: dict[str, Any]) -> str:
    """`n0-train (reference) SUCCEEDED: child execution ex-1 (m.train version v1)`: a
    reference node, which runs a registered workflow as a child execution."""
    return (
        f"{child['node_id']} (reference) {child['status']}: child execution "
        f"{child['execution_id']} ({child['workflow']} version {child['version']})"
    )


def _waiting_reason(attempt: dict[str, Any]) -> str | None:
    """Why a not-yet-running attempt waits (quota, no capacity, unschedulable), if known."""
    if attempt["status"] in ("PENDING", "ASSIGNED", "LEASED"):
        return attempt.get("pending_reason") or None
    return None


def log_tail(text: str | None, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last `lines` non-empty-ended lines of an attempt's output."""
    if not text:
        return []
    return text.rstrip("\n").splitlines()[-lines:]


@dataclass(frozen=True)
class TreeRow:
    """One row of the node tree: a node, or a sub-workflow call (`is_call`, no node of its
    own) whose nodes follow it one level deeper; a dynamic node is a node whose sub-DAG's
    nodes follow it so. `name` is the last part of the id (`n0-prep` of `n2-train/n0-prep`)."""

    node_id: str
    name: str
    depth: int
    is_call: bool


def node_tree(node_ids: Iterable[str]) -> list[TreeRow]:
    """Node ids as a tree, in first-seen order: a sub-workflow's nodes (`n2-train/n0-prep`,
    ids the compiler prefixes with the call's id) under a row for the call (`n2-train`),
    the call's row where its first node would be."""
    tree: dict[str, Any] = {}
    node_ids = list(node_ids)
    for node_id in node_ids:
        level = tree
        for part in node_id.split(SUB_WORKFLOW_SEPARATOR):
            level = level.setdefault(part, {})
    rows: list[TreeRow] = []
    known = set(node_ids)

    def walk(level: dict[str, Any], prefix: str, depth: int) -> None:
        for part, children in level.items():
            node_id = prefix + part
            is_call = bool(children) and node_id not in known
            rows.append(TreeRow(node_id, part, depth, is_call=is_call))
            walk(children, node_id + SUB_WORKFLOW_SEPARATOR, depth + 1)

    walk(tree, "", 0)
    return rows


def _by_node(attempts: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by_node: dict[str, list[dict[str, Any]]] = {}
    for attempt in attempts:
        by_node.setdefault(attempt["node_id"], []).append(attempt)
    return by_node


def _call_label(row: TreeRow) -> str:
    return f"{row.name} (sub-workflow)"


class AttemptProgress:
    """Shows an execution's task attempts while it runs: a live table on a terminal, a line
    per attempt change elsewhere.

    The table has a row per attempt with how long it has run, a summary row per map node
    (elements done out of those started), and under it the last lines a failed attempt
    printed, read through `fetch_log` when the failure is first seen.
    """

    def __init__(
        self,
        console: Console,
        *,
        fetch_log: Callable[[dict[str, Any]], str | None] | None = None,
    ) -> None:
        self._console = console
        self._fetch_log = fetch_log
        self._seen: dict[str, str] = {}
        self._tails: dict[str, list[str]] = {}  # failed attempt id -> its output's last lines
        self._tries: dict[str, int] = {}  # failed attempt id -> reads that found no output
        self._execution: dict[str, Any] = {}
        self._live: Live | None = None
        if console.is_terminal:
            # Rendered at each refresh (`__rich__`), so elapsed times move between changes.
            self._live = Live(self, console=console, refresh_per_second=4, transient=False)

    def __enter__(self) -> AttemptProgress:
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def update(self, execution: dict[str, Any]) -> None:
        self._execution = execution
        self._read_failed_tails(execution)
        if self._live is not None:
            self._live.refresh()
            return
        for attempt in execution.get("attempts", []):
            seen = f"{attempt['status']} {_waiting_reason(attempt) or ''}"
            if self._seen.get(attempt["id"]) != seen:
                self._seen[attempt["id"]] = seen
                self._console.print(f"  {describe_attempt(attempt)}", highlight=False)
                for line in self._tails.get(attempt["id"], []):
                    self._console.print(Text(f"    | {line}", style="dim"), highlight=False)

    def _read_failed_tails(self, execution: dict[str, Any]) -> None:
        if self._fetch_log is None:
            return
        for attempt in execution.get("attempts", []):
            key = attempt["id"]
            # Its final output is stored moments after the failure: a read that finds none
            # is tried again at the next change, a few times.
            if attempt["status"] != "FAILED" or key in self._tails or self._tries.get(key, 0) > 2:
                continue
            try:
                tail = log_tail(self._fetch_log(attempt))
            except FleetflowError:
                tail = []
            if tail:
                self._tails[key] = tail
            else:
                self._tries[key] = self._tries.get(key, 0) + 1

    def __rich__(self) -> RenderableType:
        execution = self._execution
        parts: list[RenderableType] = [self._table(execution, now=datetime.now(UTC))]
        failed = [a for a in execution.get("attempts", []) if a["id"] in self._tails]
        for attempt in failed[-_TAILS_SHOWN:]:
            parts.append(Text(f"{describe_attempt(attempt)}, last lines of its output:"))
            parts += [Text(f"  | {line}", style="dim") for line in self._tails[attempt["id"]]]
        return Group(*parts)

    @staticmethod
    def _table(execution: dict[str, Any], now: datetime | None = None) -> Table:
        status = execution.get("status", "QUEUED")
        table = Table(
            title=Text(f"execution {execution.get('id', '')} {status}", style="bold"),
            title_justify="left",
            box=None,
            pad_edge=False,
        )
        for column in ("NODE", "ELEMENT", "ATTEMPT", "STATUS", "CLUSTER", "ELAPSED"):
            table.add_column(column, no_wrap=True)
        table.add_column("WAITING FOR")
        by_node = _by_node(execution.get("attempts", []))
        ratios = execution.get("min_success_ratios") or {}
        for row in node_tree(by_node):
            indent = "  " * row.depth
            if row.is_call:
                table.add_row(Text(indent + _call_label(row), style="bold"), *[""] * 6)
                continue
            node, attempts = indent + row.name, by_node[row.node_id]
            shown = attempts
            if any(a.get("map_index") is not None for a in attempts):
                _add_map_summary(table, node, attempts, ratios.get(row.node_id))
                if len(attempts) > _ELEMENT_ROWS:
                    shown = [a for a in attempts if a["status"] != "SUCCEEDED"][:_ELEMENT_ROWS]
            for attempt in shown:
                style = ATTEMPT_STYLES.get(attempt["status"], "")
                status_text = attempt["status"] + (
                    " (cache hit)" if attempt.get("cache_hit") else ""
                )
                index = attempt.get("map_index")
                table.add_row(
                    node,
                    "" if index is None else str(index),
                    str(attempt["attempt_number"]),
                    Text(status_text, style=style),
                    attempt.get("cluster") or "",
                    ""
                    if attempt.get("cache_hit") or attempt["status"] == "SKIPPED"
                    else elapsed(attempt, now),
                    Text(_waiting_reason(attempt) or "", style="yellow"),
                )
            if len(shown) < len(attempts):
                more = len(attempts) - len(shown)
                table.add_row("", Text(f"({more} more attempts)", style="dim"), *[""] * 5)
        for child in execution.get("children") or []:  # reference nodes: no attempts of theirs
            table.add_row(
                child["node_id"],
                "",
                "",
                Text(child["status"], style=ATTEMPT_STYLES.get(child["status"], "")),
                "",
                "",
                Text(describe_child(child)),
            )
        return table


def _add_map_summary(
    table: Table, node: str, attempts: list[dict[str, Any]], ratio: float | None = None
) -> None:
    """`n1-square  7/10 done  ...  3 RUNNING`: a map node's elements at a glance (those
    started so far: elements beyond a map_task's concurrency start as others finish), with
    its `min_success_ratio` when it has one (its failed elements then do not fail it)."""
    latest: dict[int, dict[str, Any]] = {}
    for attempt in attempts:
        index = attempt["map_index"]
        if index not in latest or attempt["attempt_number"] >= latest[index]["attempt_number"]:
            latest[index] = attempt
    states: dict[str, int] = {}
    for attempt in latest.values():
        states[attempt["status"]] = states.get(attempt["status"], 0) + 1
    done = states.get("SUCCEEDED", 0)
    counts = Text()
    for state, count in sorted(states.items(), key=lambda item: item[0] != "RUNNING"):
        if state != "SUCCEEDED":
            counts.append(f"{count} {state} ", style=ATTEMPT_STYLES.get(state, ""))
    if ratio is not None:
        counts.append(f"(min_success_ratio {ratio:g})", style="dim")
    table.add_row(
        Text(node, style="bold"),
        Text(f"{done}/{len(latest)} done", style="green" if done == len(latest) else ""),
        "",
        counts,
        "",
        "",
        "",
    )


def partial_map_lines(execution: dict[str, Any]) -> list[str]:
    """For each map node with a `min_success_ratio` some of whose elements failed, how many
    succeeded: `n1-train: 8/10 elements succeeded (min_success_ratio 0.8); ...`."""
    lines = []
    for node, ratio in (execution.get("min_success_ratios") or {}).items():
        elements: set[int] = set()
        succeeded: set[int] = set()
        for attempt in execution.get("attempts", []):
            if attempt["node_id"] == node and attempt.get("map_index") is not None:
                elements.add(attempt["map_index"])
                if attempt["status"] == "SUCCEEDED":
                    succeeded.add(attempt["map_index"])
        if len(succeeded) < len(elements):
            lines.append(partial_success(node, len(succeeded), len(elements), ratio))
    return lines


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
        by_node = _by_node(execution.get("attempts", []))
        for row in node_tree(by_node):
            indent = "  " * (row.depth + 1)
            if row.is_call:
                console.print(f"{indent}{_call_label(row)}", highlight=False)
                continue
            for attempt in by_node[row.node_id]:
                line = describe_attempt(attempt, name=row.name)
                console.print(f"{indent}{line}", highlight=False)
    for child in execution.get("children") or [] if attempts else []:
        console.print(f"  {describe_child(child)}", highlight=False)
    for field, how in (("relaunched_from", "relaunched"), ("recovered_from", "recovered")):
        if execution.get(field):
            reused = " (its succeeded tasks reused: cache hits)" if how == "recovered" else ""
            console.print(f"{how} from {execution[field]}{reused}", highlight=False)
    if execution.get("parent_execution_id"):
        console.print(
            f"child execution of {execution['parent_execution_id']} "
            f"(node {execution.get('parent_node_id')})",
            highlight=False,
        )
    if execution["status"] == "SUCCEEDED":
        for line in partial_map_lines(execution):
            console.print(Text(line, style="yellow"), highlight=False)
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
    as_json: bool = False,
) -> ExecutionPreview:
    """`fleetflow run --remote --dry-run`: upload and register (both idempotent), then only
    preview where each task would run now; no execution is created. With `as_json` the
    preview is printed as the API's JSON and the rest goes to stderr."""
    literals = wf.inputs_to_literals(values)  # a wrong input fails before any upload
    info = Console(stderr=True, soft_wrap=True) if as_json else console
    registered = register_remote(client, wf, root, info)
    literals = client.uploads.inputs(wf, literals)
    preview = client.executions.preview(registered.name, literals, version=registered.version)
    if as_json:
        print_json(preview, console)
    else:
        print_preview(api_json(preview), console)
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
            (f"{task['replicas']} × " if task.get("replicas", 1) > 1 else "")
            + describe_resources(task["resources"]),
            where,
            ", ".join(e["cluster"] for e in task["eligible"]) or "none",
            task["quota"],
        )
    print_table(table, on=console)
    for task in preview["tasks"]:
        if task["excluded"]:
            console.print(Text(f"{task['task']} cannot run on:", style="bold"))
            for excluded in task["excluded"]:
                console.print(Text(f"  {excluded['cluster']}: {excluded['reason']}"))
