"""`fleetflow login`, `logout`, `whoami`, and how every command carries the token and tenant.

The CLI talks over HTTP to the real control-plane API (`control_plane_api`, tests/conftest.py:
a fresh app and SQLite database per test); users, tenants and roles are set up in its database,
and its request log shows which token and tenant each request carried.
"""

from __future__ import annotations

import io
import json
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from control_plane.auth.rbac import EVERY_TENANT, Role
from fleetflow.client import AuthenticationError, Client, PermissionDeniedError
from fleetflow.config import CliConfig, load_cli_config, save_cli_config
from tests.api_server import ControlPlane
from tests.unit.cli_harness import Invoke, Result, cli_invoker, user_environment

# The control plane's answer to a token it does not know.
REFUSED = "the API token is invalid, expired or revoked"
TYPED_TOKEN = "ffu_alice-secret-token-0123456789"  # refused before it is sent
OTHER_TOKEN = "ffu_bob-secret-token-9876543210"
WHOAMI = {
    "principal": "alice",
    "kind": "user",
    "tenant": "acme",
    "acting_tenant": "acme",
    "roles": [{"role": "developer", "tenant": "acme"}, {"role": "viewer", "tenant": "*"}],
}


@pytest.fixture(autouse=True)
def _user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    yield from user_environment(monkeypatch, tmp_path)


@pytest.fixture
def fleetflow(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Invoke:
    return cli_invoker(monkeypatch, capsys)


@pytest.fixture
def server(control_plane_api: ControlPlane) -> ControlPlane:
    return control_plane_api


@pytest.fixture
def token(server: ControlPlane) -> str:
    """alice's token: a developer in acme and a viewer in every tenant (WHOAMI)."""
    alice = server.principal("alice", tenant="acme", role=Role.DEVELOPER)
    server.grant("alice", Role.VIEWER, EVERY_TENANT)
    return alice


@pytest.fixture
def bob_token(server: ControlPlane) -> str:
    """bob's token: a developer in acme only."""
    return server.principal("bob", tenant="acme", role=Role.DEVELOPER)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return tmp_path / "cli-config.json"


def saved(config_file: Path) -> dict[str, object]:
    loaded = json.loads(config_file.read_text())
    assert isinstance(loaded, dict)
    return loaded


def assert_one_clear_error(result: Result, *expected: str) -> str:
    assert result.code == 1, result
    assert result.err.startswith("error: "), result.err
    assert "Traceback" not in result.err + result.out
    for text in expected:
        assert text in result.err, result.err
    return result.err


def assert_secret_not_shown(result: Result, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in result.out + result.err, result


# login -----------------------------------------------------------------------------------


def test_login_checks_the_token_and_saves_it_for_the_owner_only(
    fleetflow: Invoke, server: ControlPlane, token: str, config_file: Path
) -> None:
    result = fleetflow("login", server.url + "/", "--token", token)
    assert result.code == 0, result
    assert_secret_not_shown(result, token)
    assert f"logged in to {server.url} as alice (user), acting in tenant acme" in result.out
    assert "roles: developer in acme, viewer (every tenant)" in result.out
    assert f"saved to {config_file}" in result.out
    assert server.only("GET", "/api/v1/whoami").headers["authorization"] == f"Bearer {token}"
    assert saved(config_file) == {"api_url": server.url, "token": token, "tenant": None}
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600


def test_login_tightens_an_existing_readable_config(
    fleetflow: Invoke, server: ControlPlane, token: str, config_file: Path
) -> None:
    config_file.write_text(json.dumps({"api_url": "http://127.0.0.1:1"}))
    config_file.chmod(0o644)
    assert fleetflow("login", server.url, "--token", token).code == 0
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    assert saved(config_file)["api_url"] == server.url


@pytest.mark.parametrize("how", ["stdin", "env"])
def test_login_reads_the_token_from_stdin_or_the_environment(
    fleetflow: Invoke,
    server: ControlPlane,
    token: str,
    config_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    if how == "stdin":
        monkeypatch.setattr(sys, "stdin", io.StringIO(f"{token}\n"))
        result = fleetflow("login", server.url, "--token-stdin")
    else:
        monkeypatch.setenv("FLEETFLOW_TOKEN", token)
        result = fleetflow("login", server.url)
    assert result.code == 0, result
    assert_secret_not_shown(result, token)
    assert saved(config_file)["token"] == token


def test_login_with_a_tenant_acts_there_and_saves_it(
    fleetflow: Invoke, server: ControlPlane, token: str, config_file: Path
) -> None:
    server.tenants("research")  # alice views every tenant
    result = fleetflow("login", server.url, "--token", token, "--tenant", "research")
    assert result.code == 0, result
    assert "acting in tenant research (home tenant acme)" in result.out
    assert server.only("GET", "/api/v1/whoami").headers["x-fleetflow-tenant"] == "research"
    assert saved(config_file)["tenant"] == "research"


def test_login_with_a_refused_token_saves_nothing(
    fleetflow: Invoke, server: ControlPlane, config_file: Path
) -> None:
    before = CliConfig(api_url="http://127.0.0.1:1", token=OTHER_TOKEN)
    save_cli_config(before)
    result = fleetflow("login", server.url, "--token", "ffu_wrong")
    message = assert_one_clear_error(
        result,
        f"the control plane at {server.url} refused the token ({REFUSED})",
        "nothing was saved",
    )
    assert "ffu_wrong" not in message
    assert load_cli_config(overrides=False) == before


def test_login_refused_in_a_tenant_saves_nothing(
    fleetflow: Invoke, server: ControlPlane, bob_token: str, config_file: Path
) -> None:
    server.tenants("x")  # where bob holds no role: it answers as if it did not exist
    assert_one_clear_error(
        fleetflow("login", server.url, "--token", bob_token, "--tenant", "x"),
        f"cannot log in to {server.url} in tenant x: tenant 'x' not found",
        "nothing was saved",
    )
    assert not config_file.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("localhost:8080", "--token", TYPED_TOKEN), "'localhost:8080' is not an http(s):// URL"),
        (("http://127.0.0.1:1",), "no token: give it with --token TOKEN, --token-stdin"),
        (("http://127.0.0.1:1", "--token", "a b"), "the token contains whitespace"),
        (
            ("http://127.0.0.1:1", "--token", TYPED_TOKEN, "--token-stdin"),
            "give the token with --token or --token-stdin, not both",
        ),
    ],
)
def test_login_mistakes_are_caught_before_anything_is_sent(
    fleetflow: Invoke, config_file: Path, args: tuple[str, ...], expected: str
) -> None:
    result = fleetflow("login", *args)
    assert_one_clear_error(result, expected)
    assert_secret_not_shown(result, TYPED_TOKEN)
    assert not config_file.exists()


def test_login_to_nothing_says_so_and_saves_nothing(fleetflow: Invoke, config_file: Path) -> None:
    from control_plane import processes

    url = f"http://127.0.0.1:{processes.free_port()}"
    assert_one_clear_error(
        fleetflow("login", url, "--token", TYPED_TOKEN),
        f"cannot reach the control plane at {url}",
        "Nothing was saved.",
    )
    assert not config_file.exists()


def test_login_warns_when_the_environment_overrides_what_it_saved(
    fleetflow: Invoke, server: ControlPlane, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETFLOW_TENANT", "research")
    result = fleetflow("login", server.url, "--token", token)
    assert result.code == 0, result
    assert "warning: FLEETFLOW_TENANT is set: it overrides the saved tenant" in result.err


def test_login_json_is_whoami_without_the_token(
    fleetflow: Invoke, server: ControlPlane, token: str
) -> None:
    result = fleetflow("login", server.url, "--token", token, "--json")
    assert result.code == 0, result
    assert json.loads(result.out) == WHOAMI
    assert_secret_not_shown(result, token)


# whoami and logout -------------------------------------------------------------------------


def test_whoami_after_login(fleetflow: Invoke, server: ControlPlane, token: str) -> None:
    assert fleetflow("login", server.url, "--token", token).code == 0
    result = fleetflow("whoami")
    assert result.code == 0, result
    lines = [" ".join(line.split()) for line in result.out.splitlines()]
    assert lines == [
        "alice (user)",
        f"control plane {server.url}",
        "home tenant acme",
        "acting tenant acme",
        "roles developer in acme, viewer (every tenant)",
    ]
    assert json.loads(fleetflow("whoami", "--json").out) == WHOAMI


def test_logout_removes_the_token_and_commands_then_say_how_to_log_in(
    fleetflow: Invoke, server: ControlPlane, token: str, config_file: Path
) -> None:
    assert fleetflow("login", server.url, "--token", token, "--tenant", "acme").code == 0
    result = fleetflow("logout")
    assert result.code == 0, result
    assert f"logged out of {server.url}: removed the token from {config_file}" in result.out
    assert saved(config_file) == {"api_url": server.url, "token": None, "tenant": "acme"}
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    assert "not logged in" in fleetflow("logout").out

    message = assert_one_clear_error(
        fleetflow("whoami"),
        f"the control plane at {server.url} needs a token (no API token: send "
        "`Authorization: Bearer <token>` (the CLI does after `fleetflow login URL --token …`)); "
        f"log in with `fleetflow login {server.url} --token …` or set FLEETFLOW_TOKEN",
    )
    assert len(message.strip().splitlines()) == 1


# A refused token, whichever command ------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("whoami",), ("executions", "list"), ("quota",), ("admin", "tenants", "list")],
)
def test_a_refused_saved_token_says_how_to_log_in(
    fleetflow: Invoke, server: ControlPlane, config_file: Path, args: tuple[str, ...]
) -> None:
    save_cli_config(CliConfig(api_url=server.url, token="ffu_revoked"))
    result = fleetflow(*args)
    assert_one_clear_error(
        result,
        f"the control plane at {server.url} refused the token from {config_file} "
        f"({REFUSED}); log in with `fleetflow login {server.url} --token …`",
    )
    assert_secret_not_shown(result, "ffu_revoked")


def test_a_refused_token_from_the_environment_says_to_fix_the_variable(
    fleetflow: Invoke, server: ControlPlane, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_cli_config(CliConfig(api_url=server.url, token=token))
    monkeypatch.setenv("FLEETFLOW_TOKEN", "ffu_stale")
    assert_one_clear_error(
        fleetflow("whoami"),
        f"refused the token from FLEETFLOW_TOKEN ({REFUSED}); set "
        "FLEETFLOW_TOKEN to a valid token (it overrides `fleetflow login`)",
    )
    assert server.only("GET", "/api/v1/whoami").headers["authorization"] == "Bearer ffu_stale"


# The tenant header -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "env", "saved_tenant", "expected"),
    [
        (None, None, None, None),
        (None, None, "saved", "saved"),
        (None, "from-env", "saved", "from-env"),
        ("from-flag", "from-env", "saved", "from-flag"),
    ],
)
def test_the_tenant_header_comes_from_flag_then_environment_then_config(
    fleetflow: Invoke,
    server: ControlPlane,
    token: str,
    monkeypatch: pytest.MonkeyPatch,
    flag: str | None,
    env: str | None,
    saved_tenant: str | None,
    expected: str | None,
) -> None:
    save_cli_config(CliConfig(api_url=server.url, token=token, tenant=saved_tenant))
    if env:
        monkeypatch.setenv("FLEETFLOW_TENANT", env)
    server.tenants("saved", "from-env", "from-flag")  # alice views every tenant
    result = fleetflow(*(("--tenant", flag) if flag else ()), "executions", "list")
    assert result.code == 0, result
    headers = server.only("GET", "/api/v1/executions").headers
    assert headers.get("x-fleetflow-tenant") == expected
    assert headers["authorization"] == f"Bearer {token}"


def test_a_commands_own_tenant_option_wins_over_the_global_one(
    fleetflow: Invoke, server: ControlPlane, token: str
) -> None:
    save_cli_config(CliConfig(api_url=server.url, token=token))
    server.tenants("global", "own")  # alice views every tenant
    result = fleetflow("--tenant", "global", "whoami", "--tenant", "own")
    assert result.code == 0, result
    assert "acting tenant own" in " ".join(result.out.split())
    assert server.only("GET", "/api/v1/whoami").headers["x-fleetflow-tenant"] == "own"


def test_a_refusal_in_another_tenant_names_where_that_tenant_came_from(
    fleetflow: Invoke, server: ControlPlane, bob_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_cli_config(CliConfig(api_url=server.url, token=bob_token))
    server.tenants("old-team")
    server.grant("bob", Role.VIEWER, "old-team")  # who may not cancel there
    monkeypatch.setenv("FLEETFLOW_TENANT", "old-team")
    # The server's refusal names the tenant already ...
    assert_one_clear_error(
        fleetflow("executions", "cancel", "ex_0"),
        "bob may not write executions in tenant 'old-team' (roles there: viewer)",
    )
    # ... and where it does not, the CLI says which tenant it acted in, and why.
    assert_one_clear_error(
        fleetflow("admin", "tenants", "list"),
        "bob may not do this: it needs the platform-admin role "
        "(acting in tenant old-team, from FLEETFLOW_TENANT)",
    )


# The Python client -------------------------------------------------------------------------


def test_client_sends_the_tenant_given_then_the_environments_then_the_configs(
    server: ControlPlane, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_cli_config(CliConfig(api_url=server.url, token=token, tenant="saved"))
    server.tenants("saved", "from-env", "given")  # alice views every tenant
    with Client() as client:
        assert client.tenant == "saved"
        client.account.whoami()
    monkeypatch.setenv("FLEETFLOW_TENANT", "from-env")
    with Client() as client:
        client.account.whoami()
    with Client(tenant="given") as client:
        client.account.whoami()
    sent = [r.headers.get("x-fleetflow-tenant") for r in server.requests]
    assert sent == ["saved", "from-env", "given"]


def test_client_errors_by_status(server: ControlPlane, token: str) -> None:
    with Client(server.url, "ffu_nope") as client, pytest.raises(AuthenticationError) as refused:
        client.account.whoami()
    assert refused.value.status_code == 401
    assert refused.value.detail == REFUSED
    assert "refused the token given by the caller" in str(refused.value)
    with Client(server.url, token) as client, pytest.raises(PermissionDeniedError) as denied:
        client.admin.list_tenants()
    assert str(denied.value) == "alice may not do this: it needs the platform-admin role"
