"""Keeps the Temporal worker running: a worker that fails is replaced, the process stays up.

The Temporal SDK fails a worker for good when polling keeps failing (the server away longer
than its retries, an error it cannot classify). Ending the whole control plane then would take
the REST API and the agents' gRPC service down with it for a fault that a new worker recovers
from once Temporal answers again, so the supervisor builds a new one after a backoff.
Executions lose nothing meanwhile: their state is in Temporal and the database. Where the
server keeps a gone worker's workflows for good (the test server of `fleetflow dev up`,
sticky_recovery.py), `on_replaced` takes them back once each new worker is made.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger(__name__)


class RunnableWorker(Protocol):
    async def run(self) -> None: ...

    async def shutdown(self) -> None: ...


class WorkerSupervisor:
    """Runs workers made by `make_worker` one after another until `shutdown`.

    Backoff doubles from `initial_backoff` to `max_backoff` while workers keep failing, and
    starts over once one has run for `healthy_after` seconds. `on_replaced`, when given, runs
    beside each worker made after the first, retried with the same backoff until it succeeds
    (a worker replaced again meanwhile starts it over).
    """

    def __init__(
        self,
        make_worker: Callable[[], RunnableWorker],
        *,
        on_replaced: Callable[[], Awaitable[object]] | None = None,
        initial_backoff: float = 1.0,
        max_backoff: float = 30.0,
        healthy_after: float = 60.0,
    ) -> None:
        self._make_worker = make_worker
        self._on_replaced = on_replaced
        self._recovery: asyncio.Task[None] | None = None
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._healthy_after = healthy_after
        self._worker: RunnableWorker | None = None
        self._stopping = asyncio.Event()
        self.restarts = 0

    async def run(self) -> None:
        try:
            await self._supervise()
        finally:
            await self._stop_recovery()

    async def _supervise(self) -> None:
        backoff = self._initial_backoff
        while not self._stopping.is_set():
            self._worker = self._make_worker()
            if self.restarts and self._on_replaced is not None:
                await self._stop_recovery()
                self._recovery = asyncio.create_task(self._recover(), name="worker-recovery")
            began = time.monotonic()
            try:
                await self._worker.run()
            except Exception as exc:  # the SDK already logged the poll errors that led here
                if self._stopping.is_set():
                    return
                if time.monotonic() - began >= self._healthy_after:
                    backoff = self._initial_backoff
                log.error(
                    "the Temporal worker failed (%s: %s); starting a new one in %.0f s",
                    type(exc).__name__,
                    exc,
                    backoff,
                )
            else:
                if self._stopping.is_set():
                    return
                log.error("the Temporal worker stopped by itself; starting a new one")
            self.restarts += 1
            await self._pause(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    async def _recover(self) -> None:
        """`on_replaced` until it succeeds (Temporal may still be away) or we stop."""
        assert self._on_replaced is not None
        backoff = self._initial_backoff
        while not self._stopping.is_set():
            try:
                await self._on_replaced()
                return
            except Exception as exc:
                log.error(
                    "could not take back the replaced worker's workflows (%s: %s); "
                    "trying again in %.0f s",
                    type(exc).__name__,
                    exc,
                    backoff,
                )
            await self._pause(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    async def _stop_recovery(self) -> None:
        if self._recovery is not None:
            self._recovery.cancel()
            await asyncio.gather(self._recovery, return_exceptions=True)
            self._recovery = None

    async def _pause(self, seconds: float) -> None:
        """Wait `seconds`, or less if we are stopping."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def shutdown(self) -> None:
        """Stop the current worker (finishing its in-flight tasks) and start no other."""
        self._stopping.set()
        if self._worker is not None:  # returns at once for a worker that already failed
            await self._worker.shutdown()
