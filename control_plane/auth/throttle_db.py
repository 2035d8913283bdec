"""The throttle store in the control plane's database, shared by every replica on it.

With limits in each replica's memory, N replicas give a tenant N times its rate and an attacker
N times the password guesses. Here every replica spends from the same rows:

- A take is one `INSERT … ON CONFLICT DO UPDATE … RETURNING` (SQLite 3.35+ and PostgreSQL):
  the refill is computed from the stored (tokens, updated_at) under the row's lock, so two
  replicas taking at once get two tokens or a refusal, never one token twice. The REST API's
  per-request check (is the address locked out? then charge the tenant) is that same one
  statement, with the lockout as a condition on the insert and the update.
- A lockout is a row with an expiry (`locked_until`).
- Time is the database's clock (`now()`; SQLite's `julianday('now')`), read in the statement
  that uses it, so replicas with skewed clocks agree; tests may inject a clock instead.
- Each statement runs in autocommit on a connection from a pool of the store's own: a take
  stands whatever becomes of the request's transaction (a 401 rolls back, the refused token
  still counts), and a request that holds its session's connection while recording a refused
  token never waits on a pool that such requests drained.
- Table growth is bounded by purging, every `purge_every` takes of a scope, the buckets that
  have refilled (the same as no row) and the lockouts that have expired: a scope holds the keys
  active within one refill (burst / rate seconds) plus at most `purge_every` per replica.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any
from typing import cast as typed

from sqlalchemy import (
    ColumnElement,
    Engine,
    Float,
    String,
    Table,
    bindparam,
    case,
    cast,
    delete,
    exists,
    extract,
    func,
    select,
    true,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from control_plane.auth.throttle import (
    Clock,
    LimitsStore,
    LockRef,
    MemoryThrottleStore,
    Taken,
    ThrottleStore,
)
from control_plane.db.models import ThrottleBucket, ThrottleLockout
from control_plane.db.session import is_transient, make_engine

log = logging.getLogger(__name__)

_buckets = typed(Table, ThrottleBucket.__table__)
_lockouts = typed(Table, ThrottleLockout.__table__)
_MAX_KEY = 255  # the key columns' length
_UNIX_EPOCH_JULIAN_DAY = 2440587.5


def _stored_key(key: str) -> str:
    """`key` as stored: a key too long for the column (or holding a NUL, which PostgreSQL
    cannot store) by its SHA-256, so no caller can make a statement fail."""
    if len(key) <= _MAX_KEY and "\x00" not in key:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class SqlThrottleStore:
    """A `ThrottleStore` in the tables `throttle_buckets` and `throttle_lockouts` (see the
    module docstring). `clock`: seconds since the epoch, for tests; default the database's."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock | None = None,
        purge_every: int = 1000,
        owns_engine: bool = False,
    ) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._owned = engine if owns_engine else None
        self._dialect = engine.dialect.name
        if self._dialect not in ("postgresql", "sqlite"):
            raise ValueError(f"unsupported database backend {self._dialect!r}")
        self._clock = clock
        self._purge_every = purge_every
        self._takes: dict[str, int] = {}
        self._lock = threading.Lock()
        self._build_statements()

    @classmethod
    def open(cls, database_url: str, **kwargs: Any) -> SqlThrottleStore:
        """A store with its own engine (closed by `close`); no pre-ping: every statement is
        retried on a dropped connection instead, which saves a round trip per request."""
        return cls(make_engine(database_url, pre_ping=False), owns_engine=True, **kwargs)

    def close(self) -> None:
        if self._owned is not None:
            self._owned.dispose()

    # ThrottleStore -----------------------------------------------------------------------

    def take(
        self, scope: str, key: str, *, rate: float, burst: float, lockout: LockRef | None = None
    ) -> Taken:
        self._maybe_purge(scope, rate, burst)
        params = {"p_scope": scope, "p_key": _stored_key(key), "p_rate": rate, "p_burst": burst}
        if lockout is not None:
            params |= {
                "p_lock_scope": lockout[0],
                "p_lock_key": _stored_key(lockout[1]),
            }
        statement = self._take_locked if lockout is not None else self._take
        for _ in range(2):
            row = self._execute(statement, params)
            if row is not None:
                tokens, granted = float(row[0]), bool(row[1])
                return Taken() if granted else Taken(wait=(1 - tokens) / rate)
            # No row: the lockout held, and nothing was taken. How long it holds is only
            # needed now, on the way to a refusal; if it expired meanwhile, take again.
            assert lockout is not None
            locked = self.locked_for(*lockout)
            if locked > 0:
                return Taken(locked=locked)
        return Taken(locked=1.0)  # flapping at the lockout's very end: refuse briefly

    def lock(self, scope: str, key: str, seconds: float) -> None:
        params = {"p_scope": scope, "p_key": _stored_key(key), "p_seconds": seconds}
        self._execute(self._lock_statement, params, fetch=False)

    def locked_for(self, scope: str, key: str) -> float:
        row = self._execute(self._locked_for, {"p_scope": scope, "p_key": _stored_key(key)})
        return 0.0 if row is None else max(0.0, float(row[0]))

    def bucket_count(self, scope: str) -> int:
        row = self._execute(select(func.count()).where(_buckets.c.scope == scope), {})
        return int(row[0]) if row else 0

    def lock_count(self, scope: str) -> int:
        row = self._execute(select(func.count()).where(_lockouts.c.scope == scope), {})
        return int(row[0]) if row else 0

    def purge(self, scope: str, *, rate: float, burst: float) -> None:
        """Delete the buckets of `scope` that have refilled (`rate`, `burst`: the scope's) and
        every expired lockout: rows that mean the same as no row."""
        now = self._now()
        refilled = _buckets.c.tokens + (now - _buckets.c.updated_at) * rate >= burst
        params = self._clock_params()
        with self._engine.connect() as connection:
            connection.execute(delete(_buckets).where(_buckets.c.scope == scope, refilled), params)
            connection.execute(delete(_lockouts).where(_lockouts.c.locked_until <= now), params)

    # Statements, built once: a request pays for running one, not for building it ----------

    def _now(self) -> ColumnElement[float]:
        """The store's clock as an SQL expression: the database's clock (stable within one
        statement), or the injected clock's reading (`_clock_params`)."""
        if self._clock is not None:
            return bindparam("p_now", type_=Float)
        if self._dialect == "postgresql":
            return cast(extract("epoch", func.now()), Float)
        return (func.julianday("now") - _UNIX_EPOCH_JULIAN_DAY) * 86400.0

    def _clock_params(self) -> dict[str, float]:
        return {} if self._clock is None else {"p_now": self._clock()}

    def _insert(self, table: Any) -> Any:
        module = postgresql if self._dialect == "postgresql" else sqlite
        return module.insert(table)

    def _build_statements(self) -> None:
        now = self._now()
        self._take = self._take_statement(now, locked=False)
        self._take_locked = self._take_statement(now, locked=True)
        until = now + bindparam("p_seconds", type_=Float)
        self._lock_statement = (
            self._insert(_lockouts)
            .values(scope=bindparam("p_scope"), key=bindparam("p_key"), locked_until=until)
            .on_conflict_do_update(
                index_elements=[_lockouts.c.scope, _lockouts.c.key],
                set_={"locked_until": until},
            )
        )
        self._locked_for = select(_lockouts.c.locked_until - now).where(
            _lockouts.c.scope == bindparam("p_scope"),
            _lockouts.c.key == bindparam("p_key"),
            _lockouts.c.locked_until > now,
        )

    def _take_statement(self, now: ColumnElement[float], *, locked: bool) -> Any:
        """The take: parameters p_scope, p_key, p_rate, p_burst, and with `locked` the
        lockout p_lock_scope, p_lock_key that makes it take nothing."""
        rate = bindparam("p_rate", type_=Float)
        burst = bindparam("p_burst", type_=Float)
        # LEAST/GREATEST of two values: PostgreSQL's names; SQLite's min/max do the same.
        least, greatest = (
            (func.least, func.greatest) if self._dialect == "postgresql" else (func.min, func.max)
        )
        elapsed = greatest(now - _buckets.c.updated_at, 0.0)  # a clock set back refills nothing
        refilled = least(burst, _buckets.c.tokens + elapsed * rate)
        granted = refilled >= 1.0
        new_row = {
            "scope": bindparam("p_scope", type_=String),
            "key": bindparam("p_key", type_=String),
            "tokens": burst - 1.0,  # a new bucket is full; burst >= 1
            "updated_at": now,
            "granted": true(),
        }
        insert = self._insert(_buckets)
        not_locked: ColumnElement[bool] | None = None
        if not locked:
            insert = insert.values(new_row)
        else:
            not_locked = ~exists().where(
                _lockouts.c.scope == bindparam("p_lock_scope", type_=String),
                _lockouts.c.key == bindparam("p_lock_key", type_=String),
                _lockouts.c.locked_until > now,
            )
            # INSERT … SELECT … WHERE: SQLite needs the WHERE to parse the ON CONFLICT after it.
            insert = insert.from_select(list(new_row), select(*new_row.values()).where(not_locked))
        return insert.on_conflict_do_update(
            index_elements=[_buckets.c.scope, _buckets.c.key],
            set_={
                "tokens": refilled - case((granted, 1.0), else_=0.0),
                "updated_at": now,
                "granted": granted,
            },
            where=not_locked,
        ).returning(_buckets.c.tokens, _buckets.c.granted)

    def _execute(self, statement: Any, params: dict[str, Any], *, fetch: bool = True) -> Any:
        """Run one statement in autocommit; once more, at once, on a dropped connection (the
        pool is not pre-pinged) or a busy SQLite. Only once and without a backoff: the agent
        service calls the lockout on its event loop, which must not sleep. A take run again
        after the server ran it costs its key one token more, never less."""
        params = params | self._clock_params()
        for retried in (False, True):
            try:
                with self._engine.connect() as connection:
                    result = connection.execute(statement, params)
                    return result.first() if fetch else None
            except DBAPIError as exc:
                if retried or not is_transient(exc):
                    raise
        raise AssertionError("unreachable")

    def _maybe_purge(self, scope: str, rate: float, burst: float) -> None:
        with self._lock:
            count = self._takes.get(scope, 0) + 1
            self._takes[scope] = count % self._purge_every
        if count < self._purge_every:
            return
        try:
            self.purge(scope, rate=rate, burst=burst)
        except DBAPIError as exc:  # two replicas purging at once, say: the next purge will do
            log.warning("could not purge the throttle tables: %s", exc)


def open_throttle_store(kind: LimitsStore, database_url: str) -> ThrottleStore:
    """The store `FLEETFLOW_LIMITS_STORE` (resolved: `Settings.limits_store`) names."""
    if kind == "database":
        return SqlThrottleStore.open(database_url)
    return MemoryThrottleStore()
