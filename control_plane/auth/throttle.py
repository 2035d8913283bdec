"""Token buckets and the brute-force lockout, shared by the REST API and the agent gRPC service.

Both refuse a caller's address once it has sent too many invalid tokens: every refused token
costs the address one token of its bucket, and when the bucket runs dry the address may not
authenticate at all for `lockout_seconds`, valid token or not. Other addresses are unaffected.
Each transport words the refusal its own way (429 with Retry-After; RESOURCE_EXHAUSTED).

Everything here lives in the process's memory: limits hold per replica. Memory is bounded:
each table keeps at most `max_entries` keys and forgets the least recently used beyond that.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """Token buckets by key, `rate` tokens a second up to `burst`; thread-safe, bounded."""

    def __init__(
        self, rate: float, burst: float, *, max_entries: int = 10_000, clock: Clock = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._max_entries = max_entries
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take a token for `key`: 0.0 when granted, else seconds until one is available."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.pop(key, None) or _Bucket(self.burst, now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            self._buckets[key] = bucket
            while len(self._buckets) > self._max_entries:
                self._buckets.popitem(last=False)
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return 0.0
            return (1 - bucket.tokens) / self.rate if self.rate > 0 else math.inf

    def __len__(self) -> int:
        return len(self._buckets)


class AuthLockout:
    """Locks out an address after `burst` refused tokens (earned back at `per_second`) for
    `lockout_seconds`. A rate of 0 turns it off."""

    def __init__(
        self,
        *,
        burst: int,
        per_second: float,
        lockout_seconds: float,
        max_entries: int = 10_000,
        clock: Clock = time.monotonic,
    ) -> None:
        self._clock = clock
        self._failures = (
            TokenBuckets(per_second, burst, max_entries=max_entries, clock=clock)
            if per_second > 0
            else None
        )
        self.lockout_seconds = lockout_seconds
        self._locked: OrderedDict[str, float] = OrderedDict()  # address -> locked until
        self._max_entries = max_entries
        self._lock = threading.Lock()

    def locked_for(self, address: str) -> float:
        """Seconds `address` stays locked out; 0.0 when it may authenticate."""
        if self._failures is None:
            return 0.0
        now = self._clock()
        with self._lock:
            until = self._locked.get(address)
            if until is not None and until <= now:
                del self._locked[address]
                until = None
        return 0.0 if until is None else until - now

    def record_failure(self, address: str) -> float:
        """A token from `address` was refused. Past its allowance the address is locked out,
        starting with this call: returns the lockout's seconds, else 0.0."""
        if self._failures is None or self._failures.take(address) == 0.0:
            return 0.0
        with self._lock:
            self._locked.pop(address, None)
            self._locked[address] = self._clock() + self.lockout_seconds
            while len(self._locked) > self._max_entries:
                self._locked.popitem(last=False)
        return self.lockout_seconds

    def __len__(self) -> int:
        return len(self._locked)
