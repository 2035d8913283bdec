"""Rate limits and brute-force lockouts shared by control-plane replicas (issue: "Rate limits
and the brute-force lockout live in each replica's memory").

Two replicas are two apps (or two agent services, or two `RequestGuard`s), each with its own
`SqlThrottleStore` (its own pool) on one database, as two processes would have: a tenant gets
its burst once across them, an address locked out through one is locked out on the other, and
an attacker who spreads its guesses over the replicas gets no more of them than against one.
With `FLEETFLOW_LIMITS_STORE=memory` the same attack gets twice the guesses: the control that
shows these tests see the difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from control_plane.agent_api.interceptors import InternalErrorInterceptor
from control_plane.agent_api.limits import server_options
from control_plane.agent_api.service import AgentService, AttemptsReady
from control_plane.api.app import create_app
from control_plane.api.errors import ApiError
from control_plane.api.limits import RequestGuard
from control_plane.auth.throttle import ThrottleStore
from control_plane.auth.throttle_db import SqlThrottleStore, open_throttle_store
from control_plane.db.repositories import clusters as clusters_repo
from control_plane.db.session import transaction
from control_plane.orchestration.workflows import AttemptFinished
from control_plane.services.finish_notifier import FinishNotifier
from control_plane.settings import ApiSettings, DatabaseSettings, GrpcSettings, Settings
from fleetflow.agent.v1 import agent_pb2 as pb
from fleetflow.agent.v1 import agent_pb2_grpc
from fleetflow.ir import WorkflowSpec
from fleetflow.storage import LocalBlobStore
from tests.hardening.world import World, build_world, unlimited
from tests.integration.auth import bearer
from tests.integration.test_api import FakeLauncher, assert_error

ATTACKER = ("203.0.113.7", 40000)
BYSTANDER = ("198.51.100.2", 40000)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def stores(database_url: str) -> Iterator[Callable[..., SqlThrottleStore]]:
    """Open one replica's store on the test's database (SQLite and PostgreSQL)."""
    opened: list[SqlThrottleStore] = []

    def open_store(**kwargs: Any) -> SqlThrottleStore:
        store = SqlThrottleStore.open(database_url, **kwargs)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()


def guard(store: ThrottleStore, **limits: float) -> RequestGuard:
    settings: dict[str, float] = {
        "rate_per_second": 0.001,
        "burst": 10,
        "auth_failures_burst": 5,
        "auth_failures_per_second": 0.001,
        "auth_lockout_seconds": 120,
    }
    return RequestGuard(**{**settings, **limits}, store=store)  # type: ignore[arg-type]


def refused(call: Callable[..., None], *args: str) -> ApiError | None:
    """The error `call(*args)` raises, or None."""
    try:
        call(*args)
    except ApiError as error:
        return error
    return None


# --- RequestGuard over a shared store -------------------------------------------------------


def test_two_guards_spend_one_burst(stores: Callable[..., SqlThrottleStore]) -> None:
    clock = FakeClock()
    pair = [guard(stores(clock=clock)), guard(stores(clock=clock))]
    answers = [refused(r.charge, "alpha") for r in itertools.islice(itertools.cycle(pair), 16)]
    assert [a is None for a in answers] == [True] * 10 + [False] * 6
    error = answers[-1]
    assert error is not None and error.status_code == 429
    assert error.headers == {"Retry-After": "1000"}  # one token at 0.001/s, on either replica
    # admit() (the path of every request with a known token) draws on the same bucket.
    assert refused(pair[1].admit, "10.0.0.1", "alpha") is not None
    assert refused(pair[0].admit, "10.0.0.1", "beta") is None
    clock.now += 1000  # one token earned back, taken by whichever replica asks first
    assert refused(pair[1].charge, "alpha") is None
    assert refused(pair[0].charge, "alpha") is not None


def test_an_address_locked_out_through_one_guard_is_locked_out_on_the_other(
    stores: Callable[..., SqlThrottleStore],
) -> None:
    clock = FakeClock()
    one, other = guard(stores(clock=clock)), guard(stores(clock=clock))
    for replica in (one, other, one, other, one):  # five refused tokens, spread
        assert refused(replica.record_failure, "203.0.113.7") is None
    locking = refused(other.record_failure, "203.0.113.7")
    assert locking is not None and locking.headers == {"Retry-After": "120"}
    for replica in (one, other):
        locked = refused(replica.check_address, "203.0.113.7")
        assert locked is not None and "too many invalid API tokens" in locked.detail
        # A known tenant's token from there is refused too, and costs the tenant nothing.
        assert refused(replica.admit, "203.0.113.7", "alpha") is not None
        assert refused(replica.check_address, "198.51.100.2") is None
    assert [refused(one.charge, "alpha") for _ in range(10)] == [None] * 10
    clock.now += 121
    assert refused(one.check_address, "203.0.113.7") is None
    assert refused(other.check_address, "203.0.113.7") is None


# --- two REST replicas ----------------------------------------------------------------------


def replicas(
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    spec: WorkflowSpec,
    monkeypatch: pytest.MonkeyPatch,
    store: str,
    **api: object,
) -> tuple[World, FastAPI]:
    """The hardening world's app and a second app on the same database, both with limits
    kept in `store` (chosen as an operator would, by FLEETFLOW_LIMITS_STORE)."""
    monkeypatch.setenv("FLEETFLOW_LIMITS_STORE", store)
    settings = unlimited().model_copy(update=api)
    world = build_world(session_factory, tmp_path, spec, settings)
    second = create_app(
        Settings(database=DatabaseSettings(url="sqlite://"), api=settings),
        session_factory=session_factory,
        launcher=FakeLauncher(),
        blob_store=world.blobs,
    )
    return world, second


def test_a_tenant_gets_its_burst_once_across_replicas(
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    workflow_spec: WorkflowSpec,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world, second = replicas(
        session_factory,
        tmp_path,
        workflow_spec,
        monkeypatch,
        "database",
        rate_limit_per_second=0.001,
        rate_limit_burst=10,
    )
    headers = bearer(world.alpha_dev)
    with (
        TestClient(world.app, headers=headers) as one,
        TestClient(second, headers=headers) as two,
        TestClient(second, headers=bearer(world.beta_dev)) as beta,
    ):
        statuses = [
            client.get("/api/v1/executions").status_code
            for client in itertools.islice(itertools.cycle((one, two)), 20)
        ]
        # The world's setup spent two of alpha's ten, through the first replica.
        assert statuses == [200] * 8 + [429] * 12
        assert_error(two.get("/api/v1/workflows"), 429)
        assert [beta.get("/api/v1/executions").status_code for _ in range(5)] == [200] * 5


@pytest.mark.parametrize(("store", "guesses"), [("database", 5), ("memory", 10)])
def test_an_attacker_spreading_guesses_over_replicas_gets_no_more_of_them(
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    workflow_spec: WorkflowSpec,
    monkeypatch: pytest.MonkeyPatch,
    store: str,
    guesses: int,
) -> None:
    """Five refused tokens an address, whichever replica hears them: the sixth guess, on any
    replica, is a 429, and so is a valid token from that address. In memory, each replica
    counts its own: twice the guesses (the control)."""
    world, second = replicas(
        session_factory,
        tmp_path,
        workflow_spec,
        monkeypatch,
        store,
        auth_failures_burst=5,
        auth_failures_per_second=0.001,
        auth_lockout_seconds=120,
    )
    with (
        TestClient(world.app, client=ATTACKER) as one,
        TestClient(second, client=ATTACKER) as two,
    ):
        statuses = [
            client.get("/api/v1/whoami", headers=bearer(f"ffu_guess-{i}")).status_code
            for i, client in enumerate(itertools.islice(itertools.cycle((one, two)), 16))
        ]
        assert statuses == [401] * guesses + [429] * (16 - guesses)
        for client in (one, two):
            locked = client.get("/api/v1/whoami", headers=bearer(world.alpha_dev))
            assert "too many invalid API tokens" in assert_error(locked, 429)["detail"]
            assert client.get("/dashboard", headers=bearer("ffu_guess-x")).status_code == 429
    for app in (world.app, second):  # another address is not affected
        with TestClient(app, client=BYSTANDER) as bystander:
            whoami = bystander.get("/api/v1/whoami", headers=bearer(world.alpha_dev))
            assert whoami.status_code == 200


# --- two agent services ---------------------------------------------------------------------

AGENT_TOKEN = "ffa_shared-limits-test-token"


@contextlib.asynccontextmanager
async def agent_service(
    sessions: sessionmaker[Session], tmp_path: Path, store: ThrottleStore
) -> AsyncIterator[agent_pb2_grpc.AgentServiceStub]:
    """One replica's agent gRPC service, composed as control_plane/server.py does it."""

    async def record(execution: str, finished: AttemptFinished) -> None:
        return None

    ready = AttemptsReady()
    ready.bind(asyncio.get_running_loop())
    server = grpc.aio.server(interceptors=[InternalErrorInterceptor()], options=server_options())
    agent_pb2_grpc.add_AgentServiceServicer_to_server(
        AgentService(
            sessions,
            LocalBlobStore(tmp_path / "blobs"),
            FinishNotifier(sessions, record),
            attempts_ready=ready,
            max_lease_wait_seconds=1,
            heartbeat_interval_seconds=7,
            lockout=GrpcSettings(
                auth_failures_burst=3, auth_failures_per_second=0.001, auth_lockout_seconds=600
            ).auth_lockout(store),
        ),
        server,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield agent_pb2_grpc.AgentServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(grace=None)


async def test_the_agent_lockout_holds_across_replicas(
    session_factory: sessionmaker[Session],
    database_url: str,
    tmp_path: Path,
) -> None:
    """An address hunting agent tokens over two replicas is cut off after the allowance of
    one (three refused tokens), then refused by both, valid token or not; the REST lockout of
    the same store is a separate scope."""
    with transaction(session_factory) as session:
        clusters_repo.ensure_cluster(session, "alpha", AGENT_TOKEN, {})
    capacity = pb.Capacity(cpu_allocatable=8, memory_bytes_allocatable=2**34)
    register = pb.RegisterRequest(agent_version="shared-limits", capacity=capacity)
    one_store = open_throttle_store("database", database_url)
    other_store = open_throttle_store("database", database_url)
    try:
        async with (
            agent_service(session_factory, tmp_path, one_store) as one,
            agent_service(session_factory, tmp_path, other_store) as other,
        ):
            for stub in (one, other):
                await stub.Register(register, metadata=auth(AGENT_TOKEN), timeout=10)
            codes = []
            for guess, stub in enumerate(itertools.islice(itertools.cycle((one, other)), 6)):
                with pytest.raises(grpc.aio.AioRpcError) as refusal:
                    await stub.Heartbeat(
                        pb.HeartbeatRequest(), metadata=auth(f"ffa_guess-{guess}"), timeout=10
                    )
                codes.append(refusal.value.code())
            unauthenticated = grpc.StatusCode.UNAUTHENTICATED
            exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED
            assert codes == [unauthenticated] * 3 + [exhausted] * 3
            for stub in (one, other):
                with pytest.raises(grpc.aio.AioRpcError) as locked:
                    await stub.Register(register, metadata=auth(AGENT_TOKEN), timeout=10)
                assert locked.value.code() is exhausted
                assert "suspended for 600 s" in (locked.value.details() or "")
        rest = guard(other_store, auth_failures_burst=1)
        assert refused(rest.check_address, "127.0.0.1") is None
    finally:
        one_store.close()
        other_store.close()


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def test_unlimited_settings_keep_working_on_the_database(
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    workflow_spec: WorkflowSpec,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Limits turned off (a rate of 0) need no buckets, on a database store too."""
    monkeypatch.setenv("FLEETFLOW_LIMITS_STORE", "database")
    world = build_world(
        session_factory,
        tmp_path,
        workflow_spec,
        ApiSettings(rate_limit_per_second=0, auth_failures_per_second=0),
    )
    with world.client(world.alpha_dev) as alpha:
        assert all(alpha.get("/api/v1/executions").status_code == 200 for _ in range(20))
    with TestClient(world.app, client=ATTACKER) as attacker:
        assert all(
            attacker.get("/api/v1/whoami", headers=bearer(f"ffu_{i}")).status_code == 401
            for i in range(20)
        )
