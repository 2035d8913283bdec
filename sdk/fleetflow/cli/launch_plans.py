"""`fleetflow launchplans create|list|get|launch|activate|deactivate|pause|resume|backfill`.

A launch plan names a registered workflow version with fixed inputs (`--fixed name=value`, that
no launch may change), default inputs (`--default name=value`), labels, a priority and an
optional schedule (`--cron` in `--timezone`, or `--every SECONDS`) that runs while the plan is
active. Values are JSON (`--fixed n=3`, `--fixed 'xs=[1,2]'`), else plain strings. With
`--json` stdout holds only the API's JSON answer.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import typer

from fleetflow.api_models.launch_plans import OverlapPolicy, ScheduleSpec
from fleetflow.cli.common import (
    JSON_OPTION,
    LAUNCH_PLANS_HINT,
    NEW_JSON_OPTION,
    NOTIFY_FORMAT_OPTION,
    NOTIFY_ON_OPTION,
    NOTIFY_WEBHOOK_OPTION,
    TIMEOUT_OPTION,
    WAIT_OPTION,
    CommandUsageError,
    client,
    console,
    err_console,
    new_table,
    notification_rules,
    print_fields,
    print_table,
    say,
    show,
    timestamp,
)

HINT = LAUNCH_PLANS_HINT

launchplans_app = typer.Typer(
    help="Launch plans: a workflow version with fixed and default inputs and a schedule.",
    no_args_is_help=True,
)
NAME = typer.Argument(..., metavar="NAME", help="The launch plan's name.", show_default=False)


def _pairs(values: list[str], flag: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in values:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise CommandUsageError(f"{flag} takes name=value, got {item!r}")
        try:
            found[name] = json.loads(text)
        except json.JSONDecodeError:
            found[name] = text
    return found


def _schedule(plan: dict[str, Any]) -> str:
    schedule = plan.get("schedule")
    if not schedule:
        return "-"
    when = (
        f"cron {schedule['cron']} ({schedule['timezone']})"
        if schedule.get("cron")
        else f"every {schedule['interval_seconds']}s"
    )
    return f"{when}, overlap {schedule['overlap']}"


def _state(plan: dict[str, Any]) -> str:
    if not plan["active"]:
        return "inactive"
    return "paused" if plan["paused"] else "active"


def _print_plan(plan: dict[str, Any], _api_url: str) -> None:
    print_fields(
        f"launch plan {plan['name']}",
        [
            ("workflow", f"{plan['workflow']} version {plan['version']}"),
            ("state", _state(plan)),
            ("schedule", _schedule(plan)),
            ("fixed inputs", json.dumps(plan["fixed_inputs"])),
            ("default inputs", json.dumps(plan["default_inputs"])),
            ("labels", json.dumps(plan["labels"])),
            ("priority", str(plan["priority"])),
            (
                "notifications",
                ", ".join(
                    f"{rule['url']} on {','.join(rule['on'])} ({rule['format']})"
                    for rule in plan.get("notifications") or []
                )
                or "-",
            ),
            ("created", timestamp(plan.get("created_at"))),
        ],
    )


@launchplans_app.command("create")
def create(
    ctx: typer.Context,
    name: str = NAME,
    workflow: str = typer.Argument(..., metavar="WORKFLOW", help="Registered workflow name."),
    version: str | None = typer.Option(None, "--version", help="Default: the latest."),
    fixed: list[str] = typer.Option([], "--fixed", help="name=value, fixed (repeatable)."),
    default: list[str] = typer.Option([], "--default", help="name=value, a default (repeatable)."),
    cron: str | None = typer.Option(None, "--cron", help='5-field cron, e.g. "0 3 * * *".'),
    timezone: str = typer.Option("UTC", "--timezone", help="IANA time zone of --cron."),
    every: int | None = typer.Option(None, "--every", min=1, help="Launch every SECONDS."),
    overlap: OverlapPolicy = typer.Option(
        OverlapPolicy.SKIP, "--overlap", help="While the previous execution runs."
    ),
    catchup: int = typer.Option(
        600, "--catchup-window", min=10, help="Seconds of missed launches made after downtime."
    ),
    label: list[str] = typer.Option([], "--label", help="key=value (repeatable)."),
    priority: int = typer.Option(0, "--priority", min=-1000, max=1000),
    notify_webhook: list[str] = NOTIFY_WEBHOOK_OPTION,
    notify_on: str = NOTIFY_ON_OPTION,
    notify_format: str = NOTIFY_FORMAT_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Create a launch plan (or replace the inactive one of NAME); every execution it
    launches calls its --notify-webhook URLs when it ends."""
    schedule = None
    if cron is not None or every is not None:
        try:
            schedule = ScheduleSpec(
                cron=cron,
                timezone=timezone,
                interval_seconds=every,
                overlap=overlap,
                catchup_window_seconds=catchup,
            )
        except ValueError as exc:
            raise CommandUsageError(f"invalid schedule: {exc}") from None
    labels = {k: str(v) for k, v in _pairs(label, "--label").items()}
    rules = notification_rules(notify_webhook, notify_on, notify_format)
    fixed_inputs, default_inputs = _pairs(fixed, "--fixed"), _pairs(default, "--default")
    show(
        ctx,
        lambda api: api.launchplans.create(
            name,
            workflow,
            version=version,
            fixed_inputs=fixed_inputs,
            default_inputs=default_inputs,
            schedule=schedule,
            labels=labels,
            priority=priority,
            notifications=rules,
        ),
        as_json,
        _print_plan,
    )


@launchplans_app.command("list")
def list_plans(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """List your tenant's launch plans."""

    def render(plans: list[dict[str, Any]], api_url: str) -> None:
        if not plans:
            say(f"no launch plans on {api_url}: `fleetflow launchplans create` makes one")
            return
        table = new_table("NAME", "WORKFLOW", "VERSION", "STATE", "SCHEDULE")
        for plan in plans:
            table.add_row(
                plan["name"], plan["workflow"], plan["version"], _state(plan), _schedule(plan)
            )
        print_table(table)

    show(ctx, lambda api: api.launchplans.list(), as_json, render)


@launchplans_app.command("get")
def get(ctx: typer.Context, name: str = NAME, as_json: bool = JSON_OPTION) -> None:
    """Show one launch plan."""
    show(ctx, lambda api: api.launchplans.get(name), as_json, _print_plan, hint=HINT)


@launchplans_app.command("launch")
def launch(
    ctx: typer.Context,
    name: str = NAME,
    inputs: list[str] = typer.Option([], "--input", help="name=value, overriding a default."),
    wait: bool = WAIT_OPTION,
    timeout: float = TIMEOUT_OPTION,
    as_json: bool = NEW_JSON_OPTION,
) -> None:
    """Launch the plan now. Prints the new execution's id.

    Example: fleetflow launchplans launch nightly --input n=3 --wait
    (`fleetflow run --remote --launch-plan nightly --n 3` does the same with typed flags.)
    """
    from fleetflow.cli.remote import launch_plan

    given = _pairs(inputs, "--input")
    with client(ctx) as api:
        launch_plan(
            api,
            name,
            given,
            wait=wait,
            timeout=timeout,
            console=console,
            info=err_console if as_json else console,
            as_json=as_json,
        )


def _action(verb: str, doc: str) -> None:
    def command(ctx: typer.Context, name: str = NAME, as_json: bool = JSON_OPTION) -> None:
        show(ctx, lambda api: getattr(api.launchplans, verb)(name), as_json, _print_plan, hint=HINT)

    command.__doc__ = doc
    launchplans_app.command(verb)(command)


_action("activate", "Start the plan's schedule (a durable Temporal Schedule).")
_action("deactivate", "Delete the plan's schedule; executions it launched run on.")
_action("pause", "Stop launching until resumed.")
_action("resume", "Launch on schedule again.")


@launchplans_app.command("backfill")
def backfill(
    ctx: typer.Context,
    name: str = NAME,
    start: datetime = typer.Option(..., "--start", help="ISO 8601 (UTC unless an offset)."),
    end: datetime = typer.Option(..., "--end", help="ISO 8601, after --start."),
    overlap: OverlapPolicy = typer.Option(OverlapPolicy.ALLOW_ALL, "--overlap"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Launch now every time the schedule names in [START, END)."""
    if end <= start:
        raise CommandUsageError("--end must be after --start")
    show(
        ctx,
        lambda api: api.launchplans.backfill(name, start, end, overlap=overlap),
        as_json,
        _print_plan,
        hint=HINT,
    )
