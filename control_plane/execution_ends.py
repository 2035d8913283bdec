"""Executions that ended, told at once to the requests waiting for them in this process.

A client waiting for an execution long-polls its progress (`GET …/progress?wait_seconds=`)
instead of reading it every half second: the read answers as soon as the execution is
terminal. `move_execution` records an execution's end on its session (`record_end`); once
that transaction commits, every request waiting for it here wakes (`ENDS`). An end committed
by another replica wakes nobody here: waiting requests read again every `RECHECK_SECONDS`,
which bounds how late they hear of it.

Waits are bounded per tenant (`MAX_WAITS_PER_TENANT` at once in a process): beyond that a
read answers at once, so one tenant's waiting requests cannot tie up the server's memory and
connections at others' expense.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from sqlalchemy.orm import Session

from control_plane.on_commit import on_commit

RECHECK_SECONDS = 0.5
"""How often a waiting request reads again, for ends committed by another replica."""
MAX_WAIT_SECONDS = 30.0
"""The longest one request waits (proxies commonly cut idle requests at 60 s)."""
MAX_WAITS_PER_TENANT = 64

_T = TypeVar("_T")


class Wait:
    """One request's wait: `woken` is set when its execution ends, and also, with
    `released`, when this process stops (the request should answer now)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.woken = asyncio.Event()
        self.released = False

    def wake(self, *, release: bool = False) -> None:
        """From any thread; never raises (it runs after a commit, which must not look
        failed)."""
        if release:
            self.released = True
        with contextlib.suppress(RuntimeError):  # its loop closed meanwhile: nobody waits
            self.loop.call_soon_threadsafe(self.woken.set)


class ExecutionEnds:
    """Who waits for which execution here; woken from any thread (a commit's)."""

    def __init__(self, max_waits_per_tenant: int = MAX_WAITS_PER_TENANT) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, list[Wait]] = {}
        self._per_tenant: Counter[str] = Counter()
        self._max_per_tenant = max_waits_per_tenant

    @asynccontextmanager
    async def _registered(self, tenant_id: str, execution_id: str) -> AsyncIterator[Wait | None]:
        """A wait woken when `execution_id` ends here, registered before the caller reads
        the execution so that no end falls between; None when the tenant has as many waits
        open as it may (answer at once)."""
        entry = Wait()
        with self._lock:
            if self._per_tenant[tenant_id] >= self._max_per_tenant:
                admitted = False
            else:
                admitted = True
                self._per_tenant[tenant_id] += 1
                self._waiting.setdefault(execution_id, []).append(entry)
        if not admitted:
            yield None
            return
        try:
            yield entry
        finally:
            with self._lock:
                self._per_tenant[tenant_id] -= 1
                if not self._per_tenant[tenant_id]:
                    del self._per_tenant[tenant_id]
                entries = self._waiting.get(execution_id, [])
                if entry in entries:
                    entries.remove(entry)
                if not entries:
                    self._waiting.pop(execution_id, None)

    async def read_until_ended(
        self,
        tenant_id: str,
        execution_id: str,
        read: Callable[[], Awaitable[_T]],
        final: Callable[[_T], bool],
        seconds: float,
    ) -> _T:
        """`read()` the tenant's execution, and again each time it may have ended (woken
        here, or every `RECHECK_SECONDS`) until `final` holds for what it read, `seconds`
        passed, or this process stops; what it read last. A tenant past its waits reads
        once."""
        if seconds <= 0:
            return await read()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(seconds, MAX_WAIT_SECONDS)
        async with self._registered(tenant_id, execution_id) as wait:
            found = await read()
            while wait is not None and not wait.released and not final(found):
                left = deadline - loop.time()
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wait.woken.wait(), min(left, RECHECK_SECONDS))
                wait.woken.clear()
                found = await read()
            return found

    def waits_for(self, execution_id: str) -> int:
        """How many requests wait for `execution_id` here now."""
        with self._lock:
            return len(self._waiting.get(execution_id, ()))

    def ended(self, execution_ids: list[str]) -> None:
        """Wake whoever waits for these executions (any thread)."""
        with self._lock:
            woken = [entry for i in execution_ids for entry in self._waiting.get(i, ())]
        for entry in woken:
            entry.wake()

    def release_all(self) -> None:
        """Let every waiting request answer now (this process is stopping)."""
        with self._lock:
            woken = [entry for entries in self._waiting.values() for entry in entries]
        for entry in woken:
            entry.wake(release=True)


ENDS = ExecutionEnds()
"""This process's waits: the API's progress reads and every commit share it."""


def record_end(session: Session, execution_id: str) -> None:
    """Tell `ENDS` of the execution's end once `session`'s transaction commits (not if it
    rolls back: a retried transaction tells once)."""
    on_commit(session, lambda: ENDS.ended([execution_id]))
