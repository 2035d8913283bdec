"""Keeps the Temporal worker running: a worker that fails is replaced, the process stays up.

The Temporal SDK fails a worker for good when polling keeps failing (the server away longer
than its retries, an error it cannot classify). Ending the whole control plane then would take
the REST API and the agents' gRPC service down with it for a fault that a new worker recovers
from once Temporal answers again, so the supervisor builds a new one after a backoff.
Executions lose nothing meanwhile: their state is in Temporal and the database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)


class RunnableWorker(Protocol):
    async def run(self) -> None: ...

    async def shutdown(self) -> None: ...


class WorkerSupervisor:
    """Runs workers made by `make_worker` one after another until `shutdown`.

    Backoff doubles from `initial_backoff` to `max_backoff` while workers keep failing, and
    starts over once one has run for `healthy_after` seconds.
    """

    def __init__(
        self,
        make_worker: Callable[[], RunnableWorker],
        *,
        initial_backoff: float = 1.0,
        max_backoff: float = 30.0,
        healthy_after: float = 60.0,
    ) -> None:
        self._make_worker = make_worker
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._healthy_after = healthy_after
        self._worker: RunnableWorker | None = None
        self._stopping = asyncio.Event()
        self.restarts = 0

    async def run(self) -> None:
        backoff = self._initial_backoff
        while not self._stopping.is_set():
            self._worker = self._make_worker()
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
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=backoff)
            except TimeoutError:
                pass
            backoff = min(backoff * 2, self._max_backoff)

    async def shutdown(self) -> None:
        """Stop the current worker (finishing its in-flight tasks) and start no other."""
        self._stopping.set()
        if self._worker is not None:  # returns at once for a worker that already failed
            await self._worker.shutdown()
