"""`fleetflow login`, `logout` and `whoami`: which control plane, as whom, in which tenant.

`login` checks a token with the control plane (`GET /api/v1/whoami`) before it saves anything,
so the CLI config never holds a token that does not work; the token is never printed. See
`fleetflow.config` for the file and the variables that override it.
"""

from __future__ import annotations

import os
import sys
from typing import Any
from urllib.parse import urlsplit

import typer
from rich.text import Text

from fleetflow.cli.common import (
    JSON_OPTION,
    acting_tenant,
    api_json,
    describe_roles,
    err_console,
    print_fields,
    print_json,
    say,
    show,
)
from fleetflow.errors import FleetflowError

LOGIN_HELP = (
    "Log in to the control plane at URL with a token, and save both in the CLI config.\n\n"
    "The token is checked with the control plane first; nothing is saved when it is refused. "
    "It is taken from --token, --token-stdin, FLEETFLOW_TOKEN or, on a terminal, a prompt "
    "(the last three keep it out of your shell history). The config file is readable by you "
    "only. Example: fleetflow login https://fleetflow.example.com --token-stdin < token.txt"
)
TENANT_HELP = (
    "Act in tenant T instead of your home tenant (default: FLEETFLOW_TENANT, then the tenant "
    "`fleetflow login` saved)."
)


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def _read_token(token: str | None, token_stdin: bool) -> str:
    """The token from the flag, standard input, FLEETFLOW_TOKEN or a hidden prompt."""
    if token and token_stdin:
        raise FleetflowError("give the token with --token or --token-stdin, not both")
    if token_stdin:
        token = sys.stdin.read()
    elif not token:
        token = os.environ.get("FLEETFLOW_TOKEN")
    if not token and not token_stdin and sys.stdin is not None and sys.stdin.isatty():
        token = typer.prompt("Token", hide_input=True)
    token = (token or "").strip()
    if not token:
        raise FleetflowError(
            "no token: give it with --token TOKEN, --token-stdin (e.g. < token.txt) or "
            "FLEETFLOW_TOKEN; an admin creates one with `fleetflow admin tokens create`"
        )
    if any(char.isspace() for char in token):
        raise FleetflowError("the token contains whitespace; give exactly the token you were given")
    return token


def login(
    ctx: typer.Context,
    url: str = typer.Argument(
        ...,
        metavar="URL",
        help="The control plane's base URL, e.g. https://fleetflow.example.com.",
        show_default=False,
    ),
    token: str = typer.Option(
        None,
        "--token",
        metavar="TOKEN",
        help="The token (an admin's `fleetflow admin users create` printed it).",
        show_default=False,
    ),
    token_stdin: bool = typer.Option(
        False, "--token-stdin", help="Read the token from standard input."
    ),
    tenant: str = typer.Option(
        None,
        "--tenant",
        metavar="T",
        help="Act in tenant T from now on instead of your home tenant.",
        show_default=False,
    ),
    as_json: bool = typer.Option(False, "--json", help="Print who you are as JSON."),
) -> None:
    """`fleetflow login URL` (help: LOGIN_HELP)."""
    from fleetflow.client import (
        ApiError,
        AuthenticationError,
        Client,
        ControlPlaneUnreachableError,
    )
    from fleetflow.config import ENV_OVERRIDES, CliConfig, is_http_url, save_cli_config

    url = url.strip().rstrip("/")
    if not is_http_url(url):
        raise FleetflowError(
            f"{url!r} is not an http(s):// URL of a control plane, e.g. "
            "https://fleetflow.example.com or http://127.0.0.1:8080"
        )
    secret = _read_token(token, token_stdin)
    chosen_tenant = acting_tenant(ctx, tenant)
    config = CliConfig(api_url=url, token=secret, tenant=chosen_tenant)
    with Client(config=config) as api:
        try:
            me = api_json(api.account.whoami())
        except AuthenticationError as exc:
            raise FleetflowError(
                f"the control plane at {url} refused the token ({exc.detail}); nothing was "
                "saved. Check that you copied the whole token and that it has not expired or "
                "been revoked"
            ) from None
        except ApiError as exc:
            where = f" in tenant {chosen_tenant}" if chosen_tenant else ""
            raise FleetflowError(
                f"cannot log in to {url}{where}: {exc}; nothing was saved"
            ) from None
        except ControlPlaneUnreachableError as exc:
            raise FleetflowError(f"{exc} Nothing was saved.") from None
    path = save_cli_config(config)
    if as_json:
        print_json(me)
    else:
        home, acting = me["tenant"], me.get("acting_tenant") or me["tenant"]
        tenant_note = f"tenant {acting}" + (f" (home tenant {home})" if acting != home else "")
        say(f"logged in to {url} as {me['principal']} ({me['kind']}), acting in {tenant_note}")
        say(f"roles: {describe_roles(me.get('roles') or [])}")
        say(f"saved to {path} (readable only by you)")
    if url.startswith("http://") and not _loopback(url):
        _warn(f"{url} is plain http: the token travels unencrypted; prefer https://")
    for field, env in ENV_OVERRIDES.items():
        value = os.environ.get(env)
        if value and value != getattr(config, field):
            _warn(f"{env} is set: it overrides the saved {field.replace('_', ' ')}")


def _warn(message: str) -> None:
    text = Text("warning: ", style="yellow")
    text.append(message)
    err_console.print(text, highlight=False)


def logout() -> None:
    """Remove the token from the CLI config (the URL and tenant stay).

    The token itself keeps working until it expires or an admin revokes it
    (`fleetflow admin tokens revoke`).
    """
    # Imported here, as in `login`: `fleetflow --help` need not load pydantic for the config.
    from fleetflow.config import config_path, load_cli_config, save_cli_config

    saved = load_cli_config(overrides=False)
    if not saved.token:
        say(f"not logged in: {config_path()} holds no token")
    else:
        path = save_cli_config(saved.model_copy(update={"token": None}))
        say(f"logged out of {saved.api_url}: removed the token from {path}")
        say(
            "the token itself stays valid until it expires or an admin revokes it "
            "(`fleetflow admin tokens revoke TOKEN_ID`)"
        )
    if os.environ.get("FLEETFLOW_TOKEN"):
        _warn("FLEETFLOW_TOKEN is still set: commands keep sending that token")


def whoami(
    ctx: typer.Context,
    tenant: str = typer.Option(None, "--tenant", metavar="T", help=TENANT_HELP),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show who the control plane takes you for: principal, home and acting tenant, roles."""
    show(ctx, lambda api: api.account.whoami(), as_json, _print_me, tenant=tenant)


def _print_me(me: dict[str, Any], api_url: str) -> None:
    acting = me.get("acting_tenant") or me["tenant"]
    print_fields(
        f"{me['principal']} ({me['kind']})",
        [
            ("control plane", api_url),
            ("home tenant", me["tenant"]),
            ("acting tenant", acting),
            ("roles", describe_roles(me.get("roles") or [])),
        ],
    )
