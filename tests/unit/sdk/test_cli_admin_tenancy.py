"""`fleetflow admin tenants|users|tokens|roles|quotas|clusters grant|audit`, `fleetflow quota`
and `fleetflow usage`: what each does on the control plane, what it prints, and the mistakes
caught before anything is sent.

The CLI talks over HTTP to the real control-plane API (`control_plane_api`, tests/conftest.py:
a fresh app and SQLite database per test), logged in as its platform admin. What a command did
is read back from the API; what it prints is compared with what the API holds. Attempts that
quota and usage count are set up in the database (their states are what is counted here, not
how they got there).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_plane.auth.rbac import EVERY_TENANT, Role
from control_plane.db.repositories import clusters as clusters_repo
from control_plane.db.repositories import principals as principals_repo
from control_plane.db.session import transaction
from fleetflow.config import CliConfig, save_cli_config
from fleetflow.ir import WorkflowSpec
from fleetflow.states import AttemptState
from tests.api_server import ControlPlane
from tests.seeding import Held, seed_execution
from tests.unit.cli_harness import Invoke, Result, cli_invoker, user_environment

GI = 2**30
TI = 2**40
QUOTA = {
    "gpu": 16,
    "gpu_per_type": {"H100": 8},
    "cpu": 256.0,
    "memory": 2 * TI,
    "max_running_executions": 2,
    "max_running_tasks": None,
}


@pytest.fixture(autouse=True)
def _user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    yield from user_environment(monkeypatch, tmp_path)


@pytest.fixture
def fleetflow(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Invoke:
    return cli_invoker(monkeypatch, capsys)


@pytest.fixture
def server(control_plane_api: ControlPlane) -> ControlPlane:
    """Logged in as the platform admin of a fresh control plane."""
    save_cli_config(CliConfig(api_url=control_plane_api.url, token=control_plane_api.admin_token))
    return control_plane_api


@pytest.fixture
def acme(server: ControlPlane) -> str:
    server.tenants("acme")
    return "acme"


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


def utc(text: str | None) -> str:
    """An API time as the CLI shows it."""
    assert text is not None
    return datetime.fromisoformat(text).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def whoami(server: ControlPlane, token: str) -> Any:
    response = httpx.get(
        f"{server.url}/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text
    return response.json()


def roles_of(server: ControlPlane, tenant: str, name: str) -> list[dict[str, str]]:
    users = server.api("GET", f"/api/v1/admin/tenants/{tenant}/users")["users"]
    return [user["roles"] for user in users if user["name"] == name][0]


def tokens_of(server: ControlPlane, tenant: str, name: str) -> dict[str, Any]:
    tokens = server.api("GET", f"/api/v1/admin/tenants/{tenant}/users/{name}/tokens")["tokens"]
    return {token["id"]: token for token in tokens}


def about(text: str | None, expected: datetime) -> bool:
    assert text is not None
    return abs(datetime.fromisoformat(text) - expected) < timedelta(minutes=5)


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


def test_tenants_create_list_get(fleetflow: Invoke, server: ControlPlane) -> None:
    created = fleetflow("admin", "tenants", "create", "acme")
    assert created.code == 0, created
    assert created.out.splitlines()[0] == "created tenant acme"
    assert "fleetflow admin clusters grant acme CLUSTER" in created.out

    tenants = server.api("GET", "/api/v1/admin/tenants")["tenants"]
    assert "acme" in [tenant["name"] for tenant in tenants]
    listed = fleetflow("admin", "tenants", "list")
    assert words(listed.out) == [
        "NAME CREATED",
        *(f"{tenant['name']} {utc(tenant['created_at'])}" for tenant in tenants),
    ]

    with transaction(server.sessions) as session:
        clusters_repo.create_cluster(session, "gpu-east", {})
    server.api("POST", "/api/v1/admin/tenants/acme/clusters/gpu-east")
    server.api("PUT", "/api/v1/admin/tenants/acme/quota", {**QUOTA, "max_running_executions": 20})
    for name in ("ann", "bob", "cy"):
        server.principal(name, tenant="acme", role=Role.DEVELOPER)
    tenant = server.api("GET", "/api/v1/admin/tenants/acme")
    shown = fleetflow("admin", "tenants", "get", "acme")
    assert words(shown.out) == [
        "tenant acme",
        f"created {utc(tenant['created_at'])}",
        "users 3",
        "clusters gpu-east",
        "quota 16 GPUs (H100 8), 256 CPU cores, 2Ti memory, 20 running executions",
    ]
    assert json.loads(fleetflow("admin", "tenants", "get", "acme", "--json").out) == tenant


def test_an_unknown_tenant_points_at_the_list(fleetflow: Invoke, server: ControlPlane) -> None:
    assert_one_clear_error(
        fleetflow("admin", "tenants", "get", "nope"),
        f"tenant 'nope' not found on {server.url}; "
        "`fleetflow admin tenants list` shows the tenants",
    )


# users and tokens --------------------------------------------------------------------------


def test_users_create_prints_the_token_once_with_a_warning(
    fleetflow: Invoke, server: ControlPlane, acme: str
) -> None:
    result = fleetflow("admin", "users", "create", "bob", "--tenant", "acme", "--role", "developer")
    assert result.code == 0, result
    lines = result.out.splitlines()
    assert lines[0] == "created user bob in tenant acme; roles: developer in acme"
    assert "shown only this once" in lines[1]
    token = lines[2].removeprefix("  ")
    assert result.out.count(token) == 1
    assert token not in result.err
    assert whoami(server, token)["roles"] == [{"role": "developer", "tenant": "acme"}]
    # No lifetime given: the control plane's default applies.
    [issued] = tokens_of(server, "acme", "bob").values()
    assert f"expires: {utc(issued['expires_at']) if issued['expires_at'] else 'never'}" in lines
    assert f"log in with it: fleetflow login {server.url}   (asks for the token)" in lines


def test_users_create_a_service_account_whose_token_expires(
    fleetflow: Invoke, server: ControlPlane, acme: str
) -> None:
    result = fleetflow(
        "admin", "users", "create", "ci", "--tenant", "acme", "--role", "Viewer",
        "--service", "--expires-in-days", "90",
    )  # fmt: skip
    assert result.code == 0, result
    assert result.out.startswith("created service account ci in tenant acme")
    [user] = server.api("GET", "/api/v1/admin/tenants/acme/users")["users"]
    assert (user["name"], user["kind"], user["roles"]) == (
        "ci",
        "service",
        [{"role": "viewer", "tenant": "acme"}],
    )
    [issued] = tokens_of(server, "acme", "ci").values()
    assert about(issued["expires_at"], datetime.now(UTC) + timedelta(days=90))
    assert f"expires: {utc(issued['expires_at'])}" in result.out


def test_a_token_that_never_expires_is_asked_for_explicitly(
    fleetflow: Invoke, server: ControlPlane, acme: str
) -> None:
    user = fleetflow(
        "admin", "users", "create", "bob", "--tenant", "acme", "--role", "viewer", "--never-expires"
    )
    assert user.code == 0, user
    token = fleetflow("admin", "tokens", "create", "bob", "--tenant", "acme", "--never-expires")
    assert token.code == 0, token
    assert "expires: never" in token.out
    tokens = tokens_of(server, "acme", "bob").values()
    assert len(tokens) == 2 and all(t["expires_at"] is None for t in tokens)


def test_users_create_json_carries_the_token_for_scripts(
    fleetflow: Invoke, server: ControlPlane, acme: str
) -> None:
    result = fleetflow(
        "admin", "users", "create", "bob", "--tenant", "acme", "--role", "developer", "--json"
    )
    created = json.loads(result.out)
    assert set(created) == {"user", "token", "token_id", "expires_at"}
    assert [created["user"]] == server.api("GET", "/api/v1/admin/tenants/acme/users")["users"]
    assert whoami(server, created["token"])["principal"] == "bob"
    assert list(tokens_of(server, "acme", "bob")) == [created["token_id"]]


def test_users_list(fleetflow: Invoke, server: ControlPlane, acme: str) -> None:
    server.principal("bob", tenant="acme", role=Role.DEVELOPER)
    server.api(
        "POST",
        "/api/v1/admin/tenants/acme/users",
        {"name": "ci", "role": "viewer", "kind": "service"},
    )
    server.grant("ci", Role.VIEWER, EVERY_TENANT)
    users = {u["name"]: u for u in server.api("GET", "/api/v1/admin/tenants/acme/users")["users"]}
    result = fleetflow("admin", "users", "list", "--tenant", "acme")
    assert words(result.out) == [
        "NAME KIND ROLES CREATED",
        f"bob user developer in acme {utc(users['bob']['created_at'])}",
        f"ci service viewer (every tenant), viewer in acme {utc(users['ci']['created_at'])}",
    ]


def test_tokens_create_list_revoke(fleetflow: Invoke, server: ControlPlane, acme: str) -> None:
    server.principal("bob", tenant="acme", role=Role.DEVELOPER)
    created = fleetflow(
        "admin", "tokens", "create", "bob", "--tenant", "acme", "--expires-in-days", "7"
    )
    assert created.code == 0, created
    [new_id] = set(tokens_of(server, "acme", "bob")) - {first_id(server, "bob")}
    new = tokens_of(server, "acme", "bob")[new_id]
    assert about(new["expires_at"], datetime.now(UTC) + timedelta(days=7))
    token = [line.strip() for line in created.out.splitlines() if line.startswith("  ffu_")][0]
    assert created.out.count(token) == 1
    assert f"token id: {new_id} (revoke it with `fleetflow admin tokens revoke {new_id}`)" in (
        created.out
    )

    whoami(server, token)  # used: it has a last use now
    with transaction(server.sessions) as session:
        bob = principals_repo.get_principal(session, "bob")
        assert bob is not None
        expired, _ = principals_repo.issue_token(session, bob, expires_in=timedelta(days=-1))
        expired_id = expired.id
    server.api("POST", f"/api/v1/admin/tokens/{first_id(server, 'bob')}/revoke")
    listed = words(fleetflow("admin", "tokens", "list", "bob", "--tenant", "acme").out)
    assert listed[0] == "ID STATE CREATED EXPIRES LAST USED"
    assert sorted(row.split()[:2] for row in listed[1:]) == sorted(
        [[new_id, "active"], [expired_id, "expired"], [first_id(server, "bob"), "revoked"]]
    )
    assert tokens_of(server, "acme", "bob")[new_id]["last_used_at"] is not None

    revoked = fleetflow("admin", "tokens", "revoke", new_id)
    revoked_at = tokens_of(server, "acme", "bob")[new_id]["revoked_at"]
    assert revoked.out == f"revoked token {new_id} at {utc(revoked_at)}\n"


def first_id(server: ControlPlane, name: str) -> str:
    """The id of the first token `name` was given."""
    with server.sessions() as session:
        principal = principals_repo.get_principal(session, name)
        assert principal is not None
        return min(principals_repo.tokens_of(session, principal), key=lambda t: t.created_at).id


# roles -------------------------------------------------------------------------------------


def test_roles_grant_and_revoke(fleetflow: Invoke, server: ControlPlane, acme: str) -> None:
    server.principal("bob", tenant="acme", role=Role.VIEWER)
    granted = fleetflow("admin", "roles", "grant", "bob", "tenant-admin", "--tenant", "acme")
    assert granted.out == "granted tenant-admin in acme to bob\n"
    assert {"role": "tenant-admin", "tenant": "acme"} in roles_of(server, "acme", "bob")
    revoked = fleetflow("admin", "roles", "revoke", "bob", "tenant-admin", "--tenant", "acme")
    assert revoked.out == "revoked tenant-admin in acme from bob\n"
    assert roles_of(server, "acme", "bob") == [{"role": "viewer", "tenant": "acme"}]


def test_platform_admin_is_granted_without_a_tenant(
    fleetflow: Invoke, server: ControlPlane
) -> None:
    root = server.principal("root", tenant="default", role=Role.VIEWER)
    result = fleetflow("admin", "roles", "grant", "root", "platform-admin")
    assert result.out == "granted platform-admin to root\n"
    assert {"role": "platform-admin", "tenant": EVERY_TENANT} in whoami(server, root)["roles"]


# quotas ------------------------------------------------------------------------------------


def test_quotas_set_parses_every_flag_and_replaces_the_whole_quota(
    fleetflow: Invoke, server: ControlPlane, acme: str
) -> None:
    result = fleetflow(
        "admin", "quotas", "set", "acme", "--gpu", "16", "--gpu-type", "H100=8",
        "--gpu-type", " A100 = 4 ", "--cpu", "500m", "--memory", "64Gi",
        "--max-running-executions", "20", "--max-running-tasks", "0",
    )  # fmt: skip
    assert result.code == 0, result
    assert server.api("GET", "/api/v1/admin/tenants/acme/quota") == {
        "gpu": 16,
        "gpu_per_type": {"H100": 8, "A100": 4},
        "cpu": 0.5,
        "memory_bytes": 64 * GI,
        "max_running_executions": 20,
        "max_running_tasks": 0,
    }
    assert words(result.out) == [
        "quota of tenant acme is now:",
        "LIMIT VALUE",
        "GPUs 16",
        "A100 GPUs 4",
        "H100 GPUs 8",
        "CPU cores 0.5",
        "memory 64Gi",
        "running executions 20",
        "running tasks 0",
    ]


def test_quotas_set_without_flags_makes_the_tenant_unlimited(
    fleetflow: Invoke, server: ControlPlane, acme: str
) -> None:
    server.api("PUT", "/api/v1/admin/tenants/acme/quota", QUOTA)
    result = fleetflow("admin", "quotas", "set", "acme")
    assert result.out == "tenant acme has no quota now: every limit is unlimited\n"
    assert server.api("GET", "/api/v1/admin/tenants/acme/quota") == {
        "gpu": None,
        "gpu_per_type": {},
        "cpu": None,
        "memory_bytes": None,
        "max_running_executions": None,
        "max_running_tasks": None,
    }


def test_quotas_get(fleetflow: Invoke, server: ControlPlane, acme: str) -> None:
    assert (
        fleetflow("admin", "quotas", "get", "acme").out == "tenant acme has no quota: unlimited\n"
    )
    server.api("PUT", "/api/v1/admin/tenants/acme/quota", QUOTA)
    assert "memory 2Ti" in words(fleetflow("admin", "quotas", "get", "acme").out)


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
    fleetflow: Invoke, server: ControlPlane, args: tuple[str, ...], expected: str
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
    fleetflow: Invoke, server: ControlPlane, args: tuple[str, ...]
) -> None:
    result = fleetflow("admin", *args)
    assert result.code == 2, result
    assert "Traceback" not in result.err
    assert server.requests == []


# clusters and audit ------------------------------------------------------------------------


def test_clusters_grant_and_revoke_grant(
    fleetflow: Invoke, server: ControlPlane, acme: str
) -> None:
    with transaction(server.sessions) as session:
        clusters_repo.create_cluster(session, "gpu-east", {})
    server.api("POST", "/api/v1/admin/tenants/acme/clusters/gpu-east")
    granted = fleetflow("admin", "clusters", "grant", "acme", "*")
    assert granted.out == "tenant acme may now run on every cluster\n"
    revoked = fleetflow("admin", "clusters", "revoke-grant", "acme", "gpu-east", "--json")
    assert json.loads(revoked.out) == {"tenant": "acme", "cluster": "gpu-east"}
    assert server.api("GET", "/api/v1/admin/tenants/acme")["clusters"] == ["*"]
    assert [(r.method, r.path) for r in server.requests] == [
        ("POST", "/api/v1/admin/tenants/acme/clusters/*"),
        ("DELETE", "/api/v1/admin/tenants/acme/clusters/gpu-east"),
    ]


def test_audit(fleetflow: Invoke, server: ControlPlane) -> None:
    assert fleetflow("admin", "tenants", "create", "acme").code == 0
    assert fleetflow("admin", "quotas", "set", "acme", "--gpu", "16").code == 0
    entries = server.api("GET", "/api/v1/admin/audit")["entries"]
    result = fleetflow("admin", "audit", "--limit", "5")
    assert words(result.out) == [
        "AT ACTOR ACTION TARGET DETAILS",
        f"{utc(entries[0]['at'])} admin quota.set acme cpu=null, gpu=16, gpu_per_type={{}}, "
        "max_running_executions=null, max_running_tasks=null, memory=null",
        f"{utc(entries[1]['at'])} admin tenant.create acme -",
        f"{utc(entries[2]['at'])} system bootstrap admin tenant=default",
    ]
    assert server.only("GET", "/api/v1/admin/audit").query == {"limit": ["5"]}


# fleetflow quota and usage -----------------------------------------------------------------


def test_quota_shows_usage_against_limits(
    fleetflow: Invoke, server: ControlPlane, acme: str, workflow_spec: WorkflowSpec
) -> None:
    server.api("PUT", "/api/v1/admin/tenants/acme/quota", QUOTA)
    running = AttemptState.RUNNING
    seed_execution(
        server.sessions, workflow_spec, "acme",
        Held(running, gpu=8, gpu_type="H100", cpu=100.0, memory_bytes=TI),
        Held(running, gpu=6, gpu_type="A100", cpu=0.5),
        Held(AttemptState.LEASED),
        running=True,
    )  # fmt: skip
    waiting = Held(AttemptState.PENDING, pending_reason="quota: gpu 16 of 16 in use")
    seed_execution(server.sessions, workflow_spec, "acme", waiting, running=True)
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
        "running executions 2 2 100%",
        "running tasks 3 unlimited -",
        "1 task attempt(s) wait for quota",
    ]
    assert server.only("GET", "/api/v1/quota").headers["x-fleetflow-tenant"] == "acme"
    status = json.loads(fleetflow("--tenant", "acme", "quota", "--json").out)
    assert status["usage"]["running_tasks"] == 3 and status["waiting_for_quota"] == 1


def finished(cluster: str, minutes: int, **resources: Any) -> Held:
    """An attempt that ran `minutes` from 5 minutes into the hour before this one: wholly
    inside a window of the last 2 hours, even one that starts in the next hour. Over by now
    only if `minutes` is at most 55."""
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    start = hour + timedelta(minutes=5)
    end = start + timedelta(minutes=minutes)
    return Held(AttemptState.SUCCEEDED, cluster, started_at=start, finished_at=end, **resources)


def seed_an_hours_usage(server: ControlPlane, spec: WorkflowSpec) -> str:
    """2 GPU hours (1.5 on gpu-east), 10 CPU hours and 1 GiB hour of memory in tenant default,
    in the hour before this one; that hour's start as the CLI shows it."""
    east = finished("gpu-east", 30, gpu=3, cpu=20.0, memory_bytes=2 * GI)
    seed_execution(server.sessions, spec, "default", east, finished("gpu-west", 30, gpu=1))
    assert east.started_at is not None
    return utc(east.started_at.replace(minute=0).isoformat())


def test_usage_sends_the_window_and_sums_hours(
    fleetflow: Invoke, server: ControlPlane, workflow_spec: WorkflowSpec
) -> None:
    hour = seed_an_hours_usage(server, workflow_spec)
    before = datetime.now(UTC)
    result = fleetflow("usage", "--since", "2h", "--group-by", "cluster", "--bucket", "hour")
    after = datetime.now(UTC)
    assert result.code == 0, result
    query = server.only("GET", "/api/v1/usage").query
    since = datetime.fromisoformat(query.pop("since")[0])
    assert before - timedelta(hours=2) <= since <= after - timedelta(hours=2)
    assert query == {"bucket": ["hour"], "group_by": ["cluster"]}
    assert words(result.out) == [
        "usage of tenant default per hour (2 without usage left out)",
        "START CLUSTER GPU h CPU h MEMORY GiB h",
        f"{hour} gpu-east 1.50 10.00 1.00",
        "gpu-west 0.50 0.00 0.00",
        "total 2.00 10.00 1.00",
    ]


def test_usage_leaves_out_buckets_without_usage(
    fleetflow: Invoke, server: ControlPlane, workflow_spec: WorkflowSpec
) -> None:
    since = datetime.now(UTC) - timedelta(hours=3)
    quiet = fleetflow("usage", "--since", since.isoformat())
    assert quiet.out == f"no usage in tenant default since {utc(since.isoformat())}\n"
    hour = seed_an_hours_usage(server, workflow_spec)
    assert words(fleetflow("usage", "--since", "2h").out) == [
        "usage of tenant default per hour (2 without usage left out)",
        "START GPU h CPU h MEMORY GiB h",
        f"{hour} 2.00 10.00 1.00",
        "total 2.00 10.00 1.00",
    ]


def test_usage_with_iso_times(fleetflow: Invoke, server: ControlPlane) -> None:
    result = fleetflow(
        "usage", "--since", "2026-11-01", "--until", "2026-11-02T12:00:00+02:00", "--bucket", "day"
    )
    assert result.out == "no usage in tenant default since 2026-11-01 00:00:00 UTC\n"
    assert server.only("GET", "/api/v1/usage").query == {
        "since": ["2026-11-01T00:00:00+00:00"],
        "until": ["2026-11-02T12:00:00+02:00"],
        "bucket": ["day"],
    }


def test_usage_top_ranks_workflows(
    fleetflow: Invoke, server: ControlPlane, workflow_spec: WorkflowSpec
) -> None:
    # 50 minutes: over before this hour begins. A 60-minute attempt would end 5 minutes into
    # this hour, so a run in those 5 minutes counted only part of it (CI saw 9.61 GPU h).
    seed_execution(
        server.sessions, workflow_spec, "default", finished("gpu-east", 50, gpu=12, cpu=2.4)
    )
    result = fleetflow("usage", "--top", "--since", "7d", "--limit", "3")
    assert result.code == 0, result
    assert words(result.out)[1:] == [
        "WORKFLOW GPU h CPU h EXECUTIONS",
        f"{workflow_spec.name} 10.00 2.00 1",
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
    fleetflow: Invoke, server: ControlPlane, args: tuple[str, ...], expected: str
) -> None:
    assert_one_clear_error(fleetflow("usage", *args), expected)
    assert server.requests == []
