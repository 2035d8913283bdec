"""`fleetflow admin cohorts …` and the cohort API: what each command does on the control plane,
what it prints, who may do it (platform admins only), the bad input refused with a clear 422,
and what a tenant reads of its own cohort (`GET /api/v1/cohort`), never another member's.

The CLI talks over HTTP to the real control-plane API (`control_plane_api`, tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from control_plane.auth.rbac import Role
from fleetflow.config import CliConfig, save_cli_config
from tests.api_server import ControlPlane
from tests.integration.auth import bearer
from tests.unit.cli_harness import Invoke, Result, cli_invoker, user_environment
from tests.unit.sdk.test_cli_admin_tenancy import assert_one_clear_error, words


@pytest.fixture(autouse=True)
def _user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    yield from user_environment(monkeypatch, tmp_path)


@pytest.fixture
def fleetflow(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Invoke:
    return cli_invoker(monkeypatch, capsys)


@pytest.fixture
def server(control_plane_api: ControlPlane) -> ControlPlane:
    save_cli_config(CliConfig(api_url=control_plane_api.url, token=control_plane_api.admin_token))
    control_plane_api.tenants("alpha", "beta", "gamma")
    return control_plane_api


def test_create_set_list_remove_delete(fleetflow: Invoke, server: ControlPlane) -> None:
    created = fleetflow("admin", "cohorts", "create", "lab")
    assert created.out == "cohort lab created (preemption grace 30s)\n"
    set_alpha = fleetflow("admin", "cohorts", "set", "lab", "alpha", "--gpu", "H100=8:4")
    assert set_alpha.out == "tenant alpha in cohort lab: H100 8 (borrow 4)\n"
    set_beta = fleetflow(
        "admin", "cohorts", "set", "lab", "beta", "--gpu", "H100=4", "--gpu", "A100=2",
        "--preempt-within-tenant",
    )  # fmt: skip
    assert set_beta.out == (
        "tenant beta in cohort lab: A100 2 (borrow unlimited), H100 4 (borrow unlimited), "
        "preempts its own lower-priority work\n"
    )
    listed = fleetflow("admin", "cohorts", "list")
    assert words(listed.out) == [
        "COHORT GRACE TENANT NOMINAL (BORROWING LIMIT) PREEMPTS OWN",
        "lab 30s alpha H100: 8 (borrow 4) no",
        "lab 30s beta A100: 2 (borrow unlimited), H100: 4 (borrow unlimited) yes",
    ]
    stored = server.api("GET", "/api/v1/admin/cohorts/lab")
    assert stored["members"][0] == {
        "tenant": "alpha",
        "shares": {"H100": {"nominal": 8, "borrowing_limit": 4}},
        "preempt_within_tenant": False,
    }
    # Moving a tenant to another cohort replaces its membership.
    other = fleetflow("admin", "cohorts", "create", "other", "--preemption-grace", "5")
    assert other.out == "cohort other created (preemption grace 5s)\n"
    fleetflow("admin", "cohorts", "set", "other", "beta", "--gpu", "H100=1")
    assert [m["tenant"] for m in server.api("GET", "/api/v1/admin/cohorts/lab")["members"]] == [
        "alpha"
    ]
    updated = fleetflow("admin", "cohorts", "update", "lab", "--preemption-grace", "120")
    assert updated.out == "cohort lab: preemption grace 120s\n"
    assert server.api("GET", "/api/v1/admin/cohorts/lab")["preemption_grace_seconds"] == 120
    removed = fleetflow("admin", "cohorts", "remove", "lab", "alpha")
    assert removed.out == "tenant alpha is no longer in cohort lab\n"
    assert fleetflow("admin", "cohorts", "delete", "other").out == "cohort other deleted\n"
    assert [c["name"] for c in server.api("GET", "/api/v1/admin/cohorts")["cohorts"]] == ["lab"]
    actions = [e["action"] for e in server.api("GET", "/api/v1/admin/audit")["entries"]]
    assert {
        "cohort.create",
        "cohort.update",
        "cohort.member.set",
        "cohort.member.remove",
        "cohort.delete",
    } <= set(actions)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"shares": {"H100": {"nominal": -1}}}, "greater than or equal to 0"),
        ({"shares": {"H100": {"nominal": 1, "borrowing_limit": -2}}}, "greater than or equal"),
        ({"shares": {"H 100!": {"nominal": 1}}}, "is not a GPU type name"),
        ({"shares": {"H100": {"nominal": 1}}, "stray": 1}, "Extra inputs are not permitted"),
    ],
)
def test_bad_membership_input_is_a_clear_422(
    server: ControlPlane, body: dict[str, object], expected: str
) -> None:
    server.api("POST", "/api/v1/admin/cohorts", {"name": "lab"})
    with httpx.Client(base_url=server.url, headers=bearer(server.admin_token)) as client:
        answer = client.put("/api/v1/admin/cohorts/lab/members/alpha", json=body)
    assert answer.status_code == 422, answer.text
    assert expected in answer.text


def test_unknown_tenant_or_cohort_and_bad_names(fleetflow: Invoke, server: ControlPlane) -> None:
    fleetflow("admin", "cohorts", "create", "lab")
    with httpx.Client(base_url=server.url, headers=bearer(server.admin_token)) as client:
        unknown = client.put(
            "/api/v1/admin/cohorts/lab/members/nobody", json={"shares": {"H100": {"nominal": 1}}}
        )
        assert unknown.status_code == 422
        assert "tenant 'nobody' does not exist" in unknown.text
        missing = client.put(
            "/api/v1/admin/cohorts/none/members/alpha", json={"shares": {"H100": {"nominal": 1}}}
        )
        assert missing.status_code == 404 and "cohort 'none' not found" in missing.text
        bad_name = client.post("/api/v1/admin/cohorts", json={"name": "Not_A_Label"})
        assert bad_name.status_code == 422 and "not a valid cohort name" in bad_name.text
        twice = client.post("/api/v1/admin/cohorts", json={"name": "lab"})
        assert twice.status_code == 409
        for grace in (-1, 3601, "soon"):
            bad = client.post(
                "/api/v1/admin/cohorts", json={"name": "graced", "preemption_grace_seconds": grace}
            )
            assert bad.status_code == 422 and "preemption_grace_seconds" in bad.text, bad.text
            patched = client.patch(
                "/api/v1/admin/cohorts/lab", json={"preemption_grace_seconds": grace}
            )
            assert patched.status_code == 422, patched.text
        unknown_cohort = client.patch("/api/v1/admin/cohorts/none", json={})
        assert unknown_cohort.status_code == 404
    assert_one_clear_error(
        fleetflow("admin", "cohorts", "update", "lab", "--preemption-grace", "4000"),
        "less than or equal to 3600",
    )
    assert_one_usage_error(
        fleetflow("admin", "cohorts", "set", "lab", "alpha", "--gpu", "H100"),
        "expected TYPE=NOMINAL or TYPE=NOMINAL:BORROWING_LIMIT",
    )
    assert_one_usage_error(
        fleetflow("admin", "cohorts", "set", "lab", "alpha", "--gpu", "H100=-1"),
        "GPU counts are 0 or more",
    )
    assert_one_usage_error(fleetflow("admin", "cohorts", "set", "lab", "alpha"), "--gpu H100=8")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=3", "expected TYPE=NOMINAL"),
        ("H100=x", "expected TYPE=NOMINAL"),
        ("H100=8:", "expected TYPE=NOMINAL"),  # not silently "unlimited"
        ("H100=8:-2", "GPU counts are 0 or more"),
    ],
)
def test_malformed_gpu_shares_are_usage_errors(
    fleetflow: Invoke, server: ControlPlane, value: str, expected: str
) -> None:
    fleetflow("admin", "cohorts", "create", "lab")
    assert_one_usage_error(
        fleetflow("admin", "cohorts", "set", "lab", "alpha", "--gpu", value), f"--gpu {value!r}"
    )
    assert expected in fleetflow("admin", "cohorts", "set", "lab", "alpha", "--gpu", value).err
    assert server.api("GET", "/api/v1/admin/cohorts/lab")["members"] == []


def assert_one_usage_error(result: Result, expected: str) -> None:
    assert result.code == 2, result
    assert result.err.startswith("error: "), result.err
    assert "Traceback" not in result.err + result.out
    assert expected in result.err, result.err


@pytest.mark.parametrize("role", [Role.TENANT_ADMIN, Role.VIEWER, Role.DEVELOPER])
def test_only_platform_admins_manage_cohorts(server: ControlPlane, role: Role) -> None:
    server.api("POST", "/api/v1/admin/cohorts", {"name": "lab"})
    token = server.principal("someone", tenant="alpha", role=role)
    with httpx.Client(base_url=server.url, headers=bearer(token)) as client:
        assert client.post("/api/v1/admin/cohorts", json={"name": "mine"}).status_code == 403
        assert client.get("/api/v1/admin/cohorts").status_code == 403
        assert client.get("/api/v1/admin/cohorts/lab").status_code == 403
        put = client.put(
            "/api/v1/admin/cohorts/lab/members/alpha",
            json={"shares": {"H100": {"nominal": 99}}},
        )
        assert put.status_code == 403
        assert client.delete("/api/v1/admin/cohorts/lab").status_code == 403
        patch = client.patch("/api/v1/admin/cohorts/lab", json={"preemption_grace_seconds": 0})
        assert patch.status_code == 403
    assert server.api("GET", "/api/v1/admin/cohorts/lab")["members"] == []


def test_a_tenant_reads_its_own_place_in_its_cohort_only(server: ControlPlane) -> None:
    server.api("POST", "/api/v1/admin/cohorts", {"name": "lab"})
    for tenant, nominal in (("alpha", 4), ("beta", 6)):
        server.api(
            "PUT",
            f"/api/v1/admin/cohorts/lab/members/{tenant}",
            {"shares": {"H100": {"nominal": nominal, "borrowing_limit": 2}}},
        )
    token = server.principal("alice", tenant="alpha", role=Role.VIEWER)
    with httpx.Client(base_url=server.url, headers=bearer(token)) as client:
        answer = client.get("/api/v1/cohort")
        assert answer.status_code == 200, answer.text
        usage = answer.json()
        # another tenant's: refused like any tenant the caller has no role in
        other = client.get("/api/v1/cohort", headers={"X-Fleetflow-Tenant": "beta"})
        assert other.status_code in (403, 404)
    assert usage == {
        "tenant": "alpha",
        "cohort": "lab",
        "gpu_types": {
            "H100": {
                "nominal": 4,
                "borrowing_limit": 2,
                "in_use": 0,
                "borrowed": 0,
                "cohort_nominal": 10,
                "cohort_in_use": 0,
            }
        },
        "preempt_within_tenant": False,
        "preemption_grace_seconds": 30,
        "preempted": 0,
    }
    assert "beta" not in str(usage)
    gamma = server.principal("gina", tenant="gamma", role=Role.VIEWER)
    with httpx.Client(base_url=server.url, headers=bearer(gamma)) as client:
        assert client.get("/api/v1/cohort").json()["cohort"] is None


def test_quota_shows_the_tenants_place_in_its_cohort(
    fleetflow: Invoke, server: ControlPlane
) -> None:
    fleetflow("admin", "cohorts", "create", "lab", "--preemption-grace", "45")
    fleetflow("admin", "cohorts", "set", "lab", "alpha", "--gpu", "H100=4:2")
    shown = fleetflow("quota", "--tenant", "alpha")
    assert shown.code == 0, shown
    assert "limited only by the clusters it may use and its cohort's shares (below)" in shown.out
    lines = words(shown.out)
    assert "cohort lab" in lines
    assert "H100 0 4 0 2 0/4" in lines
    assert "0 attempt(s) of the tenant preempted so far" in shown.out
    assert "after a grace of 45s between SIGTERM and the kill" in " ".join(lines)
    outside = fleetflow("quota", "--tenant", "beta")
    assert "cohort" not in outside.out
    as_json = fleetflow("quota", "--tenant", "alpha", "--json")
    assert "cohort" not in as_json.out  # --json stays the quota API's answer


def test_setting_a_member_of_another_cohort_says_it_moved(
    fleetflow: Invoke, server: ControlPlane
) -> None:
    fleetflow("admin", "cohorts", "create", "lab")
    fleetflow("admin", "cohorts", "create", "other")
    fleetflow("admin", "cohorts", "set", "lab", "alpha", "--gpu", "H100=2")
    moved = fleetflow("admin", "cohorts", "set", "other", "alpha", "--gpu", "H100=3")
    assert moved.out == (
        "tenant alpha in cohort other: H100 3 (borrow unlimited) "
        "(moved from cohort lab: a tenant is in one cohort)\n"
    )
    again = fleetflow("admin", "cohorts", "set", "other", "alpha", "--gpu", "H100=4")
    assert again.out == "tenant alpha in cohort other: H100 4 (borrow unlimited)\n"
    assert server.api("GET", "/api/v1/admin/cohorts/lab")["members"] == []
