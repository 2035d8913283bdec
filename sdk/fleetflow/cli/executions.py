"""`fleetflow executions …`: list, inspect, wait for, cancel, relaunch, recover, read the
inputs and outputs and follow the logs of executions on the control plane.

Every command that prints data takes `--json`: then stdout holds only JSON (JSON lines for
`logs`) and anything else goes to stderr, so `fleetflow executions list --json | jq` works.
Exit status: 0; 1 when the execution `wait` waited for FAILED or was CANCELLED, when the
execution is not found, or on any other error; 2 for bad usage; 124 when `wait --timeout`
ran out while the execution goes on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.text import Text

from fleetflow.api_models.executions import ExecutionPublic
from fleetflow.cli.common import (
    JSON_OPTION,
    NEW_JSON_OPTION,
    TIMEOUT_OPTION,
    WAIT_OPTION,
    api_json,
    client,
    console,
    err_console,
    not_found_hint,
    print_json,
    print_table,
    say,
    show,
)
from fleetflow.client import Client, ExecutionTimeoutError, LogLine
from fleetflow.errors import FleetflowError

EXECUTIONS_HINT = "`fleetflow executions list` shows recent ones"
EXECUTION_STATES = ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")

executions_app = typer.Typer(
    help="Inspect, wait for, cancel, relaunch and recover executions on the control plane; "
    "read their inputs, outputs, logs and notifications.",
    no_args_is_help=True,
)

ID_ARGUMENT = typer.Argument(
    ..., metavar="ID", help="Execution id (ex-…), as `executions list` shows it."
)


def _parse_status(value: str | None) -> str | None:
    if value is None:
        return None
    status = value.strip().upper()
    if status not in EXECUTION_STATES:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(EXECUTION_STATES)}")
    return status


def _parse_when(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> str | None:
    """`--since`/`--until`: a duration back from now or an ISO 8601 time, sent as ISO 8601 UTC
    (a bad one is a usage error naming the option, exit 2)."""
    from fleetflow.cli.usage import parse_since

    if value is None:
        return None
    option = (param.opts or [f"--{param.name}"])[0]
    try:
        return parse_since(value, option).astimezone(UTC).isoformat()
    except FleetflowError as exc:
        raise typer.BadParameter(str(exc).removeprefix(f"{option} ")) from None


WHEN_HELP = (
    "a duration back from now (30m, 24h, 7d) or an ISO 8601 time (UTC unless it has an offset)"
)


@executions_app.command("list")
def executions_list(
    ctx: typer.Context,
    limit: int = typer.Option(20, "--limit", min=1, max=200, help="How many, newest first."),
    status: str = typer.Option(
        None,
        "--status",
        help=f"Only executions in this state: {', '.join(EXECUTION_STATES)}.",
        callback=_parse_status,
        show_default=False,
    ),
    launched_by: str = typer.Option(
        None,
        "--launched-by",
        metavar="PRINCIPAL",
        help="Only executions this principal (a user's or token's name) launched: their "
        "`launched_by` in `executions get --json`.",
        show_default=False,
    ),
    since: str = typer.Option(
        None,
        "--since",
        metavar="WHEN",
        help=f"Only executions created at or after WHEN: {WHEN_HELP}.",
        callback=_parse_when,
        show_default=False,
    ),
    until: str = typer.Option(
        None,
        "--until",
        metavar="WHEN",
        help="Only executions created before WHEN, written like --since.",
        callback=_parse_when,
        show_default=False,
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """List recent executions, newest first, maybe only those of one status, one launcher or a
    time window."""
    if since and until and datetime.fromisoformat(until) <= datetime.fromisoformat(since):
        raise typer.BadParameter(f"{until} is not after --since ({since})", param_hint="'--until'")

    def print_executions(items: list[dict[str, Any]], api_url: str) -> None:
        if not items:
            which = f" {status}" if status else ""
            say(f"no{which} executions{_filtered(launched_by, since, until)} on {api_url}")
            return
        _print_executions(items)

    show(
        ctx,
        lambda api: api.executions.list(
            limit=limit,
            status=status,
            launched_by=launched_by,
            created_after=since,
            created_before=until,
        ),
        as_json,
        print_executions,
    )


def _filtered(launched_by: str | None, since: str | None, until: str | None) -> str:
    """` launched by X, created since …` for the message of an empty list."""
    parts = []
    if launched_by:
        parts.append(f"launched by {launched_by}")
    if since:
        parts.append(f"created since {since}")
    if until:
        parts.append(f"created before {until}")
    return f" ({', '.join(parts)})" if parts else ""


def _print_executions(items: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    # The id is what one copies into `executions get`: never shortened.
    table.add_column("ID", no_wrap=True, min_width=max(len(item["id"]) for item in items))
    table.add_column("WORKFLOW", overflow="fold")
    table.add_column("STATUS", no_wrap=True)
    table.add_column("CREATED", no_wrap=True)
    for item in items:
        table.add_row(item["id"], item["workflow"], item["status"], _short_time(item))
    print_table(table)


def _short_time(item: dict[str, Any]) -> str:
    """`2026-11-29T08:45:41.089952Z` -> `2026-11-29 08:45:41` (UTC, as the API stores it)."""
    text = str(item.get("created_at") or "")
    return text.replace("T", " ")[:19]


@executions_app.command("get")
def executions_get(
    ctx: typer.Context,
    execution_id: str = ID_ARGUMENT,
    as_json: bool = JSON_OPTION,
) -> None:
    """Show one execution: status, inputs, task attempts, then outputs or the error."""
    from fleetflow.cli.remote import print_execution

    def render(execution: dict[str, Any], _api_url: str) -> None:
        print_execution(execution, console, attempts=True)

    show(ctx, lambda api: api.executions.get(execution_id), as_json, render, hint=EXECUTIONS_HINT)


@executions_app.command("wait")
def executions_wait(
    ctx: typer.Context,
    execution_id: str = ID_ARGUMENT,
    timeout: float = typer.Option(
        None,
        "--timeout",
        metavar="S",
        min=0,
        help="Give up after S seconds (exit status 124; the execution goes on).",
        show_default=False,
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the finished execution as the API's JSON."
    ),
) -> None:
    """Wait until an execution ends, showing its task attempts (on stderr), then print its
    outputs or error. Exits 0 when it SUCCEEDED, 1 when it FAILED or was CANCELLED.

    Example: fleetflow executions wait ex-… --timeout 600 && echo done
    """
    from fleetflow.cli.remote import (
        AttemptProgress,
        ExecutionFailedError,
        exit_still_running,
        log_fetcher,
        print_execution,
    )

    with client(ctx) as api, not_found_hint(api, EXECUTIONS_HINT):
        try:
            with AttemptProgress(err_console, fetch_log=log_fetcher(api, execution_id)) as shown:
                final = api.wait_for_execution(
                    execution_id, timeout=timeout, on_change=lambda e: shown.update(api_json(e))
                )
        except ExecutionTimeoutError as exc:
            exit_still_running(exc, execution_id)
    if as_json:
        print_json(final)
    else:
        print_execution(api_json(final), console)
    if final.status != "SUCCEEDED":
        raise ExecutionFailedError(f"execution {execution_id} {final.status}")


@executions_app.command("logs")
def executions_logs(
    ctx: typer.Context,
    execution_id: str = ID_ARGUMENT,
    node: str = typer.Option(
        None, "--node", metavar="NODE", help="Only this node's attempts (n0-…)."
    ),
    attempt: int = typer.Option(
        None, "--attempt", min=1, metavar="N", help="Only attempt number N of each node."
    ),
    follow: bool = typer.Option(
        False,
        "--follow",
        "-f",
        help="Keep printing new output until the execution ends, across retries and map elements.",
    ),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="JSON lines: one object per line printed (attempt_id, node_id, map_index, "
        "attempt_number, text, gap).",
    ),
) -> None:
    """Print what each task attempt printed (the last MiB of it), oldest attempt first.

    Running attempts' output is refreshed by their agent every few seconds. --follow polls it
    until the execution ends; when the lines come from more than one node or map element,
    each starts with its source (`n1-square[3]`, `#2` for a retry).

    Example: fleetflow executions logs ex-… --follow
    """
    with client(ctx) as api, not_found_hint(api, EXECUTIONS_HINT):
        if follow:
            _follow_logs(api, execution_id, node=node, attempt=attempt, as_json=as_json)
            return
        attempts = api.executions.logs(execution_id, node=node, attempt=attempt)
    if as_json:
        for entry in attempts:
            for line in (entry.log or "").splitlines():
                _print_json_line(LogLine.of(entry, line))
        return
    from fleetflow.cli.remote import describe_attempt

    if not attempts:
        say("no task attempt yet")
    for entry in attempts:
        console.rule(describe_attempt(api_json(entry)), align="left", style="dim")
        text = entry.log
        if text:
            console.out(text.rstrip("\n"), highlight=False)
        else:
            console.print("(no output stored)", style="dim", highlight=False)


def _print_json_line(line: LogLine) -> None:
    console.out(json.dumps(asdict(line)), highlight=False)


def _follow_logs(
    api: Client, execution_id: str, *, node: str | None, attempt: int | None, as_json: bool
) -> None:
    execution = api.executions.get(execution_id)
    prefixed = _has_several_sources(api, execution, node)
    last_attempt: dict[tuple[str, int | None], int] = {}
    for line in api.follow_logs(execution_id, node=node, attempt=attempt):
        if as_json:
            _print_json_line(line)
            continue
        source = _source(line)
        if not prefixed and last_attempt.get(source, line.attempt_number) != line.attempt_number:
            err_console.print(
                Text(f"--- {source[0]}: attempt {line.attempt_number} ---", style="dim"),
                highlight=False,
            )
        last_attempt[source] = line.attempt_number
        text = Text(line.text, style="yellow" if line.gap else "")
        if prefixed:
            retry = f"#{line.attempt_number}" if line.attempt_number > 1 else ""
            where = source[0] + ("" if source[1] is None else f"[{source[1]}]")
            text = Text(f"{where}{retry} | ", style="dim").append_text(text)
        console.print(text, highlight=False, soft_wrap=True)
    final = api.executions.get(execution_id)
    err_console.print(f"execution {execution_id} {final.status}", highlight=False)


def _source(line: LogLine) -> tuple[str, int | None]:
    return line.node_id, line.map_index


def _has_several_sources(api: Client, execution: ExecutionPublic, node: str | None) -> bool:
    """Whether the followed lines can come from more than one node or map element."""
    try:
        spec = api.workflows.get(execution.workflow, execution.version).spec
    except FleetflowError:
        return True  # cannot tell: say where every line comes from
    nodes = [n for n in spec.nodes if node is None or n.id == node]
    return len(nodes) > 1 or any(n.map for n in nodes)


@executions_app.command("outputs")
def executions_outputs(
    ctx: typer.Context,
    execution_id: str = ID_ARGUMENT,
    download: Path = typer.Option(
        None,
        "--download",
        metavar="DIR",
        help="Also download the File and Directory outputs, below DIR/<output>/, and print "
        "the outputs naming the local copies.",
        show_default=False,
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the outputs as indented JSON."),
) -> None:
    """Print a succeeded execution's outputs as JSON, by output name (one line unless
    --json).

    File and Directory outputs are read through the control plane with your rights, so
    --download works wherever the blob store is.

    Example: fleetflow executions outputs ex-… --download results/
    """
    with client(ctx) as api, not_found_hint(api, EXECUTIONS_HINT):
        if download is None:
            outputs = api.executions.succeeded(execution_id).outputs or {}
        else:
            downloaded = api.download_outputs(execution_id, download)
            outputs = downloaded.outputs
            _say_downloaded(downloaded.files, download)
    if as_json:
        print_json(outputs)
    else:
        console.out(json.dumps(outputs), highlight=False)


@executions_app.command("inputs")
def executions_inputs(
    ctx: typer.Context,
    execution_id: str = ID_ARGUMENT,
    download: Path = typer.Option(
        None,
        "--download",
        metavar="DIR",
        help="Also download the File and Directory inputs, below DIR/<input>/, and print the "
        "inputs naming the local copies.",
        show_default=False,
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the inputs as indented JSON."),
) -> None:
    """Print an execution's inputs as JSON, by input name (one line unless --json), whatever
    its status.

    File and Directory inputs are read through the control plane with your rights, as
    `executions outputs` reads outputs.

    Example: fleetflow executions inputs ex-… --download given/
    """
    with client(ctx) as api, not_found_hint(api, EXECUTIONS_HINT):
        if download is None:
            inputs = api.executions.get(execution_id).inputs or {}
        else:
            downloaded = api.download_inputs(execution_id, download)
            inputs = downloaded.inputs
            _say_downloaded(downloaded.files, download)
    if as_json:
        print_json(inputs)
    else:
        console.out(json.dumps(inputs), highlight=False)


def _say_downloaded(files: list[Path], directory: Path) -> None:
    """`downloaded N files to DIR` and each file, on stderr."""
    count = len(files)
    err_console.print(
        f"downloaded {count} file{'' if count == 1 else 's'} to {directory}",
        highlight=False,
        markup=False,
    )
    for path in files:
        err_console.print(f"  {path}", highlight=False, markup=False)


@executions_app.command("notifications")
def executions_notifications(
    ctx: typer.Context,
    execution_id: str = ID_ARGUMENT,
    as_json: bool = JSON_OPTION,
) -> None:
    """Show the execution's webhook deliveries: status, attempts, last answer (admins)."""

    def render(items: list[dict[str, Any]], _api_url: str) -> None:
        if not items:
            say(f"execution {execution_id} has sent no notifications")
            return
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        for column in ("ID", "ON", "URL", "STATUS", "ATTEMPTS", "CODE", "LAST ERROR"):
            table.add_column(column, overflow="fold")
        for item in items:
            code = item.get("last_status_code")
            table.add_row(
                item["id"],
                item["state"],
                item["url"],
                item["status"],
                str(item["attempts"]),
                "-" if code is None else str(code),
                item.get("last_error") or "-",
            )
        print_table(table)

    show(
        ctx,
        lambda api: api.executions.notifications(execution_id),
        as_json,
        render,
        hint=EXECUTIONS_HINT,
    )


@executions_app.command("cancel")
def executions_cancel(
    ctx: typer.Context,
    execution_id: str = ID_ARGUMENT,
    as_json: bool = typer.Option(
        False, "--json", help="Print the execution, as the API answers, as JSON."
    ),
) -> None:
    """Cancel an execution: its running task attempts are stopped on every cluster."""
    show(
        ctx,
        lambda api: api.cancel(execution_id),
        as_json,
        lambda execution, _: _print_cancelled(execution_id, execution["status"]),
        hint=EXECUTIONS_HINT,
    )


def _print_cancelled(execution_id: str, status: str) -> None:
    if status == "CANCELLED":
        console.print(f"execution [bold]{execution_id}[/bold] CANCELLED", highlight=False)
    elif status in ("SUCCEEDED", "FAILED"):
        console.print(
            f"execution [bold]{execution_id}[/bold] had already finished: {status}",
            highlight=False,
        )
    else:
        console.print(
            f"execution [bold]{execution_id}[/bold] is being cancelled (now {status}); "
            f"`fleetflow executions wait {execution_id}` returns when it is done",
            highlight=False,
        )


@executions_app.command("relaunch")
def executions_relaunch(
    ctx: typer.Context,
    execution_id: str = ID_ARGUMENT,
    latest: bool = typer.Option(
        False,
        "--latest",
        help="Run the workflow's latest registered version, not the one the execution ran.",
    ),
    wait: bool = WAIT_OPTION,
    timeout: float = TIMEOUT_OPTION,
    as_json: bool = NEW_JSON_OPTION,
) -> None:
    """Start an execution again as a new one, on the same inputs. Prints the new id.

    Example: fleetflow executions relaunch ex-… --latest --wait
    """
    _again(
        ctx,
        execution_id,
        lambda api: api.executions.relaunch(execution_id, latest=latest),
        wait=wait,
        timeout=timeout,
        as_json=as_json,
    )


@executions_app.command("recover")
def executions_recover(
    ctx: typer.Context,
    execution_id: str = ID_ARGUMENT,
    wait: bool = WAIT_OPTION,
    timeout: float = TIMEOUT_OPTION,
    as_json: bool = NEW_JSON_OPTION,
) -> None:
    """Re-run a FAILED or CANCELLED execution from where it stopped, as a new execution:
    the tasks (and map elements) that succeeded are not run again, their outputs are reused
    (shown as cache hits); the failed ones and what follows them run. Prints the new id.

    Example: fleetflow executions recover ex-… --wait
    """
    _again(
        ctx,
        execution_id,
        lambda api: api.executions.recover(execution_id),
        wait=wait,
        timeout=timeout,
        as_json=as_json,
    )


def _again(
    ctx: typer.Context,
    execution_id: str,
    create: Callable[[Client], ExecutionPublic],
    *,
    wait: bool,
    timeout: float | None,
    as_json: bool,
) -> None:
    from fleetflow.cli.remote import follow_remote

    with client(ctx) as api:
        with not_found_hint(api, EXECUTIONS_HINT):
            execution = create(api)
        source = execution.recovered_from or execution.relaunched_from
        info = err_console if as_json else console
        how = "recovered" if execution.recovered_from else "relaunched"
        info.print(
            f"{how} from {source}: {execution.workflow} version {execution.version}",
            markup=False,
            highlight=False,
        )
        follow_remote(
            api, execution, wait=wait, timeout=timeout, console=console, info=info, as_json=as_json
        )
