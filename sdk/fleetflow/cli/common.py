"""What every command that talks to the control plane shares: the client it uses (with the
tenant the root `--tenant` option asked for), the consoles, and how tables, field lists,
JSON answers and times are printed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer
from pydantic_core import to_jsonable_python
from rich.console import Console
from rich.table import Table
from rich.text import Text

from fleetflow.errors import FleetflowError
from fleetflow.timestamps import parse_time

if TYPE_CHECKING:
    from fleetflow.api_models.notifications import NotificationRule
    from fleetflow.client import Client

# soft_wrap: ids, tokens and paths stay on one line when the output is not a terminal.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

JSON_HELP = "Print the API's JSON answer as is."
# The `--json` option of every command that prints an API answer.
JSON_OPTION = typer.Option(False, "--json", help=JSON_HELP)
TENANT_META_KEY = "fleetflow.tenant"
LAUNCH_PLANS_HINT = "`fleetflow launchplans list` shows your tenant's launch plans"
# The options of every command that creates an execution and may follow it
# (`executions relaunch|recover`, `launchplans launch`).
WAIT_OPTION = typer.Option(
    False, "--wait", help="Follow the new execution until it ends, then print its outputs."
)
TIMEOUT_OPTION = typer.Option(
    None,
    "--timeout",
    metavar="S",
    min=0,
    help="With --wait: give up after S seconds (exit status 124; it goes on).",
    show_default=False,
)
NEW_JSON_OPTION = typer.Option(
    False, "--json", help="Print the new execution (finished, with --wait) as JSON."
)


class CommandUsageError(FleetflowError, ValueError):
    """Options or arguments that cannot go together (`--dry-run` without `--remote`): printed
    as one `error:` line, exit code 2 like the parser's own usage errors."""


def acting_tenant(ctx: typer.Context, tenant: str | None = None) -> str | None:
    """The tenant a command acts in: its own `--tenant`, else the root `fleetflow --tenant`;
    None leaves it to `Client` (FLEETFLOW_TENANT, the CLI config, the home tenant)."""
    return tenant or ctx.meta.get(TENANT_META_KEY)


def client(ctx: typer.Context, tenant: str | None = None) -> Client:
    """The `Client` a command uses: URL and token from the CLI config and environment, acting
    in `acting_tenant(ctx, tenant)`."""
    from fleetflow.client import Client

    return Client(tenant=acting_tenant(ctx, tenant))


@contextmanager
def not_found_hint(api: Client, hint: str) -> Iterator[None]:
    """A 404 from the calls inside becomes the server's reason plus `hint` (the command that
    lists what exists)."""
    from fleetflow.client import ApiError

    try:
        yield
    except ApiError as exc:
        if exc.status_code == 404:
            raise FleetflowError(f"{exc.detail} on {api.api_url}; {hint}") from None
        raise


def api_json(answer: Any) -> Any:
    """A `Client` answer (models, lists of them) as the API's JSON, which the CLI prints."""
    return to_jsonable_python(answer)


def print_json(value: Any, out: Console = console) -> None:
    """`value` (a `Client` answer or JSON) as indented JSON, uncoloured unless `out` is a
    terminal."""
    out.print_json(json.dumps(api_json(value)))


def show(
    ctx: typer.Context,
    call: Callable[[Client], Any],
    as_json: bool,
    render: Callable[[Any, str], None],
    *,
    hint: str | None = None,
    tenant: str | None = None,
) -> None:
    """What most commands do: `call` the API with the command's client (acting in `tenant`;
    a 404 gets `hint`), then print the answer as the API's JSON with `--json`, else as
    `render` shows that JSON (given the control plane's URL too, for the next step it
    suggests)."""
    with client(ctx, tenant) as api, not_found_hint(api, hint) if hint else nullcontext():
        answer = api_json(call(api))
    if as_json:
        print_json(answer)
    else:
        render(answer, api.api_url)


def say(message: str | Text) -> None:
    """One line for humans, printed as written (no markup, no highlighting)."""
    console.print(message, highlight=False, markup=False)


def print_table(table: Table, on: Console | None = None) -> None:
    """Print `table` on `on` (stdout's console by default). Piped into grep or awk, a row
    stays one line whatever the width COLUMNS or the terminal says."""
    target = on or console
    if target.is_terminal:
        target.print(table)
        return
    width = target.width  # a console's own width bounds `print(width=...)`: widen it a while
    target.width = 1000
    try:
        target.print(table)
    finally:
        target.width = width


def new_table(*columns: str, right: Sequence[str] = ()) -> Table:
    """A borderless table in the CLI's style; columns named in `right` are right-aligned."""
    table = Table(box=None, pad_edge=False)
    for column in columns:
        table.add_column(column, justify="right" if column in right else "left", overflow="fold")
    return table


def print_fields(title: str, rows: Sequence[tuple[str, str | Text]]) -> None:
    """`title` in bold, then one dim `field` and its value per line."""
    console.print(Text(title, style="bold"))
    width = max((len(field) for field, _ in rows), default=0) + 2
    for field, value in rows:
        line = Text(f"  {field:<{width}}", style="dim")
        line.append(value if isinstance(value, Text) else Text(value))
        console.print(line, highlight=False)


def timestamp(text: str | None, never: str = "-") -> str:
    """`2026-11-29T08:45:41.089952Z` -> `2026-11-29 08:45:41 UTC`; `never` for none."""
    parsed = parse_time(text)
    return parsed.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if parsed else never


def ago(text: str | None, now: datetime) -> str:
    """How long ago, roughly: `4s ago`, `12m ago`, `3h ago`, `2d ago`; `never` for none."""
    parsed = parse_time(text)
    if parsed is None:
        return "never"
    seconds = max(int((now - parsed).total_seconds()), 0)  # clocks may disagree slightly
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def quantity(number_of_bytes: int | float) -> str:
    """Bytes as Kubernetes writes them: `64Gi`, `1.5Ti`, `512Mi`, `100`."""
    for unit, size in (("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if number_of_bytes >= size:
            return f"{round(number_of_bytes / size, 1):g}{unit}"
    return f"{number_of_bytes:g}"


def describe_role(grant: dict[str, Any]) -> str:
    """`developer in acme`, `platform-admin (every tenant)`."""
    tenant = grant.get("tenant")
    if tenant in (None, "*"):
        return f"{grant['role']} (every tenant)"
    return f"{grant['role']} in {tenant}"


def describe_roles(grants: Sequence[dict[str, Any]]) -> str:
    return ", ".join(describe_role(grant) for grant in grants) or "none"


NOTIFY_WEBHOOK_OPTION = typer.Option(
    [],
    "--notify-webhook",
    metavar="URL",
    help="Call this webhook (signed JSON) when the execution ends as --notify-on says "
    "(repeatable).",
)
NOTIFY_ON_OPTION = typer.Option(
    "failed",
    "--notify-on",
    metavar="STATES",
    help="Comma-separated terminal states that call --notify-webhook: succeeded, failed, "
    "cancelled.",
)
NOTIFY_FORMAT_OPTION = typer.Option(
    "json", "--notify-format", help="Body of --notify-webhook calls: json or slack."
)


def notification_rules(webhooks: list[str], on: str, fmt: str) -> list[NotificationRule]:
    """One rule per `--notify-webhook`, firing on the `--notify-on` states."""
    from pydantic import ValidationError

    from fleetflow.api_models.notifications import NotificationRule

    rules = []
    for url in webhooks:
        try:
            rules.append(
                NotificationRule.model_validate(
                    {
                        "on": [state.strip().lower() for state in on.split(",") if state.strip()],
                        "webhook": {"url": url},
                        "format": fmt,
                    }
                )
            )
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
                for error in exc.errors()
            )
            raise CommandUsageError(f"invalid --notify-* option: {problems}") from None
    return rules
