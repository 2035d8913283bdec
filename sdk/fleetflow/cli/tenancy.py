"""`fleetflow admin tenants|users|tokens|roles|quotas|audit`: who may use the platform, as what,
and how much.

Each command is a thin layer over one `fleetflow.Client` method; the control plane decides who
may do what (a platform admin everything, a tenant admin their own tenant). What can be checked
here is checked before anything is sent: role names, `--gpu-type TYPE=N`, `--memory` and
`--cpu` quantities. Tokens are printed once, when created: the control plane keeps only hashes.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import typer
from rich.text import Text

from fleetflow.cli.common import (
    JSON_OPTION,
    describe_roles,
    new_table,
    parse_time,
    print_fields,
    print_table,
    say,
    show,
    timestamp,
)
from fleetflow.cli.usage import describe_quota, is_unlimited, print_quota_table
from fleetflow.errors import FleetflowError, InvalidOptionError

if TYPE_CHECKING:
    from fleetflow.api_models.tenancy import RoleChanged
    from fleetflow.client import Client, PrincipalKind

tenants_app = typer.Typer(
    help="Create tenants and see their quota, clusters and users.", no_args_is_help=True
)
users_app = typer.Typer(
    help="Create users and service accounts (with a first token) and list them.",
    no_args_is_help=True,
)
tokens_app = typer.Typer(
    help="Give users more tokens, list them, revoke them.", no_args_is_help=True
)
roles_app = typer.Typer(
    help="Grant and revoke roles: platform-admin, tenant-admin, developer, viewer.",
    no_args_is_help=True,
)
quotas_app = typer.Typer(
    help="Set and show a tenant's quota: GPUs (per type), CPU, memory, running work.",
    no_args_is_help=True,
)

TENANTS_HINT = "`fleetflow admin tenants list` shows the tenants"
_TENANT_HELP = "The tenant, as `fleetflow admin tenants list` shows it."
_EXPIRES_HELP = "The token expires after N days (default: the control plane's, e.g. 90)."
_NEVER_HELP = "The token never expires (e.g. for a service account you rotate yourself)."


def _users_hint(tenant: str) -> str:
    return f"`fleetflow admin users list --tenant {tenant}` shows its users"


# Checked before anything is sent ---------------------------------------------------------


def parse_role(value: str) -> str:
    """One of `fleetflow.client.ROLES`.

    Raises:
        FleetflowError: any other word (with the closest role, when one is close).
    """
    from fleetflow.client import ROLES

    role = value.strip().lower().replace("_", "-")
    if role in ROLES:
        return role
    close = difflib.get_close_matches(role, ROLES, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise FleetflowError(f"unknown role {value!r}{hint}; the roles are {', '.join(ROLES)}")


def parse_gpu_limits(values: list[str] | None) -> dict[str, int]:
    """`["a100=4", "h100=8"]` -> `{"a100": 4, "h100": 8}`.

    Raises:
        FleetflowError: a value is not TYPE=N with N a whole number >= 0, or a type is given
            twice.
    """
    limits: dict[str, int] = {}
    for value in values or []:
        gpu_type, sep, count = value.partition("=")
        gpu_type, count = gpu_type.strip(), count.strip()
        if not sep or not gpu_type or not count.isdigit():
            raise FleetflowError(
                f"--gpu-type {value!r} is not TYPE=N with N a whole number of GPUs "
                "(e.g. --gpu-type H100=8)"
            )
        if gpu_type in limits:
            raise FleetflowError(f"--gpu-type {gpu_type} is given twice")
        limits[gpu_type] = int(count)
    return limits


def parse_memory_limit(value: str) -> int:
    """`64Gi` -> bytes.

    Raises:
        FleetflowError: not a positive quantity of memory.
    """
    from fleetflow.resources import parse_memory  # with the type system: only when used

    try:
        return parse_memory(value.strip())
    except InvalidOptionError:
        raise FleetflowError(
            f"--memory {value!r} is not an amount of memory like 64Gi, 512Mi or 1T (units: Ki, "
            "Mi, Gi, Ti, Pi; k, M, G, T, P; none for bytes)"
        ) from None


def parse_cpu_limit(value: str) -> float:
    """`32`, `0.5` or `500m` -> cores.

    Raises:
        FleetflowError: not a positive number of cores.
    """
    from fleetflow.resources import parse_cpu

    try:
        return parse_cpu(value)
    except InvalidOptionError:
        raise FleetflowError(
            f"--cpu {value!r} is not a number of cores like 32, 0.5 or 500m"
        ) from None


# Tokens are shown once ---------------------------------------------------------------------


def _check_expiry(expires_in_days: int | None, never_expires: bool) -> None:
    if never_expires and expires_in_days is not None:
        raise FleetflowError("give --expires-in-days N or --never-expires, not both")


def _print_new_token(answer: dict[str, Any], api_url: str) -> None:
    token_id = answer.get("token_id", "?")
    say("token (shown only this once: store it now, the control plane keeps just its hash):")
    say(f"  {answer['token']}")
    say(f"token id: {token_id} (revoke it with `fleetflow admin tokens revoke {token_id}`)")
    say(f"expires: {timestamp(answer.get('expires_at'), never='never')}")
    say(f"log in with it: fleetflow login {api_url}   (asks for the token)")


# tenants -----------------------------------------------------------------------------------


@tenants_app.command("create", no_args_is_help=True)
def tenants_create(
    ctx: typer.Context,
    name: str = typer.Argument(
        ..., metavar="NAME", help="The new tenant's name.", show_default=False
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create a tenant (platform admins). It has no users, clusters or quota yet."""
    show(ctx, lambda api: api.admin.create_tenant(name), as_json, _print_created_tenant)


def _print_created_tenant(created: dict[str, Any], _api_url: str) -> None:
    tenant = created["name"]
    say(f"created tenant {tenant}")
    say("next:")
    say(f"  fleetflow admin users create NAME --tenant {tenant} --role tenant-admin")
    say(f"  fleetflow admin clusters grant {tenant} CLUSTER   (or * for every cluster)")
    say(f"  fleetflow admin quotas set {tenant} --gpu N ...   (no quota: unlimited)")


@tenants_app.command("list")
def tenants_list(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """List the tenants."""
    show(ctx, lambda api: api.admin.list_tenants(), as_json, _print_tenants)


def _print_tenants(tenants: list[dict[str, Any]], api_url: str) -> None:
    if not tenants:
        say(f"no tenants on {api_url}; create one with `fleetflow admin tenants create NAME`")
        return
    table = new_table("NAME", "CREATED")
    for tenant in tenants:
        table.add_row(tenant["name"], timestamp(tenant.get("created_at")))
    print_table(table)


@tenants_app.command("get", no_args_is_help=True)
def tenants_get(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help=_TENANT_HELP, show_default=False),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show one tenant: quota, the clusters it may run on, how many users it has."""
    show(ctx, lambda api: api.admin.get_tenant(name), as_json, _print_tenant, hint=TENANTS_HINT)


def _print_tenant(tenant: dict[str, Any], _api_url: str) -> None:
    name = tenant["name"]
    clusters = tenant.get("clusters") or []
    cluster_text = ", ".join("every cluster" if c == "*" else c for c in clusters)
    print_fields(
        f"tenant {tenant['name']}",
        [
            ("created", timestamp(tenant.get("created_at"))),
            ("users", str(tenant.get("users", 0))),
            (
                "clusters",
                cluster_text
                or Text(
                    f"none: grant one with `fleetflow admin clusters grant {name} CLUSTER`",
                    style="yellow",
                ),
            ),
            ("quota", describe_quota(tenant.get("quota"))),
        ],
    )


# users -------------------------------------------------------------------------------------


@users_app.command("create", no_args_is_help=True)
def users_create(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="The user's name.", show_default=False),
    tenant: str = typer.Option(
        ..., "--tenant", metavar="T", help="The user's home tenant.", show_default=False
    ),
    role: str = typer.Option(
        ...,
        "--role",
        metavar="ROLE",
        help="Its role in T: tenant-admin, developer or viewer (or platform-admin).",
        show_default=False,
    ),
    service: bool = typer.Option(
        False, "--service", help="A service account (for a program: CI, a scheduler)."
    ),
    expires_in_days: int = typer.Option(
        None, "--expires-in-days", metavar="N", min=1, help=_EXPIRES_HELP, show_default=False
    ),
    never_expires: bool = typer.Option(False, "--never-expires", help=_NEVER_HELP),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create a user or service account and print its first token, once."""
    role = parse_role(role)
    _check_expiry(expires_in_days, never_expires)
    kind: PrincipalKind = "service" if service else "user"

    def print_created(created: dict[str, Any], api_url: str) -> None:
        user = created["user"]
        say(
            f"created {'service account' if service else 'user'} {user['name']} in tenant "
            f"{user['tenant']}; roles: {describe_roles(user.get('roles') or [])}"
        )
        _print_new_token(created, api_url)

    show(
        ctx,
        lambda api: api.admin.create_user(
            tenant,
            name,
            role,
            kind=kind,
            expires_in_days=expires_in_days,
            never_expires=never_expires,
        ),
        as_json,
        print_created,
        hint=TENANTS_HINT,
    )


@users_app.command("list", no_args_is_help=True)
def users_list(
    ctx: typer.Context,
    tenant: str = typer.Option(..., "--tenant", metavar="T", help=_TENANT_HELP),
    as_json: bool = JSON_OPTION,
) -> None:
    """List a tenant's users and service accounts with their roles."""

    def print_users(users: list[dict[str, Any]], _api_url: str) -> None:
        if not users:
            say(
                f"tenant {tenant} has no users; create one with "
                f"`fleetflow admin users create NAME --tenant {tenant} --role developer`"
            )
            return
        table = new_table("NAME", "KIND", "ROLES", "CREATED")
        for user in users:
            table.add_row(
                user["name"],
                user.get("kind", "user"),
                describe_roles(user.get("roles") or []),
                timestamp(user.get("created_at")),
            )
        print_table(table)

    show(ctx, lambda api: api.admin.list_users(tenant), as_json, print_users, hint=TENANTS_HINT)


# tokens ------------------------------------------------------------------------------------


@tokens_app.command("create", no_args_is_help=True)
def tokens_create(
    ctx: typer.Context,
    user: str = typer.Argument(..., metavar="USER", help="The user's name.", show_default=False),
    tenant: str = typer.Option(..., "--tenant", metavar="T", help="The user's home tenant."),
    expires_in_days: int = typer.Option(
        None, "--expires-in-days", metavar="N", min=1, help=_EXPIRES_HELP, show_default=False
    ),
    never_expires: bool = typer.Option(False, "--never-expires", help=_NEVER_HELP),
    as_json: bool = JSON_OPTION,
) -> None:
    """Give a user another token and print it, once; its other tokens keep working."""
    _check_expiry(expires_in_days, never_expires)

    def print_created(created: dict[str, Any], api_url: str) -> None:
        say(f"new token for {user} in tenant {tenant}")
        _print_new_token(created, api_url)

    show(
        ctx,
        lambda api: api.admin.create_token(
            tenant, user, expires_in_days=expires_in_days, never_expires=never_expires
        ),
        as_json,
        print_created,
        hint=_users_hint(tenant),
    )


def _token_state(token: dict[str, Any], now: datetime) -> Text:
    if token.get("revoked_at"):
        return Text("revoked", style="red")
    expires = parse_time(token.get("expires_at"))
    if expires is not None and expires <= now:
        return Text("expired", style="yellow")
    return Text("active", style="green")


@tokens_app.command("list", no_args_is_help=True)
def tokens_list(
    ctx: typer.Context,
    user: str = typer.Argument(..., metavar="USER", help="The user's name.", show_default=False),
    tenant: str = typer.Option(..., "--tenant", metavar="T", help="The user's home tenant."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List a user's tokens (never their secrets): state, expiry, last use."""

    def print_tokens(tokens: list[dict[str, Any]], _api_url: str) -> None:
        if not tokens:
            say(f"{user} has no tokens; `fleetflow admin tokens create {user} --tenant {tenant}`")
            return
        table = new_table("ID", "STATE", "CREATED", "EXPIRES", "LAST USED")
        now = datetime.now(UTC)
        for token in tokens:
            table.add_row(
                token["id"],
                _token_state(token, now),
                timestamp(token.get("created_at")),
                timestamp(token.get("expires_at"), never="never"),
                timestamp(token.get("last_used_at"), never="never"),
            )
        print_table(table)

    show(
        ctx,
        lambda api: api.admin.list_tokens(tenant, user),
        as_json,
        print_tokens,
        hint=_users_hint(tenant),
    )


@tokens_app.command("revoke", no_args_is_help=True)
def tokens_revoke(
    ctx: typer.Context,
    token_id: str = typer.Argument(
        ...,
        metavar="TOKEN_ID",
        help="The token's id, as `fleetflow admin tokens list` shows it.",
        show_default=False,
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Revoke a token: requests carrying it are refused from now on."""
    hint = "`fleetflow admin tokens list USER --tenant T` shows a user's tokens"

    def print_revoked(revoked: dict[str, Any], _api_url: str) -> None:
        revoked_at = timestamp(revoked.get("revoked_at"))
        say(f"revoked token {revoked.get('id', token_id)} at {revoked_at}")

    show(ctx, lambda api: api.admin.revoke_token(token_id), as_json, print_revoked, hint=hint)


# roles -------------------------------------------------------------------------------------


def _require_tenant(role: str, tenant: str | None) -> None:
    if tenant is None and role != "platform-admin":
        raise FleetflowError(f"{role} is a role in one tenant: add --tenant T")


def _describe_grant(grant: dict[str, Any]) -> str:
    tenant = grant.get("tenant")
    return grant["role"] + ("" if tenant in (None, "*") else f" in {tenant}")


PRINCIPALS_HINT = "`fleetflow admin users list --tenant T` shows a tenant's users"
_PRINCIPAL_ARGUMENT = typer.Argument(
    ..., metavar="PRINCIPAL", help="The user or service account.", show_default=False
)
_ROLE_ARGUMENT = typer.Argument(
    ...,
    metavar="ROLE",
    help="platform-admin, tenant-admin, developer or viewer.",
    show_default=False,
)
_GRANT_TENANT_OPTION = typer.Option(
    None,
    "--tenant",
    metavar="T",
    help="The tenant the role applies in (not for platform-admin).",
    show_default=False,
)


def _role_command(change: Literal["granted", "revoked"], doc: str) -> Callable[..., None]:
    """`roles grant` and `roles revoke`: the same arguments, one change each."""

    def command(
        ctx: typer.Context,
        principal: str = _PRINCIPAL_ARGUMENT,
        role: str = _ROLE_ARGUMENT,
        tenant: str = _GRANT_TENANT_OPTION,
        as_json: bool = JSON_OPTION,
    ) -> None:
        _change_role(ctx, change, principal, role, tenant, as_json)

    command.__doc__ = doc
    return command


roles_grant = roles_app.command("grant", no_args_is_help=True)(
    _role_command(
        "granted", "Grant PRINCIPAL the role ROLE in tenant T (platform-admin: everywhere)."
    )
)
roles_revoke = roles_app.command("revoke", no_args_is_help=True)(
    _role_command("revoked", "Take back a role `roles grant` gave.")
)


def _change_role(
    ctx: typer.Context,
    change: Literal["granted", "revoked"],
    principal: str,
    role: str,
    tenant: str | None,
    as_json: bool,
) -> None:
    role = parse_role(role)
    _require_tenant(role, tenant)

    def print_change(grant: dict[str, Any], _api_url: str) -> None:
        to = "to" if change == "granted" else "from"
        say(f"{change} {_describe_grant(grant)} {to} {grant['principal']}")

    def call(api: Client) -> RoleChanged:
        change_role = api.admin.grant_role if change == "granted" else api.admin.revoke_role
        return change_role(principal, role, tenant)

    show(ctx, call, as_json, print_change, hint=PRINCIPALS_HINT)


# quotas ------------------------------------------------------------------------------------

QUOTAS_SET_HELP = (
    "Replace tenant T's quota. Every limit left out is unlimited: the new quota is exactly "
    "what this command says.\n\n"
    "Tasks that would exceed a limit wait until others finish. Example: fleetflow admin "
    "quotas set acme --gpu 16 --gpu-type H100=8 --cpu 256 "
    "--memory 2Ti --max-running-executions 20"
)


@quotas_app.command("set", no_args_is_help=True, help=QUOTAS_SET_HELP)
def quotas_set(
    ctx: typer.Context,
    tenant: str = typer.Argument(..., metavar="T", help=_TENANT_HELP, show_default=False),
    gpu: int = typer.Option(
        None, "--gpu", metavar="N", min=0, help="GPUs of any type.", show_default=False
    ),
    gpu_type: list[str] = typer.Option(
        None,
        "--gpu-type",
        metavar="TYPE=N",
        help="GPUs of one type; repeat for more (--gpu-type H100=8 --gpu-type A100=4).",
        show_default=False,
    ),
    cpu: str = typer.Option(
        None, "--cpu", metavar="N", help="CPU cores (32, 0.5, 500m).", show_default=False
    ),
    memory: str = typer.Option(
        None, "--memory", metavar="QTY", help="Memory (64Gi, 512Mi, 1T).", show_default=False
    ),
    max_running_executions: int = typer.Option(
        None,
        "--max-running-executions",
        metavar="N",
        min=0,
        help="Executions running at once.",
        show_default=False,
    ),
    max_running_tasks: int = typer.Option(
        None,
        "--max-running-tasks",
        metavar="N",
        min=0,
        help="Task attempts running at once.",
        show_default=False,
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """`fleetflow admin quotas set T` (help: QUOTAS_SET_HELP)."""
    per_type = parse_gpu_limits(gpu_type)
    cores = parse_cpu_limit(cpu) if cpu is not None else None
    memory_bytes = parse_memory_limit(memory) if memory is not None else None
    show(
        ctx,
        lambda api: api.admin.set_quota(
            tenant,
            gpu=gpu,
            gpu_per_type=per_type,
            cpu=cores,
            memory=memory_bytes,
            max_running_executions=max_running_executions,
            max_running_tasks=max_running_tasks,
        ),
        as_json,
        partial(_print_quota, tenant, changed=True),
        hint=TENANTS_HINT,
    )


@quotas_app.command("get", no_args_is_help=True)
def quotas_get(
    ctx: typer.Context,
    tenant: str = typer.Argument(..., metavar="T", help=_TENANT_HELP, show_default=False),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show tenant T's quota (what it uses now: `fleetflow --tenant T quota`)."""
    render = partial(_print_quota, tenant, changed=False)
    show(ctx, lambda api: api.admin.get_quota(tenant), as_json, render, hint=TENANTS_HINT)


def _print_quota(
    tenant: str, stored: dict[str, Any] | None, _api_url: str, *, changed: bool
) -> None:
    """A tenant's quota as stored, `changed` by the command or not."""
    if is_unlimited(stored):
        now = " now: every limit is" if changed else ":"
        say(f"tenant {tenant} has no quota{now} unlimited")
        return
    say(f"quota of tenant {tenant}{' is now' if changed else ''}:")
    print_quota_table(stored)


# audit -------------------------------------------------------------------------------------


def _details(details: dict[str, Any] | None) -> str:
    parts = []
    for key, value in sorted((details or {}).items()):
        parts.append(f"{key}={value if isinstance(value, str) else json.dumps(value)}")
    return ", ".join(parts) or "-"


def audit(
    ctx: typer.Context,
    limit: int = typer.Option(50, "--limit", min=1, max=1000, help="How many, newest first."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show the latest administrative actions: who did what to whom, newest first."""
    show(ctx, lambda api: api.admin.audit_log(limit=limit), as_json, _print_audit_log)


def _print_audit_log(entries: list[dict[str, Any]], api_url: str) -> None:
    if not entries:
        say(f"the audit log of {api_url} is empty")
        return
    table = new_table("AT", "ACTOR", "ACTION", "TARGET", "DETAILS")
    for entry in entries:
        table.add_row(
            timestamp(entry.get("at")),
            entry.get("actor") or "-",
            entry.get("action") or "-",
            entry.get("target") or "-",
            _details(entry.get("details")),
        )
    print_table(table)
