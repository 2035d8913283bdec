"""`fleetflow admin …`: what platform and tenant admins do through the REST API.

The `clusters` group is here: create a cluster (its agent token is printed once), list and
inspect clusters as the control plane sees them, rotate a cluster's token, grant tenants the
use of clusters. Tenants, users and their tokens, roles, quotas and the audit log are in
`cli/tenancy.py`. Every command is a thin layer over a `fleetflow.Client` method, so scripts
can do the same from Python; the control plane decides who may run which.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from fleetflow.cli.cohorts import cohorts_app
from fleetflow.cli.common import (
    JSON_OPTION,
    ago,
    console,
    print_fields,
    print_table,
    say,
    show,
    timestamp,
)
from fleetflow.cli.secrets import admin_secrets_app
from fleetflow.cli.tenancy import (
    TENANTS_HINT,
    audit,
    quotas_app,
    roles_app,
    tenants_app,
    tokens_app,
    users_app,
)
from fleetflow.errors import FleetflowError

admin_app = typer.Typer(
    help="Administer the platform: tenants, users and their tokens, roles, quotas, cohorts, "
    "clusters, secrets keys, the audit log.",
    no_args_is_help=True,
)
clusters_app = typer.Typer(
    help="Create clusters, see their status and capacity, rotate their agent tokens, grant "
    "tenants their use.",
    no_args_is_help=True,
)
admin_app.add_typer(tenants_app, name="tenants")
admin_app.add_typer(users_app, name="users")
admin_app.add_typer(tokens_app, name="tokens")
admin_app.add_typer(roles_app, name="roles")
admin_app.add_typer(quotas_app, name="quotas")
admin_app.add_typer(cohorts_app, name="cohorts")
admin_app.add_typer(clusters_app, name="clusters")
admin_app.add_typer(admin_secrets_app, name="secrets")
admin_app.command("audit")(audit)

STATUS_STYLES = {"online": "green", "degraded": "yellow", "offline": "red"}
AGENT_COMMAND = "fleetflow agent run --control-plane HOST:PORT"
CLUSTERS_HINT = "`fleetflow admin clusters list` shows the clusters"
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


def _print_token(answer: dict[str, Any], _api_url: str, *, rotated: bool = False) -> None:
    """A created cluster's or rotated agent token, with how to start its agent."""
    name, token = answer["cluster"]["name"], answer["agent_token"]
    if rotated:
        console.print(
            f"new agent token for cluster {name}; the old one no longer works, so restart the "
            "cluster's agent with this one",
            highlight=False,
            markup=False,
        )
    else:
        labels = _labels(answer["cluster"])
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
    ctx: typer.Context,
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
    as_json: bool = JSON_OPTION,
) -> None:
    """Create a cluster and print its agent token, once: store it where the agent runs."""
    labels = parse_labels(label)
    show(ctx, lambda api: api.clusters.create(name, labels), as_json, _print_token)


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


@clusters_app.command("rotate-token", no_args_is_help=True, help=ROTATE_HELP)
def clusters_rotate_token(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help=_NAME_HELP, show_default=False),
    as_json: bool = JSON_OPTION,
) -> None:
    """`fleetflow admin clusters rotate-token NAME` (help: ROTATE_HELP)."""
    render = partial(_print_token, rotated=True)
    show(ctx, lambda api: api.clusters.rotate_token(name), as_json, render, hint=CLUSTERS_HINT)


@clusters_app.command("list", help=LIST_HELP)
def clusters_list(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """`fleetflow admin clusters list` (help: LIST_HELP)."""
    show(ctx, lambda api: api.clusters.list(), as_json, _print_clusters)


def _print_clusters(clusters: list[dict[str, Any]], api_url: str) -> None:
    if not clusters:
        console.print(
            f"no clusters on {api_url}; create one with `fleetflow admin clusters create NAME`",
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
            ago(cluster.get("last_heartbeat_at"), now),
            _gpus(cluster),
            str(cluster.get("active_attempts", 0)),
        )
    print_table(table)


@clusters_app.command("get", no_args_is_help=True)
def clusters_get(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help=_NAME_HELP, show_default=False),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show one cluster: status, labels, agent, capacity as last heartbeated, active attempts."""
    show(ctx, lambda api: api.clusters.get(name), as_json, _print_cluster, hint=CLUSTERS_HINT)


def _print_cluster(cluster: dict[str, Any], _api_url: str) -> None:
    heartbeat = cluster.get("last_heartbeat_at")
    rows: list[tuple[str, str | Text]] = [
        ("status", _status(cluster)),
        ("labels", _labels(cluster)),
        ("agent version", cluster.get("agent_version") or "- (no agent has registered)"),
        (
            "last heartbeat",
            f"{timestamp(heartbeat)} ({ago(heartbeat, datetime.now(UTC))})"
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
    rows.append(("created", timestamp(cluster.get("created_at"))))
    print_fields(f"cluster {cluster['name']}", rows)


GRANT_HELP = (
    "Let tenant T's tasks be placed on CLUSTER ('*': on every cluster).\n\n"
    "`fleetflow admin tenants get T` lists the clusters a tenant is granted."
)
_GRANT_TENANT_ARGUMENT = typer.Argument(
    ...,
    metavar="T",
    help="The tenant, as `fleetflow admin tenants list` shows it.",
    show_default=False,
)
_GRANT_CLUSTER_ARGUMENT = typer.Argument(
    ...,
    metavar="CLUSTER",
    help="The cluster, as `fleetflow admin clusters list` shows it, or '*'.",
    show_default=False,
)


def _cluster_words(cluster: str) -> str:
    return "every cluster" if cluster == "*" else f"cluster {cluster}"


@clusters_app.command("grant", no_args_is_help=True, help=GRANT_HELP)
def clusters_grant(
    ctx: typer.Context,
    tenant: str = _GRANT_TENANT_ARGUMENT,
    cluster: str = _GRANT_CLUSTER_ARGUMENT,
    as_json: bool = JSON_OPTION,
) -> None:
    """`fleetflow admin clusters grant T CLUSTER` (help: GRANT_HELP)."""
    show(
        ctx,
        lambda api: api.admin.grant_cluster(tenant, cluster),
        as_json,
        lambda *_: say(f"tenant {tenant} may now run on {_cluster_words(cluster)}"),
        hint=f"{CLUSTERS_HINT}, and {TENANTS_HINT}",
    )


@clusters_app.command("revoke-grant", no_args_is_help=True)
def clusters_revoke_grant(
    ctx: typer.Context,
    tenant: str = _GRANT_TENANT_ARGUMENT,
    cluster: str = _GRANT_CLUSTER_ARGUMENT,
    as_json: bool = JSON_OPTION,
) -> None:
    """Take back a `clusters grant`: no new task of tenant T is placed on CLUSTER."""
    hint = f"`fleetflow admin tenants get {tenant}` lists the clusters it is granted"
    show(
        ctx,
        lambda api: api.admin.revoke_cluster_grant(tenant, cluster),
        as_json,
        lambda *_: say(f"tenant {tenant} may no longer run on {_cluster_words(cluster)}"),
        hint=hint,
    )


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
