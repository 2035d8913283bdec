"""`fleetflow admin tenants|users|tokens|roles|quotas|clusters grant|audit`, `fleetflow quota`
and `fleetflow usage`: what each sends, what it prints, and the mistakes caught before anything
is sent.

The control plane's tenancy endpoints are being built; until they exist these tests talk to
`FakeControlPlane` (tests/unit/cli_harness.py), a real HTTP server on a loopback port that
answers as the REST contract says.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fleetflow.config import CliConfig, save_cli_config
from tests.unit.cli_harness import (
    FakeControlPlane,
    Invoke,
    Result,
    cli_invoker,
    fake_control_plane,
    user_environment,
)

TOKEN = "ffu_admin-token-0123456789"
NEW_TOKEN = "ffu_bob-first-token-abcdefghij"
CREATED_AT = "2026-11-01T10:00:00Z"
BOB = {
    "name": "bob",
    "kind": "user",
    "tenant": "acme",
    "roles": [{"role": "developer", "tenant": "acme"}],
    "created_at": CREATED_AT,
}
QUOTA = {
    "gpu": 16,
    "gpu_per_type": {"H100": 8},
    "cpu": 256.0,
    "memory_bytes": 2 * 2**40,
    "max_running_executions": 20,
    "max_running_tasks": None,
}
UNLIMITED: dict[str, Any] = {
    "gpu": None,
    "gpu_per_type": {},
    "cpu": None,
    "memory_bytes": None,
    "max_running_executions": None,
    "max_running_tasks": None,
}


@pytest.fixture(autouse=True)
def _user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    yield from user_environment(monkeypatch, tmp_path)


@pytest.fixture
def fleetflow(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Invoke:
    return cli_invoker(monkeypatch, capsys)


@pytest.fixture
def server() -> Iterator[FakeControlPlane]:
    """Logged in (as an admin) to a fake control plane."""
    for fake in fake_control_plane({TOKEN}):
        save_cli_config(CliConfig(api_url=fake.url, token=TOKEN))
        yield fake


def assert_one_clear_error(result: Result, *expected: str) -> str:
    assert result.code == 1, result
    assert result.err.startswith("error: "), result.err
    assert "Traceback" not in result.err + result.out
    for text in expected:
        assert text in result.err, result.err
    return result.err


def words(text: str) -> list[str]:
    """Each line with its runs of spaces collapsed: table rows without their padding."""
    return [" ".join(line.split()) for line in text.splitlines()]


# Help --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), ["login", "logout", "whoami", "quota", "usage", "--tenant"]),
        (
            ("admin",),
            ["tenants", "users", "tokens", "roles", "quotas", "clusters", "audit"],
        ),
        (("admin", "tenants"), ["create", "list", "get"]),
        (("admin", "users", "create"), ["NAME", "--tenant", "--role", "--service", "--json"]),
        (("admin", "tokens"), ["create", "list", "revoke"]),
        (("admin", "roles", "grant"), ["PRINCIPAL", "ROLE", "--tenant", "platform-admin"]),
        (
            ("admin", "quotas", "set"),
            ["--gpu", "--gpu-type", "TYPE=N", "--cpu", "--memory", "--max-running-executions"],
        ),
        (("admin", "clusters"), ["grant", "revoke-grant", "create", "rotate-token"]),
        (("admin", "audit"), ["--limit", "--json"]),
        (("login",), ["URL", "--token", "--token-stdin", "--tenant", "FLEETFLOW_TOKEN"]),
        (("usage",), ["--since", "--bucket", "--group-by", "--top"]),
    ],
)
def test_help_documents_the_tenancy_commands(
    fleetflow: Invoke, args: tuple[str, ...], expected: list[str]
) -> None:
    result = fleetflow(*args, "--help")
    assert result.code == 0, result
    for text in expected:
        assert text in result.out, f"{text!r} not in help of {args}:\n{result.out}"
    assert "For now" not in result.out


# tenants -----------------------------------------------------------------------------------


def test_tenants_create_list_get(fleetflow: Invoke, server: FakeControlPlane) -> None:
    server.answer("POST", "/api/v1/admin/tenants", {"name": "acme", "created_at": CREATED_AT}, 201)
    created = fleetflow("admin", "tenants", "create", "acme")
    assert created.code == 0, created
    assert server.only("POST", "/api/v1/admin/tenants").body == {"name": "acme"}
    assert created.out.splitlines()[0] == "created tenant acme"
    assert "fleetflow admin clusters grant acme CLUSTER" in created.out

    server.answer(
        "GET", "/api/v1/admin/tenants", {"tenants": [{"name": "acme", "created_at": CREATED_AT}]}
    )
    listed = fleetflow("admin", "tenants", "list")
    assert words(listed.out) == ["NAME CREATED", "acme 2026-11-01 10:00:00 UTC"]

    tenant = {
        "name": "acme",
        "created_at": CREATED_AT,
        "quota": QUOTA,
        "clusters": ["gpu-east"],
        "users": 3,
    }
    server.answer("GET", "/api/v1/admin/tenants/acme", tenant)
    shown = fleetflow("admin", "tenants", "get", "acme")
    assert words(shown.out) == [
        "tenant acme",
        "created 2026-11-01 10:00:00 UTC",
        "users 3",
        "clusters gpu-east",
        "quota 16 GPUs (H100 8), 256 CPU cores, 2Ti memory, 20 running executions",
    ]
    assert json.loads(fleetflow("admin", "tenants", "get", "acme", "--json").out) == tenant


def test_an_unknown_tenant_points_at_the_list(fleetflow: Invoke, server: FakeControlPlane) -> None:
    server.answer("GET", "/api/v1/admin/tenants/nope", {"detail": "no tenant named 'nope'"}, 404)
    assert_one_clear_error(
        fleetflow("admin", "tenants", "get", "nope"),
        f"no tenant named 'nope' on {server.url}; `fleetflow admin tenants list` shows the tenants",
    )


# users and tokens --------------------------------------------------------------------------


def created_user(token_id: str = "tok-1", expires_at: str | None = None) -> dict[str, Any]:
    return {"user": BOB, "token": NEW_TOKEN, "token_id": token_id, "expires_at": expires_at}


def test_users_create_prints_the_token_once_with_a_warning(
    fleetflow: Invoke, server: FakeControlPlane
) -> None:
    server.answer("POST", "/api/v1/admin/tenants/acme/users", created_user(), 201)
    result = fleetflow("admin", "users", "create", "bob", "--tenant", "acme", "--role", "developer")
    assert result.code == 0, result
    # No lifetime given: the control plane's default applies.
    assert server.only("POST", "/api/v1/admin/tenants/acme/users").body == {
        "name": "bob",
        "role": "developer",
        "kind": "user",
    }
    assert result.out.count(NEW_TOKEN) == 1
    assert NEW_TOKEN not in result.err
    lines = result.out.splitlines()
    assert lines[0] == "created user bob in tenant acme; roles: developer in acme"
    assert "shown only this once" in lines[1]
    assert lines[2] == f"  {NEW_TOKEN}"
    assert "expires: never" in lines
    assert f"log in with it: fleetflow login {server.url}   (asks for the token)" in lines


def test_users_create_a_service_account_whose_token_expires(
    fleetflow: Invoke, server: FakeControlPlane
) -> None:
    answer = created_user(expires_at="2027-01-01T00:00:00Z")
    answer["user"] = {**BOB, "name": "ci", "kind": "service"}
    server.answer("POST", "/api/v1/admin/tenants/acme/users", answer, 201)
    result = fleetflow(
        "admin", "users", "create", "ci", "--tenant", "acme", "--role", "Viewer",
        "--service", "--expires-in-days", "90",
    )  # fmt: skip
    assert result.code == 0, result
    assert server.only("POST", "/api/v1/admin/tenants/acme/users").body == {
        "name": "ci",
        "role": "viewer",
        "kind": "service",
        "expires_in_days": 90,
    }
    assert result.out.startswith("created service account ci in tenant acme")
    assert "expires: 2027-01-01 00:00:00 UTC" in result.out


def test_a_token_that_never_expires_is_asked_for_explicitly(
    fleetflow: Invoke, server: FakeControlPlane
) -> None:
    server.answer("POST", "/api/v1/admin/tenants/acme/users", created_user(), 201)
    path = "/api/v1/admin/tenants/acme/users/bob/tokens"
    server.answer("POST", path, {"token": NEW_TOKEN, "token_id": "tok-2", "expires_at": None}, 201)
    user = fleetflow(
        "admin", "users", "create", "bob", "--tenant", "acme", "--role", "viewer", "--never-expires"
    )
    assert user.code == 0, user
    assert server.only("POST", "/api/v1/admin/tenants/acme/users").body["expires_in_days"] is None
    token = fleetflow("admin", "tokens", "create", "bob", "--tenant", "acme", "--never-expires")
    assert token.code == 0, token
    assert server.only("POST", path).body == {"expires_in_days": None}
    assert "expires: never" in token.out


def test_users_create_json_carries_the_token_for_scripts(
    fleetflow: Invoke, server: FakeControlPlane
) -> None:
    server.answer("POST", "/api/v1/admin/tenants/acme/users", created_user(), 201)
    result = fleetflow(
        "admin", "users", "create", "bob", "--tenant", "acme", "--role", "developer", "--json"
    )
    assert json.loads(result.out) == created_user()


def test_users_list(fleetflow: Invoke, server: FakeControlPlane) -> None:
    service = {**BOB, "name": "ci", "kind": "service", "roles": [{"role": "viewer", "tenant": "*"}]}
    server.answer("GET", "/api/v1/admin/tenants/acme/users", {"users": [BOB, service]})
    result = fleetflow("admin", "users", "list", "--tenant", "acme")
    assert words(result.out) == [
        "NAME KIND ROLES CREATED",
        "bob user developer in acme 2026-11-01 10:00:00 UTC",
        "ci service viewer (every tenant) 2026-11-01 10:00:00 UTC",
    ]


def token_row(token_id: str, **fields: str) -> dict[str, Any]:
    row = {"expires_at": None, "revoked_at": None, "last_used_at": None, **fields}
    return {"id": token_id, "created_at": CREATED_AT, **row}


def test_tokens_create_list_revoke(fleetflow: Invoke, server: FakeControlPlane) -> None:
    path = "/api/v1/admin/tenants/acme/users/bob/tokens"
    server.answer("POST", path, {"token": NEW_TOKEN, "token_id": "tok-2", "expires_at": None}, 201)
    created = fleetflow(
        "admin", "tokens", "create", "bob", "--tenant", "acme", "--expires-in-days", "7"
    )
    assert created.code == 0, created
    assert server.only("POST", path).body == {"expires_in_days": 7}
    assert created.out.count(NEW_TOKEN) == 1
    assert "token id: tok-2 (revoke it with `fleetflow admin tokens revoke tok-2`)" in created.out

    now = datetime.now(UTC)
    yesterday = (now - timedelta(days=1)).isoformat()
    tokens = [
        token_row("tok-2", last_used_at=CREATED_AT),
        token_row("tok-1", expires_at=yesterday),
        token_row("tok-0", revoked_at=CREATED_AT),
    ]
    server.answer("GET", path, {"tokens": tokens})
    listed = words(fleetflow("admin", "tokens", "list", "bob", "--tenant", "acme").out)
    assert listed[0] == "ID STATE CREATED EXPIRES LAST USED"
    assert [row.split()[:2] for row in listed[1:]] == [
        ["tok-2", "active"],
        ["tok-1", "expired"],
        ["tok-0", "revoked"],
    ]

    revoke = "/api/v1/admin/tokens/tok-2/revoke"
    server.answer("POST", revoke, {"id": "tok-2", "revoked_at": "2026-11-29T10:00:00Z"})
    revoked = fleetflow("admin", "tokens", "revoke", "tok-2")
    assert revoked.out == "revoked token tok-2 at 2026-11-29 10:00:00 UTC\n"
    assert server.only("POST", revoke).body is None


# roles -------------------------------------------------------------------------------------


def test_roles_grant_and_revoke(fleetflow: Invoke, server: FakeControlPlane) -> None:
    grant = {"principal": "bob", "role": "tenant-admin", "tenant": "acme"}
    server.answer("POST", "/api/v1/admin/roles/grant", grant)
    server.answer("POST", "/api/v1/admin/roles/revoke", grant)
    granted = fleetflow("admin", "roles", "grant", "bob", "tenant-admin", "--tenant", "acme")
    assert granted.out == "granted tenant-admin in acme to bob\n"
    assert server.only("POST", "/api/v1/admin/roles/grant").body == grant
    revoked = fleetflow("admin", "roles", "revoke", "bob", "tenant-admin", "--tenant", "acme")
    assert revoked.out == "revoked tenant-admin in acme from bob\n"
    assert server.only("POST", "/api/v1/admin/roles/revoke").body == grant


def test_platform_admin_is_granted_without_a_tenant(
    fleetflow: Invoke, server: FakeControlPlane
) -> None:
    grant = {"principal": "root", "role": "platform-admin", "tenant": None}
    server.answer(
        "POST", "/api/v1/admin/roles/grant", {**grant, "tenant": "*"}
    )  # as the API answers
    result = fleetflow("admin", "roles", "grant", "root", "platform-admin")
    assert result.out == "granted platform-admin to root\n"
    assert server.only("POST", "/api/v1/admin/roles/grant").body == grant


# quotas ------------------------------------------------------------------------------------


def test_quotas_set_parses_every_flag_and_replaces_the_whole_quota(
    fleetflow: Invoke, server: FakeControlPlane
) -> None:
    server.answer("PUT", "/api/v1/admin/tenants/acme/quota", QUOTA)
    result = fleetflow(
        "admin", "quotas", "set", "acme", "--gpu", "16", "--gpu-type", "H100=8",
        "--gpu-type", " A100 = 4 ", "--cpu", "500m", "--memory", "64Gi",
        "--max-running-executions", "20", "--max-running-tasks", "0",
    )  # fmt: skip
    assert result.code == 0, result
    assert server.only("PUT", "/api/v1/admin/tenants/acme/quota").body == {
        "gpu": 16,
        "gpu_per_type": {"H100": 8, "A100": 4},
        "cpu": 0.5,
        "memory": 64 * 2**30,
        "max_running_executions": 20,
        "max_running_tasks": 0,
    }
    assert words(result.out) == [
        "quota of tenant acme is now:",
        "LIMIT VALUE",
        "GPUs 16",
        "H100 GPUs 8",
        "CPU cores 256",
        "memory 2Ti",
        "running executions 20",
        "running tasks unlimited",
    ]


def test_quotas_set_without_flags_makes_the_tenant_unlimited(
    fleetflow: Invoke, server: FakeControlPlane
) -> None:
    server.answer("PUT", "/api/v1/admin/tenants/acme/quota", UNLIMITED)
    result = fleetflow("admin", "quotas", "set", "acme")
    assert result.out == "tenant acme has no quota now: every limit is unlimited\n"
    assert server.only("PUT", "/api/v1/admin/tenants/acme/quota").body == {
        "gpu": None,
        "gpu_per_type": {},
        "cpu": None,
        "memory": None,
        "max_running_executions": None,
        "max_running_tasks": None,
    }


def test_quotas_get(fleetflow: Invoke, server: FakeControlPlane) -> None:
    server.answer("GET", "/api/v1/admin/tenants/acme/quota", QUOTA)
    assert "memory 2Ti" in words(fleetflow("admin", "quotas", "get", "acme").out)
    server.answer("GET", "/api/v1/admin/tenants/acme/quota", None)
    assert (
        fleetflow("admin", "quotas", "get", "acme").out == "tenant acme has no quota: unlimited\n"
    )


# Mistakes caught before anything is sent ---------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("roles", "grant", "bob", "developr", "--tenant", "acme"),
            "unknown role 'developr' (did you mean developer?); the roles are platform-admin, "
            "tenant-admin, developer, viewer",
        ),
        (("roles", "revoke", "bob", "owner", "--tenant", "acme"), "unknown role 'owner'"),
        (
            ("users", "create", "bob", "--tenant", "acme", "--role", "admin"),
            "unknown role 'admin'",
        ),
        (("roles", "grant", "bob", "viewer"), "viewer is a role in one tenant: add --tenant T"),
        (("quotas", "set", "acme", "--gpu-type", "H100"), "--gpu-type 'H100' is not TYPE=N"),
        (("quotas", "set", "acme", "--gpu-type", "H100=eight"), "--gpu-type 'H100=eight'"),
        (("quotas", "set", "acme", "--gpu-type", "=8"), "--gpu-type '=8' is not TYPE=N"),
        (("quotas", "set", "acme", "--gpu-type", "H100=-1"), "--gpu-type 'H100=-1' is not"),
        (
            ("quotas", "set", "acme", "--gpu-type", "H100=8", "--gpu-type", "H100=4"),
            "--gpu-type H100 is given twice",
        ),
        (
            ("quotas", "set", "acme", "--memory", "64GB"),
            "--memory '64GB' is not an amount of memory like 64Gi, 512Mi or 1T",
        ),
        (("quotas", "set", "acme", "--memory", "lots"), "--memory 'lots' is not an amount"),
        (("quotas", "set", "acme", "--memory", "0"), "--memory '0' is not an amount"),
        (("quotas", "set", "acme", "--cpu", "many"), "--cpu 'many' is not a number of cores"),
        (
            (
                "tokens",
                "create",
                "bob",
                "--tenant",
                "acme",
                "--expires-in-days",
                "3",
                "--never-expires",
            ),
            "give --expires-in-days N or --never-expires, not both",
        ),
    ],
)
def test_bad_values_are_refused_without_calling_the_server(
    fleetflow: Invoke, server: FakeControlPlane, args: tuple[str, ...], expected: str
) -> None:
    message = assert_one_clear_error(fleetflow("admin", *args), expected)
    assert len(message.strip().splitlines()) == 1
    assert server.requests == []


@pytest.mark.parametrize(
    "args",
    [
        ("quotas", "set", "acme", "--gpu", "-1"),
        (
            "users",
            "create",
            "bob",
            "--tenant",
            "acme",
            "--role",
            "viewer",
            "--expires-in-days",
            "0",
        ),
        ("users", "create", "bob", "--role", "viewer"),
    ],
)
def test_out_of_range_options_are_usage_errors(
    fleetflow: Invoke, server: FakeControlPlane, args: tuple[str, ...]
) -> None:
    result = fleetflow("admin", *args)
    assert result.code == 2, result
    assert "Traceback" not in result.err
    assert server.requests == []


# clusters and audit ------------------------------------------------------------------------


def test_clusters_grant_and_revoke_grant(fleetflow: Invoke, server: FakeControlPlane) -> None:
    server.answer(
        "POST", "/api/v1/admin/tenants/acme/clusters/*", {"tenant": "acme", "cluster": "*"}
    )
    granted = fleetflow("admin", "clusters", "grant", "acme", "*")
    assert granted.out == "tenant acme may now run on every cluster\n"
    server.answer(
        "DELETE", "/api/v1/admin/tenants/acme/clusters/gpu-east",
        {"tenant": "acme", "cluster": "gpu-east"},
    )  # fmt: skip
    revoked = fleetflow("admin", "clusters", "revoke-grant", "acme", "gpu-east", "--json")
    assert json.loads(revoked.out) == {"tenant": "acme", "cluster": "gpu-east"}
    assert [(r.method, r.path) for r in server.requests] == [
        ("POST", "/api/v1/admin/tenants/acme/clusters/*"),
        ("DELETE", "/api/v1/admin/tenants/acme/clusters/gpu-east"),
    ]


def test_audit(fleetflow: Invoke, server: FakeControlPlane) -> None:
    entry = {
        "at": "2026-11-29T10:00:00Z",
        "actor": "root",
        "action": "quota.set",
        "target": "acme",
        "details": {"gpu": 16, "by": "cli"},
    }
    server.answer("GET", "/api/v1/admin/audit", {"entries": [entry]})
    result = fleetflow("admin", "audit", "--limit", "5")
    assert words(result.out) == [
        "AT ACTOR ACTION TARGET DETAILS",
        "2026-11-29 10:00:00 UTC root quota.set acme by=cli, gpu=16",
    ]
    assert server.only("GET", "/api/v1/admin/audit").query == {"limit": ["5"]}


# fleetflow quota and usage -----------------------------------------------------------------


def test_quota_shows_usage_against_limits(fleetflow: Invoke, server: FakeControlPlane) -> None:
    status = {
        "tenant": "acme",
        "limits": QUOTA,
        "usage": {
            "gpu": 14,
            "gpu_per_type": {"H100": 8, "A100": 6},
            "cpu": 100.5,
            "memory_bytes": 2**40,
            "running_executions": 20,
            "running_tasks": 31,
        },
        "waiting_for_quota": 4,
    }
    server.answer("GET", "/api/v1/quota", status)
    result = fleetflow("--tenant", "acme", "quota")
    assert result.code == 0, result
    assert words(result.out) == [
        "quota of tenant acme",
        "RESOURCE IN USE LIMIT USED",
        "GPUs 14 16 88%",
        "A100 GPUs 6 unlimited -",
        "H100 GPUs 8 8 100%",
        "CPU cores 100.5 256 39%",
        "memory 1Ti 2Ti 50%",
        "running executions 20 20 100%",
        "running tasks 31 unlimited -",
        "4 task attempt(s) wait for quota",
    ]
    assert server.only("GET", "/api/v1/quota").headers["x-fleetflow-tenant"] == "acme"
    assert json.loads(fleetflow("quota", "--json").out) == status


def sums(gpu: float, cpu: float, memory: float) -> dict[str, float]:
    return {"gpu_seconds": gpu, "cpu_seconds": cpu, "memory_gib_seconds": memory}


USAGE = {
    "tenant": "acme",
    "bucket": "hour",
    "buckets": [
        {
            "start": "2026-11-29T09:00:00Z",
            **sums(7200.0, 36000.0, 3600.0),
            "groups": {"gpu-west": sums(1800.0, 0, 0), "gpu-east": sums(5400.0, 36000.0, 3600.0)},
        }
    ],
}


def test_usage_sends_the_window_and_sums_hours(fleetflow: Invoke, server: FakeControlPlane) -> None:
    server.answer("GET", "/api/v1/usage", USAGE)
    before = datetime.now(UTC)
    result = fleetflow("usage", "--since", "2h", "--group-by", "cluster", "--bucket", "hour")
    after = datetime.now(UTC)
    assert result.code == 0, result
    query = server.only("GET", "/api/v1/usage").query
    since = datetime.fromisoformat(query.pop("since")[0])
    assert before - timedelta(hours=2) <= since <= after - timedelta(hours=2)
    assert query == {"bucket": ["hour"], "group_by": ["cluster"]}
    assert words(result.out) == [
        "usage of tenant acme per hour",
        "START CLUSTER GPU h CPU h MEMORY GiB h",
        "2026-11-29 09:00:00 UTC gpu-east 1.50 10.00 1.00",
        "gpu-west 0.50 0.00 0.00",
        "total 2.00 10.00 1.00",
    ]


def test_usage_leaves_out_buckets_without_usage(
    fleetflow: Invoke, server: FakeControlPlane
) -> None:
    idle = {"start": "2026-11-29T10:00:00Z", **sums(0, 0, 0), "groups": {}}
    server.answer("GET", "/api/v1/usage", {**USAGE, "buckets": [*USAGE["buckets"], idle]})
    assert words(fleetflow("usage").out) == [
        "usage of tenant acme per hour (1 without usage left out)",
        "START GPU h CPU h MEMORY GiB h",
        "2026-11-29 09:00:00 UTC 2.00 10.00 1.00",
        "total 2.00 10.00 1.00",
    ]
    server.answer("GET", "/api/v1/usage", {**USAGE, "buckets": [idle]})
    assert fleetflow("usage", "--since", "2026-11-29T00:00:00Z").out == (
        "no usage in tenant acme since 2026-11-29 00:00:00 UTC\n"
    )


def test_usage_with_iso_times(fleetflow: Invoke, server: FakeControlPlane) -> None:
    server.answer("GET", "/api/v1/usage", {**USAGE, "buckets": []})
    result = fleetflow(
        "usage", "--since", "2026-11-01", "--until", "2026-11-02T12:00:00+02:00", "--bucket", "day"
    )
    assert result.out == "no usage in tenant acme since 2026-11-01 00:00:00 UTC\n"
    assert server.only("GET", "/api/v1/usage").query == {
        "since": ["2026-11-01T00:00:00+00:00"],
        "until": ["2026-11-02T12:00:00+02:00"],
        "bucket": ["day"],
    }


def test_usage_top_ranks_workflows(fleetflow: Invoke, server: FakeControlPlane) -> None:
    ranked = {"workflow": "train.pipeline", "executions": 12, **sums(36000.0, 7200.0, 0)}
    top = {"workflows": [ranked]}
    server.answer("GET", "/api/v1/usage/top-workflows", top)
    result = fleetflow("usage", "--top", "--since", "7d", "--limit", "3")
    assert result.code == 0, result
    assert words(result.out)[1:] == [
        "WORKFLOW GPU h CPU h EXECUTIONS",
        "train.pipeline 10.00 2.00 12",
    ]
    query = server.only("GET", "/api/v1/usage/top-workflows").query
    assert query["limit"] == ["3"] and set(query) == {"since", "limit"}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--since", "yesterday"), "--since 'yesterday' is neither a duration like 30m, 24h or 7d"),
        (("--bucket", "week"), "--bucket 'week' is not one of minute, hour, day"),
        (("--group-by", "user"), "--group-by 'user' is not one of cluster, gpu_type, workflow"),
        (("--since", "1h", "--until", "2h"), "is not after --since"),
        (("--top", "--group-by", "cluster"), "--top ranks workflows since --since"),
    ],
)
def test_usage_mistakes(
    fleetflow: Invoke, server: FakeControlPlane, args: tuple[str, ...], expected: str
) -> None:
    assert_one_clear_error(fleetflow("usage", *args), expected)
    assert server.requests == []
