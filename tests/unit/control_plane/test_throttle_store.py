"""Throttle stores (control_plane/auth/throttle.py, throttle_db.py): the database store answers
like the memory one, on SQLite and PostgreSQL; its takes are atomic across connections; its
tables stay bounded; and the settings pick it on PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text

from control_plane.auth.throttle import (
    AuthLockout,
    MemoryThrottleStore,
    Taken,
    ThrottleStore,
    TokenBuckets,
)
from control_plane.auth.throttle_db import SqlThrottleStore, open_throttle_store
from control_plane.db.migrate import upgrade_database
from control_plane.db.models import ThrottleBucket
from control_plane.settings import DatabaseSettings, LimitsSettings, Settings

START = 1_800_000_000.0  # seconds since the epoch, as a database store's clock reads


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sql_stores(database_url: str) -> Iterator[Callable[..., SqlThrottleStore]]:
    """Make database stores on one fresh database, as replicas would open theirs."""
    opened: list[SqlThrottleStore] = []

    def make(**kwargs: Any) -> SqlThrottleStore:
        store = SqlThrottleStore.open(database_url, **kwargs)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_and_clock(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[ThrottleStore, FakeClock]]:
    """Each store on an injected clock: in memory, and in a migrated SQLite and PostgreSQL."""
    clock = FakeClock()
    if request.param == "memory":
        yield MemoryThrottleStore(clock=clock), clock
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fleetflow.db'}"
    else:
        url = request.getfixturevalue("postgres_database_factory")()
    upgrade_database(url)
    store = SqlThrottleStore.open(url, clock=clock)
    yield store, clock
    store.close()


def test_buckets_refill_at_their_rate_up_to_the_burst(
    store_and_clock: tuple[ThrottleStore, FakeClock],
) -> None:
    store, clock = store_and_clock
    buckets = TokenBuckets(2.0, 3, scope="t", store=store)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert buckets.take("a") == 0.0
    assert buckets.take("a") == pytest.approx(0.5)
    clock.now += 100  # refills to the burst, not beyond
    assert [buckets.take("a") for _ in range(4)][-1] == pytest.approx(0.5)
    assert buckets.take("b") == 0.0  # another key, its own bucket
    other_scope = TokenBuckets(2.0, 1, scope="u", store=store)
    assert other_scope.take("a") == 0.0  # the same key in another scope: its own bucket too
    assert len(buckets) == 2 and len(other_scope) == 1


def test_a_clock_going_backwards_grants_nothing_extra(
    store_and_clock: tuple[ThrottleStore, FakeClock],
) -> None:
    store, clock = store_and_clock
    buckets = TokenBuckets(1.0, 1, scope="t", store=store)
    assert buckets.take("a") == 0.0
    clock.now -= 50
    assert buckets.take("a") > 0


def test_lockouts_hold_then_expire(store_and_clock: tuple[ThrottleStore, FakeClock]) -> None:
    store, clock = store_and_clock
    lockout = AuthLockout(burst=2, per_second=0.01, lockout_seconds=30, scope="x", store=store)
    assert [lockout.record_failure("10.0.0.1") for _ in range(2)] == [0.0, 0.0]
    assert lockout.locked_for("10.0.0.1") == 0.0
    assert lockout.record_failure("10.0.0.1") == 30
    clock.now += 10
    assert lockout.locked_for("10.0.0.1") == pytest.approx(20)
    assert lockout.locked_for("10.0.0.2") == 0.0
    assert store.locked_for("another-scope", "10.0.0.1") == 0.0
    clock.now += 21
    assert lockout.locked_for("10.0.0.1") == 0.0


def test_a_take_unless_locked_takes_nothing_while_locked(
    store_and_clock: tuple[ThrottleStore, FakeClock],
) -> None:
    store, clock = store_and_clock
    buckets = TokenBuckets(0.001, 2, scope="requests", store=store)
    lockout = AuthLockout(burst=1, per_second=0.001, lockout_seconds=60, scope="auth", store=store)
    assert buckets.take_unless_locked("tenant", lockout, "1.2.3.4") == Taken()
    lockout.record_failure("1.2.3.4")
    assert lockout.record_failure("1.2.3.4") == 60
    for _ in range(5):  # refused for the lockout, and the tenant's bucket is left alone
        taken = buckets.take_unless_locked("tenant", lockout, "1.2.3.4")
        assert taken.wait == 0.0 and taken.locked == pytest.approx(60)
    assert buckets.take_unless_locked("tenant", lockout, "5.6.7.8") == Taken()
    refused = buckets.take_unless_locked("tenant", lockout, "5.6.7.8")
    assert refused.locked == 0.0 and refused.wait == pytest.approx(1000)
    clock.now += 61  # the lockout is over; the bucket has earned back 0.061 tokens
    assert buckets.take_unless_locked("tenant", lockout, "1.2.3.4").wait > 900


def test_a_lockout_turned_off_takes_plainly(
    store_and_clock: tuple[ThrottleStore, FakeClock],
) -> None:
    store, _ = store_and_clock
    buckets = TokenBuckets(0.001, 1, scope="requests", store=store)
    off = AuthLockout(burst=1, per_second=0, lockout_seconds=60, scope="auth", store=store)
    assert [off.record_failure("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take_unless_locked("t", off, "a") == Taken()
    assert buckets.take_unless_locked("t", off, "a").wait > 0


def test_a_limit_of_rate_zero_is_built_as_no_buckets() -> None:
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBuckets(0, 10)


def test_any_key_is_stored_even_one_too_long_or_with_a_nul(
    sql_stores: Callable[..., SqlThrottleStore],
) -> None:
    store = sql_stores(clock=FakeClock())
    lockout = AuthLockout(burst=1, per_second=0.001, lockout_seconds=60, scope="x", store=store)
    for address in ("unix:" + "/run/" * 200, "bad\x00address", "名前"):
        lockout.record_failure(address)
        assert lockout.record_failure(address) == 60
        assert lockout.locked_for(address) == pytest.approx(60)
    assert lockout.locked_for("unix:" + "/run/" * 199) == 0.0


def test_takes_are_atomic_across_connections(
    sql_stores: Callable[..., SqlThrottleStore],
) -> None:
    """Two stores (two replicas' pools), four threads each, 25 takes a thread from one bucket
    of 50 that barely refills: exactly 50 are granted, on the database's clock."""
    stores = [sql_stores(), sql_stores()]
    granted: list[int] = []
    lock = threading.Lock()

    def hammer(store: SqlThrottleStore) -> None:
        mine = sum(store.take("t", "tenant", rate=0.0001, burst=50).wait == 0.0 for _ in range(25))
        with lock:
            granted.append(mine)

    threads = [threading.Thread(target=hammer, args=(s,)) for s in stores for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 50


def test_the_database_clock_is_used_by_default(
    sql_stores: Callable[..., SqlThrottleStore],
) -> None:
    store = sql_stores()
    store.lock("x", "a", 60)
    assert 55 < store.locked_for("x", "a") <= 60
    assert store.take("t", "k", rate=1.0, burst=1) == Taken()
    assert 0 < store.take("t", "k", rate=1.0, burst=1).wait <= 1.0
    with store._engine.connect() as connection:  # seconds since the epoch, not monotonic
        updated = connection.scalar(select(ThrottleBucket.updated_at))
    assert updated is not None and updated > START - 10 * 365 * 86400


def test_refilled_buckets_and_expired_lockouts_are_purged(
    sql_stores: Callable[..., SqlThrottleStore],
) -> None:
    """Every `purge_every` takes of a scope, rows that mean the same as no row go: the tables
    hold the keys active within one refill, however many keys an attacker cycles through."""
    clock = FakeClock()
    store = sql_stores(clock=clock, purge_every=100)
    lockout = AuthLockout(burst=2, per_second=1.0, lockout_seconds=5, scope="x", store=store)
    for i in range(1000):  # an attacker spreading over many addresses, each locked out
        address = f"10.0.{i // 256}.{i % 256}"
        for _ in range(3):
            lockout.record_failure(address)
        clock.now += 0.1  # 100 s in all: buckets refill in 2 s, lockouts end after 5
        assert lockout._failures is not None
        assert len(lockout._failures) <= 100 + 20 + 1
        assert len(lockout) <= 300 + 50 + 1
    # Not purged: a bucket still refilling, a lockout still running.
    assert lockout.locked_for("10.0.3.231") > 0
    assert lockout.record_failure("10.0.3.231") == 5  # its bucket is still empty


def test_purging_forgets_nothing_that_matters(
    sql_stores: Callable[..., SqlThrottleStore],
) -> None:
    clock = FakeClock()
    store = sql_stores(clock=clock)
    store.take("t", "spent", rate=1.0, burst=10)
    for _ in range(10):
        store.take("t", "empty", rate=1.0, burst=10)
    store.lock("x", "over", 1)
    store.lock("x", "running", 100)
    clock.now += 5
    store.purge("t", rate=1.0, burst=10)
    assert store.bucket_count("t") == 1  # "spent" refilled: gone; "empty" has 5 of 10
    assert store.take("t", "empty", rate=1.0, burst=10) == Taken()
    assert store.lock_count("x") == 1 and store.locked_for("x", "running") == 95


def test_the_default_store_follows_the_database() -> None:
    def kind(url: str, store: str | None = None) -> str:
        settings = Settings(
            database=DatabaseSettings(url=url),
            limits=LimitsSettings(store=store),  # type: ignore[arg-type]
        )
        return settings.limits_store

    assert kind("postgresql+psycopg://u@db/fleetflow") == "database"
    assert kind("sqlite:////var/lib/fleetflow.db") == "memory"
    assert kind("postgresql+psycopg://u@db/fleetflow", "memory") == "memory"
    assert kind("sqlite:////var/lib/fleetflow.db", "database") == "database"


def test_the_store_is_chosen_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETFLOW_LIMITS_STORE", "memory")
    monkeypatch.setenv("FLEETFLOW_DATABASE_URL", "postgresql+psycopg://u@db/fleetflow")
    assert Settings().limits_store == "memory"
    monkeypatch.setenv("FLEETFLOW_LIMITS_STORE", "redis")
    with pytest.raises(ValueError, match="memory"):
        Settings()


def test_open_throttle_store_opens_the_named_kind(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'unused.db'}"
    assert isinstance(open_throttle_store("memory", url), MemoryThrottleStore)
    store = open_throttle_store("database", url)
    try:
        assert isinstance(store, SqlThrottleStore)
    finally:
        store.close()


@pytest.mark.postgres
def test_a_restarted_database_costs_no_failed_take(
    postgres_database_factory: Callable[[], str],
) -> None:
    """The store's pool is not pre-pinged (a round trip per request saved): a connection the
    database dropped is replaced when the statement on it fails, and the statement runs again."""
    url = postgres_database_factory()
    upgrade_database(url)
    store = SqlThrottleStore.open(url)
    try:
        assert store.take("t", "k", rate=0.001, burst=3) == Taken()
        with store._engine.connect() as connection:
            pid = connection.scalar(text("SELECT pg_backend_pid()"))
        killer = create_engine(url)
        with killer.connect() as connection:
            assert connection.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        killer.dispose()
        assert store.take("t", "k", rate=0.001, burst=3) == Taken()
        assert store.take("t", "k", rate=0.001, burst=3) == Taken()
        assert store.take("t", "k", rate=0.001, burst=3).wait > 0
    finally:
        store.close()
