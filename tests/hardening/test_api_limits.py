"""Limits and attacks on the REST API: per-tenant rate limits (429 + Retry-After, another
tenant's reads unaffected), brute-force protection of token authentication, body
size, spec size, pagination and name bounds, mass assignment, SQL injection through names and
filters."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from control_plane.api.deps import MAX_OFFSET
from control_plane.api.errors import ApiError
from control_plane.api.limits import RequestGuard
from control_plane.auth.throttle import TokenBuckets
from control_plane.db.models import Execution, Tenant, WorkflowVersion
from fleetflow.ir import WorkflowSpec
from tests.hardening.world import World, build_world, unlimited
from tests.integration.auth import bearer
from tests.integration.test_api import assert_error
from tests.polling import wait_until


def make_world(
    session_factory: sessionmaker[Session], tmp_path: Path, spec: WorkflowSpec, **api: Any
) -> World:
    settings = unlimited().model_copy(update=api)
    return build_world(session_factory, tmp_path, spec, settings)


def count(sessions: sessionmaker[Session], model: type[Any]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


# --- rate limits ----------------------------------------------------------------------------


def test_a_tenant_over_its_rate_gets_429_with_retry_after_and_others_are_unaffected(
    session_factory: sessionmaker[Session], tmp_path: Path, workflow_spec: WorkflowSpec
) -> None:
    world = make_world(
        session_factory, tmp_path, workflow_spec, rate_limit_per_second=0.001, rate_limit_burst=10
    )
    with world.client(world.alpha_dev) as alpha, world.client(world.beta_dev) as beta:
        answers = [alpha.get("/api/v1/executions") for _ in range(30)]
        # The burst (the world's setup spent two of alpha's ten), then 429s: the bucket does
        # not refill during the test (a rate of one request in 1,000 s), whatever the speed.
        statuses = [a.status_code for a in answers]
        assert statuses == [200] * 8 + [429] * 22
        limited = [a for a in answers if a.status_code == 429]
        body = assert_error(limited[0], 429)
        assert "rate limit exceeded for tenant 'alpha'" in body["detail"]
        assert 1 <= int(limited[0].headers["Retry-After"]) <= 1000  # one token at 0.001/s
        # beta has its own bucket: all its reads succeed while alpha is throttled.
        assert [beta.get("/api/v1/executions").status_code for _ in range(10)] == [200] * 10


def test_one_tenants_burst_throttles_only_that_tenant(
    session_factory: sessionmaker[Session], tmp_path: Path, workflow_spec: WorkflowSpec
) -> None:
    """alpha hammers the API from 4 threads (far over its rate) while beta reads: alpha gets
    429s, beta none. The mechanism only: how beta's latency holds up is measured by
    `make bench-api` (bench/api_isolation.py), never asserted here, as it depends on the machine."""
    # No refill during the test: alpha's bucket empties after its burst whatever the speed.
    world = make_world(
        session_factory, tmp_path, workflow_spec, rate_limit_per_second=0.001, rate_limit_burst=40
    )
    with world.client(world.beta_dev) as beta:
        stop = threading.Event()
        statuses: list[int] = []

        def burst() -> None:
            with world.client(world.alpha_dev) as alpha:
                while not stop.is_set():
                    statuses.append(alpha.get("/api/v1/workflows").status_code)

        threads = [threading.Thread(target=burst) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            wait_until(
                lambda: statuses.count(429) >= 20,
                timeout=120,
                interval=0.01,
                message="alpha to be throttled",
                details=lambda: f"{len(statuses)} sent",
            )
            # beta reads while alpha is being throttled: 30 reads, within beta's own burst.
            during = [beta.get("/api/v1/workflows").status_code for _ in range(30)]
            throttled_while_beta_read = statuses.count(429)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
    assert during == [200] * 30
    assert throttled_while_beta_read >= 20
    # alpha's successes are bounded by its burst (its bucket does not refill here).
    assert statuses.count(200) <= 40
    assert set(statuses) <= {200, 429}


def test_token_buckets_refill_and_stay_bounded() -> None:
    now = [0.0]
    buckets = TokenBuckets(2.0, 3, max_entries=100, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)
    now[0] += 0.5
    assert buckets.take("a") == 0.0
    for i in range(10_000):
        buckets.take(f"tenant-{i}")
    assert len(buckets) == 100


# --- brute force ----------------------------------------------------------------------------


def test_repeated_invalid_tokens_lock_out_the_address_only(
    session_factory: sessionmaker[Session], tmp_path: Path, workflow_spec: WorkflowSpec
) -> None:
    world = make_world(
        session_factory,
        tmp_path,
        workflow_spec,
        auth_failures_burst=5,
        auth_failures_per_second=0.001,
        auth_lockout_seconds=120,
    )
    attacker = ("203.0.113.7", 40000)
    with TestClient(world.app, client=attacker) as client:
        for i in range(5):
            answer = client.get("/api/v1/whoami", headers=bearer(f"ffu_guess-{i}"))
            assert answer.status_code == 401
        locked = client.get("/api/v1/whoami", headers=bearer("ffu_guess-5"))
        body = assert_error(locked, 429)
        assert "too many invalid API tokens" in body["detail"]
        assert int(locked.headers["Retry-After"]) == 120
        # Locked out means locked out: a valid token from this address waits too.
        assert client.get("/api/v1/whoami", headers=bearer(world.alpha_dev)).status_code == 429
        # The dashboard's login path is guarded the same way.
        assert client.get("/dashboard", headers=bearer("ffu_guess-6")).status_code == 429
    with TestClient(world.app, client=("198.51.100.2", 40000)) as other:
        assert other.get("/api/v1/whoami", headers=bearer(world.alpha_dev)).status_code == 200
        # Its own few failures do not lock it out.
        assert other.get("/api/v1/whoami", headers=bearer("ffu_typo")).status_code == 401
        assert other.get("/api/v1/whoami", headers=bearer(world.beta_dev)).status_code == 200


def test_the_lockout_ends_and_memory_stays_bounded() -> None:
    now = [0.0]
    guard = RequestGuard(
        rate_per_second=0,
        burst=1,
        auth_failures_burst=2,
        auth_failures_per_second=0.01,
        auth_lockout_seconds=30,
        max_entries=50,
        clock=lambda: now[0],
    )
    guard.record_failure("a")
    guard.record_failure("a")
    guard.check_address("a")  # two tries spent, not yet locked
    with pytest.raises(ApiError) as locking:
        guard.record_failure("a")
    assert locking.value.status_code == 429
    with pytest.raises(ApiError) as locked:
        guard.check_address("a")
    assert locked.value.headers == {"Retry-After": "30"}
    guard.check_address("b")
    now[0] += 31
    guard.check_address("a")  # cooled down
    for i in range(5_000):  # an attacker spreading over many addresses
        for _ in range(3):
            with contextlib.suppress(ApiError):
                guard.record_failure(f"10.0.{i // 256}.{i % 256}")
    lockout = guard._lockout
    assert len(lockout) <= 50 and len(lockout._failures or []) <= 50


# --- bodies, specs, pagination, names -------------------------------------------------------


def test_json_bodies_over_the_limit_are_413_and_uploads_keep_their_own_limit(
    session_factory: sessionmaker[Session], tmp_path: Path, workflow_spec: WorkflowSpec
) -> None:
    world = make_world(session_factory, tmp_path, workflow_spec, max_json_body_bytes=4096)
    before = count(world.sessions, Execution)
    with world.client(world.alpha_dev) as alpha:
        big = {"workflow": world.workflow, "inputs": {"n": 1, "pad": "x" * 5000}}
        body = assert_error(alpha.post("/api/v1/executions", json=big), 413)
        assert body["detail"] == "request body too large: the limit is 4096 bytes"
        # Without Content-Length (chunked), counted as it streams.
        chunks = (b'{"workflow": "' + b"x" * 1024 for _ in range(8))
        streamed = alpha.post(
            "/api/v1/executions", content=chunks, headers={"Content-Type": "application/json"}
        )
        assert "request body too large" in assert_error(streamed, 413)["detail"]
        # Under the limit: accepted.
        ok = alpha.post("/api/v1/executions", json={"workflow": world.workflow, "inputs": {"n": 1}})
        assert ok.status_code == 201, ok.text
        # Bundles are raw uploads with their own (larger) limit.
        from tests.integration.test_api import make_bundle

        data, digest = make_bundle(os.urandom(6000).hex())
        assert (
            len(data) < 4096
            or alpha.put(f"/api/v1/bundles/{digest}", content=data).status_code == 201
        )
    assert count(world.sessions, Execution) == before + 1


def test_a_spec_with_too_many_nodes_is_refused_clearly(
    session_factory: sessionmaker[Session], tmp_path: Path, workflow_spec: WorkflowSpec
) -> None:
    world = make_world(session_factory, tmp_path, workflow_spec)
    world.app.state.settings.api.max_workflow_nodes = 1  # the world registered a 2-node spec
    with world.client(world.alpha_dev) as alpha:
        spec = workflow_spec.model_dump(mode="json")
        spec["name"] = "examples.train.other"
        answer = alpha.post("/api/v1/workflows", json={"spec": spec, "bundle_digest": world.digest})
        body = assert_error(answer, 422, "spec.nodes")
        assert body["detail"] == "workflow spec too large: the workflow has 2 nodes; the limit is 1"


def test_pagination_and_time_windows_are_bounded(
    session_factory: sessionmaker[Session], tmp_path: Path, workflow_spec: WorkflowSpec
) -> None:
    world = make_world(session_factory, tmp_path, workflow_spec)
    with world.client(world.alpha_dev) as alpha:
        for path in ("/api/v1/executions", "/api/v1/workflows"):
            assert alpha.get(path, params={"offset": MAX_OFFSET}).status_code == 200
            # Found by fuzzing: an offset past SQLite's integer range was a 500.
            assert_error(alpha.get(path, params={"offset": 2**63}), 422, "query.offset")
            assert_error(alpha.get(path, params={"limit": 0}), 422, "query.limit")
            assert_error(alpha.get(path, params={"limit": 10_000}), 422, "query.limit")
        # Found by fuzzing: 24 hours before year 1 overflowed (a 500).
        early = alpha.get("/api/v1/usage", params={"until": "0001-01-01T00:00:00Z"})
        assert "too early" in assert_error(early, 422)["detail"]


def test_names_are_validated(
    session_factory: sessionmaker[Session], tmp_path: Path, workflow_spec: WorkflowSpec
) -> None:
    world = make_world(session_factory, tmp_path, workflow_spec)
    with world.client(world.admin) as root:
        for name in ("", "UPPER", "a" * 64, "../etc", "x y", "名前", "a;drop"):
            answer = root.post("/api/v1/admin/tenants", json={"name": name})
            assert_error(answer, 422, "name")
        for user in ("", "a/b", "x" * 129, "bad name"):
            answer = root.post(
                "/api/v1/admin/tenants/alpha/users", json={"name": user, "role": "viewer"}
            )
            assert_error(answer, 422, "name")
        assert_error(root.post("/api/v1/admin/clusters", json={"name": "Bad Name!"}), 422)


# --- mass assignment ------------------------------------------------------------------------

INJECTED = {"tenant_id": "beta", "status": "SUCCEEDED", "owner_id": "p-1", "id": "ex-mine"}


def test_extra_fields_in_every_json_body_are_422_and_change_nothing(
    session_factory: sessionmaker[Session], tmp_path: Path, workflow_spec: WorkflowSpec
) -> None:
    world = make_world(session_factory, tmp_path, workflow_spec)
    spec = world.app.openapi()
    operations = [
        (method.upper(), path)
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
        if "application/json" in operation.get("requestBody", {}).get("content", {})
    ]
    assert len(operations) >= 10, operations
    fill = {
        "{tenant}": "alpha",
        "{name}": "alpha-dev",
        "{cluster}": "*",
    }
    before = {m: count(world.sessions, m) for m in (Execution, Tenant, WorkflowVersion)}
    with world.client(world.admin) as root:
        for method, path in operations:
            url = path
            for placeholder, value in fill.items():
                url = url.replace(placeholder, value)
            answer = root.request(method, url, json=INJECTED)
            body = assert_error(answer, 422)
            named = {e["field"] for e in body["errors"] if "Extra inputs" in e["message"]}
            assert set(INJECTED) <= named, (method, path, body)
        # A valid execution request plus the extras: still a 422, nothing created.
        valid = {"workflow": world.workflow, "inputs": {"n": 1}}
        for field, value in INJECTED.items():
            answer = root.post(
                "/api/v1/executions",
                json={**valid, field: value},
                headers={"X-Fleetflow-Tenant": "alpha"},
            )
            assert_error(answer, 422, field)
    assert {m: count(world.sessions, m) for m in before} == before


# --- SQL injection --------------------------------------------------------------------------

INJECTIONS = [
    "' OR '1'='1",
    "'; DROP TABLE executions; --",
    '" OR ""="',
    "1; DELETE FROM tenants",
    "x' UNION SELECT token_hash FROM api_tokens --",
    "%' --",
    "\\' OR 1=1 --",
]


def test_sql_injection_through_names_and_filters_is_harmless(
    session_factory: sessionmaker[Session], tmp_path: Path, workflow_spec: WorkflowSpec
) -> None:
    world = make_world(session_factory, tmp_path, workflow_spec)
    with world.client(world.alpha_dev) as alpha:
        created = alpha.post(
            "/api/v1/executions", json={"workflow": world.workflow, "inputs": {"n": 1}}
        )
        assert created.status_code == 201
        for attack in INJECTIONS:
            assert alpha.get("/api/v1/workflows", params={"name": attack}).json() == []
            assert_error(alpha.get("/api/v1/executions", params={"status": attack}), 422)
            assert alpha.get(f"/api/v1/executions/{attack}").status_code == 404
            assert alpha.get(f"/api/v1/workflows/{attack}/versions/{attack}").status_code == 404
            assert alpha.get(f"/api/v1/clusters/{attack}").status_code == 404
            refused = alpha.get("/api/v1/executions", headers={"X-Fleetflow-Tenant": attack})
            assert refused.status_code == 404
            unknown = alpha.post("/api/v1/executions", json={"workflow": attack, "inputs": {}})
            assert_error(unknown, 404)
            assert "api_tokens" not in unknown.text or attack in unknown.text
        # Everything is still there and still isolated.
        assert [e["id"] for e in alpha.get("/api/v1/executions").json()] == [created.json()["id"]]
        assert [w["name"] for w in alpha.get("/api/v1/workflows").json()] == [world.workflow]
    with world.client(world.beta_dev) as beta:
        assert beta.get("/api/v1/executions").json() == []
    with world.client(world.admin) as root:
        for attack in INJECTIONS:
            assert_error(root.post("/api/v1/admin/tenants", json={"name": attack}), 422, "name")
            assert root.get(f"/api/v1/admin/tenants/{attack}").status_code in (404, 422)
        names = {t["name"] for t in root.get("/api/v1/admin/tenants").json()["tenants"]}
        assert {"alpha", "beta", "default"} <= names


def test_nul_bytes_in_names_and_filters_are_not_server_errors(
    session_factory: sessionmaker[Session], tmp_path: Path, workflow_spec: WorkflowSpec
) -> None:
    """PostgreSQL refuses NUL characters in text; SQLite stores them. Either way: no 5xx."""
    world = make_world(session_factory, tmp_path, workflow_spec)
    with TestClient(world.app, raise_server_exceptions=False, headers=bearer(world.admin)) as root:
        answers = [
            root.get("/api/v1/workflows", params={"name": "a\x00b"}),
            root.get("/api/v1/executions/ex-%00"),
            root.get("/api/v1/workflows/a%00/versions/v%00"),
            root.get("/api/v1/clusters/c%00"),
            root.get("/api/v1/executions", headers={"X-Fleetflow-Tenant": "alpha"}),
            root.get("/api/v1/admin/tenants/t%00"),
            root.get("/api/v1/admin/tenants/alpha/users/u%00/tokens"),
            root.post("/api/v1/executions", json={"workflow": "w\x00", "inputs": {}}),
            root.post("/api/v1/admin/tokens/tok-%00/revoke"),
        ]
    for answer in answers:
        assert answer.status_code < 500, (answer.request.url, answer.text)
        if answer.status_code >= 400:
            assert_error(answer, answer.status_code)
