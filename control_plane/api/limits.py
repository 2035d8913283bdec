"""Request limits of the REST API: per-tenant rate limits, brute-force protection of token
authentication, and a bound on JSON request bodies.

The buckets and lockouts live in a `ThrottleStore` (control_plane/auth/throttle.py): in the
database, shared by every API replica, when `FLEETFLOW_LIMITS_STORE` is `database` (the default
on PostgreSQL), so N replicas still give a tenant its rate once and an attacker its tries once;
else in this process's memory, bounded to `max_entries` keys a table. Only the map from a token
to its tenant (`remember`) stays in memory: it is a cache, and every replica fills its own.

- `RequestGuard.charge(key)` takes one token from the key's bucket (a tenant's); an empty
  bucket is a 429 with `Retry-After`.
- `RequestGuard.check_address` / `record_failure`: every refused token costs its client
  address one token of a second bucket; when that one runs dry, the address may not
  authenticate at all for `auth_lockout_seconds` (429 with `Retry-After`), valid token or not.
  Other addresses are not affected.
- `RequestGuard.admit(address, key)`: `check_address` then `charge`, in one store call (one
  statement on the database): the path of every request whose token was seen before.
- `BodySizeLimit`: an ASGI middleware answering 413 to a JSON body over the limit, counted as it
  streams in (Content-Length is not trusted). Raw uploads (bundles, files) keep their own
  larger limits and pass through.
- `RefuseNul`: a NUL character in the path or query is a 422 (PostgreSQL cannot store one in
  text; SQLite can: the answer must not depend on the database).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import OrderedDict

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.api.errors import ApiError
from control_plane.auth.throttle import (
    AuthLockout,
    Clock,
    MemoryThrottleStore,
    ThrottleStore,
    TokenBuckets,
)


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


class RequestGuard:
    """Rate limits per tenant and brute-force protection per client address (see the module
    docstring), kept in `store` (default: this process's memory, bounded to `max_entries`
    keys a table, on `clock`). A rate of 0 turns the corresponding limit off."""

    def __init__(
        self,
        *,
        rate_per_second: float,
        burst: int,
        auth_failures_burst: int,
        auth_failures_per_second: float,
        auth_lockout_seconds: float,
        store: ThrottleStore | None = None,
        max_entries: int = 10_000,
        clock: Clock = time.monotonic,
    ) -> None:
        store = store or MemoryThrottleStore(max_entries=max_entries, clock=clock)
        self._requests = (
            TokenBuckets(rate_per_second, burst, scope="api.requests", store=store)
            if rate_per_second > 0
            else None
        )
        self._lockout = AuthLockout(
            burst=auth_failures_burst,
            per_second=auth_failures_per_second,
            lockout_seconds=auth_lockout_seconds,
            scope="api.auth",
            store=store,
        )
        # sha256 of a token seen valid -> its rate-limit key, so a throttled caller is refused
        # before its token is looked up in the database. Only the key comes from here: the
        # token itself is still authenticated (and may have been revoked since).
        self._keys: OrderedDict[str, str] = OrderedDict()
        self._max_entries = max_entries
        self._lock = threading.Lock()

    # Rate limits -------------------------------------------------------------------------

    @staticmethod
    def _token_digest(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()

    def key_of(self, token: str) -> str | None:
        """The rate-limit key of a token seen valid before, if remembered."""
        with self._lock:
            return self._keys.get(self._token_digest(token))

    def remember(self, token: str, key: str) -> None:
        digest = self._token_digest(token)
        with self._lock:
            self._keys.pop(digest, None)
            self._keys[digest] = key
            while len(self._keys) > self._max_entries:
                self._keys.popitem(last=False)

    def charge(self, key: str) -> None:
        """One request of `key` (a tenant); 429 with Retry-After when over its rate."""
        if self._requests is None:
            return
        wait = self._requests.take(key)
        if wait > 0:
            raise self._over_rate(key, wait)

    def admit(self, address: str, key: str) -> None:
        """`check_address(address)` then `charge(key)`, in one store call: nothing is charged
        while the address is locked out."""
        if self._requests is None:
            self.check_address(address)
            return
        taken = self._requests.take_unless_locked(key, self._lockout, address)
        if taken.locked > 0:
            raise self._locked_out(taken.locked)
        if taken.wait > 0:
            raise self._over_rate(key, taken.wait)

    def _over_rate(self, key: str, wait: float) -> ApiError:
        assert self._requests is not None
        return ApiError(
            429,
            f"rate limit exceeded for tenant {key!r}: at most {self._requests.rate:g} "
            f"requests a second (bursts of {self._requests.burst:g}); retry in "
            f"{max(1, math.ceil(wait))} s",
            headers=_retry_after(wait),
        )

    # Brute-force protection --------------------------------------------------------------

    def check_address(self, address: str) -> None:
        """429 while `address` is locked out after too many refused tokens."""
        seconds = self._lockout.locked_for(address)
        if seconds > 0:
            raise self._locked_out(seconds)

    def record_failure(self, address: str) -> None:
        """A token from `address` was refused. Past its allowance of refused tokens, the
        address is locked out, starting with this request (429)."""
        seconds = self._lockout.record_failure(address)
        if seconds > 0:
            raise self._locked_out(seconds)

    def _locked_out(self, seconds: float) -> ApiError:
        return ApiError(
            429,
            "too many invalid API tokens from this address: authentication is suspended "
            f"for {max(1, math.ceil(seconds))} s",
            headers=_retry_after(seconds),
        )


# Request bodies ---------------------------------------------------------------------------


class BodySizeLimit:
    """ASGI middleware: 413 for a request body over `limit` bytes, except under
    `exempt_prefixes` (routes that stream raw bodies with limits of their own)."""

    def __init__(self, app: ASGIApp, *, limit: int, exempt_prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.limit = limit
        self.exempt_prefixes = exempt_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt_prefixes):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._too_large(send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # FastAPI re-raises an HTTPException from reading the body, and the
                    # error handlers render it in the API's one error shape.
                    raise HTTPException(413, self._message)
            return message

        await self.app(scope, limited_receive, send)

    @property
    def _message(self) -> str:
        return f"request body too large: the limit is {self.limit} bytes"

    async def _too_large(self, send: Send) -> None:
        await _send_error(send, 413, self._message)


class RefuseNul:
    """ASGI middleware: 422 for a NUL character (`%00`) in the request's path or query."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope["path"] or b"%00" in scope.get("query_string", b"")
        ):
            detail = "invalid request: the path or query contains a NUL (%00) character"
            await _send_error(send, 422, detail)
            return
        await self.app(scope, receive, send)


async def _send_error(send: Send, status: int, detail: str) -> None:
    """Answer `status` with the API's error body (`{"detail": ...}`) from ASGI middleware,
    which runs outside FastAPI's exception handlers."""
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
