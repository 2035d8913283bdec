"""`fleetflow secrets create|list|delete`, and `fleetflow admin secrets rotate|generate-key`.

A secret is created from a literal (`--from-literal`), a file (`--from-file`) or as a reference
to a key of a Kubernetes Secret (`--kubernetes-secret NAME --key KEY`). No command ever prints a
value: the control plane never answers one.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import typer

from fleetflow.cli.common import (
    JSON_OPTION,
    CommandUsageError,
    client,
    new_table,
    not_found_hint,
    print_json,
    print_table,
    say,
    show,
    timestamp,
)

HINT = "`fleetflow secrets list` shows your tenant's secrets"

secrets_app = typer.Typer(
    help="Your tenant's secrets, which tasks name in @task(secrets=[...]); values never shown.",
    no_args_is_help=True,
)
admin_secrets_app = typer.Typer(
    help="Rotate the keys tenant secrets are encrypted under, or make a new one.",
    no_args_is_help=True,
)
NAME = typer.Argument(..., metavar="NAME", help="The secret's name.", show_default=False)


def _source(secret: dict[str, Any]) -> str:
    if secret["kind"] == "kubernetes_ref":
        return f"Kubernetes Secret {secret['kubernetes_secret']}, key {secret['kubernetes_key']}"
    return "value (encrypted)"


@secrets_app.command("create")
def create(
    ctx: typer.Context,
    name: str = NAME,
    from_literal: str | None = typer.Option(
        None, "--from-literal", metavar="VALUE", help="The value (visible in shell history)."
    ),
    from_file: Path | None = typer.Option(
        None, "--from-file", metavar="PATH", help="Read the value from a file (UTF-8)."
    ),
    kubernetes_secret: str | None = typer.Option(
        None,
        "--kubernetes-secret",
        metavar="SECRET",
        help="Refer to this Secret in the tenant's namespace instead of storing a value.",
    ),
    key: str | None = typer.Option(
        None, "--key", metavar="KEY", help="The key in --kubernetes-secret."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create a secret, or replace the one of NAME."""
    given = [flag for flag in (from_literal, from_file, kubernetes_secret) if flag is not None]
    if len(given) != 1:
        raise CommandUsageError(
            "give exactly one of --from-literal VALUE, --from-file PATH, or "
            "--kubernetes-secret SECRET --key KEY"
        )
    if key is not None and kubernetes_secret is None:
        raise CommandUsageError("--key goes with --kubernetes-secret")
    if kubernetes_secret is not None and key is None:
        raise CommandUsageError("--kubernetes-secret needs --key KEY: the key in that Secret")
    value = from_literal
    if from_file is not None:
        try:
            value = from_file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandUsageError(f"cannot read --from-file {from_file}: {exc}") from None

    def render(secret: dict[str, Any], _api_url: str) -> None:
        say(
            f"secret {secret['name']}: {_source(secret)}, updated {timestamp(secret['updated_at'])}"
        )

    if value is not None:
        show(ctx, lambda api: api.secrets.create(name, value), as_json, render)
    else:
        assert kubernetes_secret is not None and key is not None
        show(
            ctx,
            lambda api: api.secrets.create_reference(name, kubernetes_secret, key),
            as_json,
            render,
        )


@secrets_app.command("list")
def list_secrets(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """List your tenant's secrets: names and where their values come from."""

    def render(secrets: list[dict[str, Any]], api_url: str) -> None:
        if not secrets:
            say(f"no secrets on {api_url}: `fleetflow secrets create NAME` makes one")
            return
        table = new_table("NAME", "SOURCE", "UPDATED")
        for secret in secrets:
            table.add_row(secret["name"], _source(secret), timestamp(secret["updated_at"]))
        print_table(table)

    show(ctx, lambda api: api.secrets.list(), as_json, render)


@secrets_app.command("delete")
def delete(ctx: typer.Context, name: str = NAME) -> None:
    """Delete a secret: tasks that name it fail to start until it exists again."""
    with client(ctx) as api, not_found_hint(api, HINT):
        api.secrets.delete(name)
    say(f"deleted secret {name}")


@admin_secrets_app.command("rotate")
def rotate(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Encrypt every stored secret again under the first key of FLEETFLOW_SECRETS_KEYS."""
    with client(ctx) as api:
        rotated = api.secrets.rotate()
    if as_json:
        print_json({"rotated": rotated})
    else:
        say(f"{rotated} secret(s) re-encrypted under the first key; older keys may now go")


@admin_secrets_app.command("generate-key")
def generate_key() -> None:
    """Print a new key for FLEETFLOW_SECRETS_KEYS (Fernet: 32 random bytes, url-safe base64)."""
    typer.echo(base64.urlsafe_b64encode(os.urandom(32)).decode("ascii"))
