"""`fleetflow admin …`: what a platform admin does through the REST API.

For now the `clusters` group: create a cluster (its agent token is printed once), list and
inspect clusters as the control plane sees them, rotate a cluster's token. Every command is a
thin layer over a `fleetflow.Client` method, so scripts can do the same from Python.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from fleetflow.errors import FleetflowError

if TYPE_CHECKING:
    from fleetflow.client import Client

admin_app = typer.Typer(
    help="Administer the platform: clusters and their agent tokens.", no_args_is_help=True
)
clusters_app = typer.Typer(
    help="Create clusters, see their status and capacity, rotate their agent tokens.",
    no_args_is_help=True,
)
admin_app.add_typer(clusters_app, name="clusters")

console = Console(soft_wrap=True)

STATUS_STYLES = {"online": "green", "degraded": "yellow", "offline": "red"}
AGENT_COMMAND = "fleetflow agent run --control-plane HOST:PORT"
_JSON_HELP = "Print the API's JSON answer as is."
_NAME_HELP = "Cluster name, as `fleetflow admin clusters list` shows it."


def parse_labels(values: list[str] | None) -> dict[str, str]:
    """`["zone=eu", "gpu=a100"]` -> `{"zone": "eu", "gpu": "a100"}`.

    Raises:
        FleetflowError: a value is not `key=value`, or a key is given twice.
    """
    labels: dict[str, str] = {}
    for value in values or []:
        key, sep, label = value.partition("=")
        key = key.strip()
        if not sep or not key:
            raise FleetflowError(
                f"--label {value!r} is not key=value (e.g. --label zone=eu; an empty value is "
                "written key=)"
            )
        if key in labels and labels[key] != label:
            raise FleetflowError(f"--label {key} is given twice, with different values")
        labels[key] = label
    return labels


def _not_found_hint(exc: Exception, api_url: str) -> FleetflowError:
    detail = getattr(exc, "detail", str(exc))
    return FleetflowError(
        f"{detail} on {api_url}; `fleetflow admin clusters list` shows the clusters"
    )


def _print_token(cluster: dict[str, Any], token: str, *, rotated: bool) -> None:
    name = cluster["name"]
    if rotated:
        console.print(
            f"new agent token for cluster {name}; the old one no longer works, so restart the "
            "cluster's agent with this one",
            highlight=False,
            markup=False,
        )
    else:
        labels = _labels(cluster)
        console.print(
            f"created cluster {name}" + (f" (labels {labels})" if labels != "-" else ""),
            highlight=False,
            markup=False,
        )
    console.print(
        "agent token (shown only this once: the control plane keeps just its hash):",
        highlight=False,
        markup=False,
    )
    console.print(f"  {token}", highlight=False, markup=False)
    console.print("start the cluster's agent with it:", highlight=False, markup=False)
    console.print(f"  FLEETFLOW_AGENT_TOKEN={token} {AGENT_COMMAND}", highlight=False, markup=False)
    console.print(
        "  (HOST:PORT: the control plane's agent gRPC endpoint, port 9090 unless "
        "FLEETFLOW_GRPC_PORT says otherwise; docs/operator.md has the rest)",
        highlight=False,
        markup=False,
    )


@clusters_app.command("create", no_args_is_help=True)
def clusters_create(
    name: str = typer.Argument(
        ...,
        metavar="NAME",
        help="A DNS label: lowercase letters, digits and '-' (e.g. gpu-east-1).",
        show_default=False,
    ),
    label: list[str] = typer.Option(
        None,
        "--label",
        "-l",
        metavar="KEY=VALUE",
        help="A label placement can match; repeat for more (--label zone=eu --label gpu=a100).",
        show_default=False,
    ),
    as_json: bool = typer.Option(False, "--json", help=_JSON_HELP),
) -> None:
    """Create a cluster and print its agent token, once: store it where the agent runs."""
    from fleetflow.client import Client

    labels = parse_labels(label)
    with Client() as client:
        created = client.create_cluster(name, labels)
    if as_json:
        console.print_json(json.dumps(created))
        return
    _print_token(created["cluster"], created["agent_token"], rotated=False)


# Help texts as one string each: a docstring's line breaks would show in the rendered help.
ROTATE_HELP = (
    "Replace a cluster's agent token and print the new one, once.\n\n"
    "The old token stops working at once: the agent using it exits and must be restarted "
    "with the new token."
)
LIST_HELP = (
    "List clusters: status, agent, last heartbeat, free/total GPUs, active attempts.\n\n"
    "A cluster is online while its agent heartbeats on time, degraded after a missed "
    "heartbeat or two (it still receives work), offline past the heartbeat grace or before "
    "its agent's first heartbeat (nothing is placed there; its attempts run again elsewhere)."
)


def _for_cluster(call: Callable[[Client], dict[str, Any]]) -> dict[str, Any]:
    """Run one call about a named cluster; a 404 becomes a hint to list the clusters."""
    from fleetflow.client import ApiError, Client

    with Client() as client:
        try:
            return call(client)
        except ApiError as exc:
            if exc.status_code == 404:
                raise _not_found_hint(exc, client.api_url) from None
            raise


@clusters_app.command("rotate-token", no_args_is_help=True, help=ROTATE_HELP)
def clusters_rotate_token(
    name: str = typer.Argument(..., metavar="NAME", help=_NAME_HELP, show_default=False),
    as_json: bool = typer.Option(False, "--json", help=_JSON_HELP),
) -> None:
    """`fleetflow admin clusters rotate-token NAME` (help: ROTATE_HELP)."""
    rotated = _for_cluster(lambda client: client.rotate_cluster_token(name))
    if as_json:
        console.print_json(json.dumps(rotated))
        return
    _print_token(rotated["cluster"], rotated["agent_token"], rotated=True)


@clusters_app.command("list", help=LIST_HELP)
def clusters_list(as_json: bool = typer.Option(False, "--json", help=_JSON_HELP)) -> None:
    """`fleetflow admin clusters list` (help: LIST_HELP)."""
    from fleetflow.client import Client

    with Client() as client:
        clusters = client.list_clusters()
    if as_json:
        console.print_json(json.dumps(clusters))
        return
    if not clusters:
        console.print(
            f"no clusters on {client.api_url}; create one with "
            "`fleetflow admin clusters create NAME`",
            highlight=False,
            markup=False,
        )
        return
    table = Table(box=None, pad_edge=False)
    table.add_column("NAME", no_wrap=True)
    table.add_column("STATUS", no_wrap=True)
    table.add_column("AGENT", no_wrap=True)
    table.add_column("LAST HEARTBEAT", no_wrap=True)
    table.add_column("GPUS FREE/TOTAL", overflow="fold")
    table.add_column("ACTIVE", no_wrap=True, justify="right")
    now = datetime.now(UTC)
    for cluster in clusters:
        table.add_row(
            cluster["name"],
            _status(cluster),
            cluster.get("agent_version") or "-",
            _ago(cluster.get("last_heartbeat_at"), now),
            _gpus(cluster),
            str(cluster.get("active_attempts", 0)),
        )
    # Piped into grep or awk, a row stays one line whatever its width.
    out = console if console.is_terminal else Console(file=console.file, width=1000)
    out.print(table)


@clusters_app.command("get", no_args_is_help=True)
def clusters_get(
    name: str = typer.Argument(..., metavar="NAME", help=_NAME_HELP, show_default=False),
    as_json: bool = typer.Option(False, "--json", help=_JSON_HELP),
) -> None:
    """Show one cluster: status, labels, agent, capacity as last heartbeated, active attempts."""
    cluster = _for_cluster(lambda client: client.get_cluster(name))
    if as_json:
        console.print_json(json.dumps(cluster))
        return
    heartbeat = cluster.get("last_heartbeat_at")
    rows: list[tuple[str, str | Text]] = [
        ("status", _status(cluster)),
        ("labels", _labels(cluster)),
        ("agent version", cluster.get("agent_version") or "- (no agent has registered)"),
        (
            "last heartbeat",
            f"{_timestamp(heartbeat)} ({_ago(heartbeat, datetime.now(UTC))})"
            if heartbeat
            else "never",
        ),
    ]
    capacity = cluster.get("capacity")
    if capacity:
        rows.append(
            (
                "cpu in use",
                f"{capacity.get('cpu_in_use', 0):g} of {capacity.get('cpu_allocatable', 0):g}",
            )
        )
        rows.append(
            (
                "memory in use",
                f"{_gib(capacity.get('memory_bytes_in_use', 0))} of "
                f"{_gib(capacity.get('memory_bytes_allocatable', 0))}",
            )
        )
        rows.append(("gpus free/total", _gpus(cluster)))
    else:
        rows.append(("capacity", "- (not heartbeated yet)"))
    rows.append(("active attempts", str(cluster.get("active_attempts", 0))))
    rows.append(("created", _timestamp(cluster.get("created_at"))))
    console.print(Text(f"cluster {cluster['name']}", style="bold"))
    width = max(len(field) for field, _ in rows) + 2
    for field, value in rows:
        line = Text(f"  {field:<{width}}", style="dim")
        line.append(value if isinstance(value, Text) else Text(value))
        console.print(line, highlight=False)


def _status(cluster: dict[str, Any]) -> Text:
    status = str(cluster.get("status", "?"))
    return Text(status, style=STATUS_STYLES.get(status, ""))


def _labels(cluster: dict[str, Any]) -> str:
    labels = cluster.get("labels") or {}
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def _gpus(cluster: dict[str, Any]) -> str:
    """`a100 3/4, h100 0/8`: free and allocatable per GPU type, `-` when there are none."""
    gpus = (cluster.get("capacity") or {}).get("gpus") or []
    parts = []
    for gpu in sorted(gpus, key=lambda g: str(g.get("gpu_type", ""))):
        total = int(gpu.get("allocatable", 0))
        free = max(total - int(gpu.get("in_use", 0)), 0)
        parts.append(f"{gpu.get('gpu_type') or '?'} {free}/{total}")
    return ", ".join(parts) or "-"


def _gib(value: Any) -> str:
    return f"{int(value or 0) / (1 << 30):.1f} GiB"


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _timestamp(text: str | None) -> str:
    """`2026-11-29T08:45:41.089952Z` -> `2026-11-29 08:45:41 UTC`."""
    parsed = _parse_time(text)
    return parsed.strftime("%Y-%m-%d %H:%M:%S UTC") if parsed else "-"


def _ago(text: str | None, now: datetime) -> str:
    """How long ago, roughly: `4s ago`, `12m ago`, `3h ago`, `2d ago`; `never` for none."""
    parsed = _parse_time(text)
    if parsed is None:
        return "never"
    seconds = max(int((now - parsed).total_seconds()), 0)  # clocks may disagree slightly
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"
