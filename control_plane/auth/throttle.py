"""Token buckets and the brute-force lockout, shared by the REST API and the agent gRPC service.

Both refuse a caller's address once it has sent too many invalid tokens: every refused token
costs the address one token of its bucket, and when the bucket runs dry the address may not
authenticate at all for `lockout_seconds`, valid token or not. Other addresses are unaffected.
Each transport words the refusal its own way (429 with Retry-After; RESOURCE_EXHAUSTED).

The state lives in a `ThrottleStore`, chosen by `FLEETFLOW_LIMITS_STORE`:

- `MemoryThrottleStore`, this process's memory: limits hold per process, so with N replicas a
  tenant gets N times its rate and an attacker N times the tries. Memory is bounded: each table
  keeps at most `max_entries` keys per scope and forgets the least recently used beyond that.
  The embedded SQLite setup (one process) uses it.
- `control_plane.auth.throttle_db.SqlThrottleStore`, tables in the control plane's database:
  every replica spends from the same buckets and sees the same lockouts.

A scope (`api.requests`, `api.auth`, `grpc.auth`) keeps one user's keys apart from another's
in a store they share.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

Clock = Callable[[], float]
LimitsStore = Literal["memory", "database"]
LockRef = tuple[str, str]
"""A lockout, by (scope, key)."""


@dataclass(frozen=True)
class Taken:
    """What a take got: `wait` 0.0 means a token was granted, else the seconds until one is
    available; `locked` > 0 means the take's `lockout` holds that many seconds more, and
    nothing was taken."""

    wait: float = 0.0
    locked: float = 0.0


class ThrottleStore(Protocol):
    """Where token buckets and lockouts live. Each method is atomic on its own (two replicas
    taking from one bucket at once get two tokens or a refusal, never one token twice), and
    the store keeps its own clock, so that every user of one store measures time alike."""

    def take(
        self, scope: str, key: str, *, rate: float, burst: float, lockout: LockRef | None = None
    ) -> Taken:
        """Take a token from the bucket (`rate` tokens a second up to `burst`, full when new),
        unless the lockout `lockout` holds: both in one step, as the REST API does on every
        request."""
        ...

    def lock(self, scope: str, key: str, seconds: float) -> None:
        """Lock `key` out for `seconds` from now (replacing an earlier lockout)."""
        ...

    def locked_for(self, scope: str, key: str) -> float:
        """Seconds `key` stays locked out; 0.0 when it is not."""
        ...

    def bucket_count(self, scope: str) -> int:
        """Buckets held in `scope` (for tests and diagnostics)."""
        ...

    def lock_count(self, scope: str) -> int:
        """Lockouts held in `scope`, expired ones not yet purged included."""
        ...

    def close(self) -> None:
        """Release what the store holds (a database store: its connections)."""
        ...


@dataclass
class _Bucket:
    tokens: float
    updated: float


class MemoryThrottleStore:
    """A `ThrottleStore` in this process's memory: thread-safe, bounded to `max_entries` keys
    per scope and table (least recently used forgotten). `clock` is monotonic by default: its
    times never leave the process."""

    def __init__(self, *, max_entries: int = 10_000, clock: Clock = time.monotonic) -> None:
        self._max_entries = max_entries
        self._clock = clock
        self._buckets: dict[str, OrderedDict[str, _Bucket]] = {}
        self._locks: dict[str, OrderedDict[str, float]] = {}  # key -> locked until
        self._lock = threading.Lock()

    def take(
        self, scope: str, key: str, *, rate: float, burst: float, lockout: LockRef | None = None
    ) -> Taken:
        now = self._clock()
        with self._lock:
            if lockout is not None:
                locked = self._locked_for(*lockout, now)
                if locked > 0:
                    return Taken(locked=locked)
            buckets = self._buckets.setdefault(scope, OrderedDict())
            bucket = buckets.pop(key, None) or _Bucket(burst, now)
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            buckets[key] = bucket
            while len(buckets) > self._max_entries:
                buckets.popitem(last=False)
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return Taken()
            return Taken(wait=(1 - bucket.tokens) / rate if rate > 0 else math.inf)

    def lock(self, scope: str, key: str, seconds: float) -> None:
        with self._lock:
            locks = self._locks.setdefault(scope, OrderedDict())
            locks.pop(key, None)
            locks[key] = self._clock() + seconds
            while len(locks) > self._max_entries:
                locks.popitem(last=False)

    def locked_for(self, scope: str, key: str) -> float:
        now = self._clock()
        with self._lock:
            return self._locked_for(scope, key, now)

    def _locked_for(self, scope: str, key: str, now: float) -> float:
        locks = self._locks.get(scope)
        until = locks.get(key) if locks else None
        if until is None:
            return 0.0
        if until <= now:
            assert locks is not None
            del locks[key]
            return 0.0
        return until - now

    def bucket_count(self, scope: str) -> int:
        with self._lock:
            return len(self._buckets.get(scope, ()))

    def lock_count(self, scope: str) -> int:
        with self._lock:
            return len(self._locks.get(scope, ()))

    def close(self) -> None:
        pass


class TokenBuckets:
    """Token buckets by key, `rate` tokens a second up to `burst`, in `store` under `scope`
    (default: a memory store of its own, bounded to `max_entries`, on `clock`)."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        scope: str = "buckets",
        store: ThrottleStore | None = None,
        max_entries: int = 10_000,
        clock: Clock = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            # A shared store records when a bucket is full again, which a rate of 0 never is:
            # callers turn a limit off by building no buckets at all.
            raise ValueError(f"token buckets need a rate > 0 and a burst >= 1: {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self.scope = scope
        self._store = store or MemoryThrottleStore(max_entries=max_entries, clock=clock)

    def take(self, key: str) -> float:
        """Take a token for `key`: 0.0 when granted, else seconds until one is available."""
        return self._store.take(self.scope, key, rate=self.rate, burst=self.burst).wait

    def take_unless_locked(self, key: str, lockout: AuthLockout, address: str) -> Taken:
        """Take a token for `key` unless `lockout` holds `address` (then nothing is taken),
        in one store call: on a shared store, one statement."""
        if not lockout.enabled:
            return Taken(wait=self.take(key))
        return self._store.take(
            self.scope,
            key,
            rate=self.rate,
            burst=self.burst,
            lockout=(lockout.scope, address),
        )

    def __len__(self) -> int:
        return self._store.bucket_count(self.scope)


class AuthLockout:
    """Locks out an address after `burst` refused tokens (earned back at `per_second`) for
    `lockout_seconds`. A rate of 0 turns it off. Its buckets and lockouts live in `store`
    under `scope` (default: a memory store of its own, bounded to `max_entries`, on `clock`)."""

    def __init__(
        self,
        *,
        burst: int,
        per_second: float,
        lockout_seconds: float,
        scope: str = "auth",
        store: ThrottleStore | None = None,
        max_entries: int = 10_000,
        clock: Clock = time.monotonic,
    ) -> None:
        self.scope = scope
        self._store = store or MemoryThrottleStore(max_entries=max_entries, clock=clock)
        self._failures = (
            TokenBuckets(per_second, burst, scope=scope, store=self._store)
            if per_second > 0
            else None
        )
        self.lockout_seconds = lockout_seconds

    @property
    def enabled(self) -> bool:
        return self._failures is not None

    def locked_for(self, address: str) -> float:
        """Seconds `address` stays locked out; 0.0 when it may authenticate."""
        if self._failures is None:
            return 0.0
        return self._store.locked_for(self.scope, address)

    def record_failure(self, address: str) -> float:
        """A token from `address` was refused. Past its allowance the address is locked out,
        starting with this call: returns the lockout's seconds, else 0.0."""
        if self._failures is None or self._failures.take(address) == 0.0:
            return 0.0
        self._store.lock(self.scope, address, self.lockout_seconds)
        return self.lockout_seconds

    def __len__(self) -> int:
        return self._store.lock_count(self.scope)
