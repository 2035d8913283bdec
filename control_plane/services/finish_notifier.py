"""Delivers finished attempts to the workflow waiting for them, durably (an outbox).

A terminal state is committed first (agent report, LOST marking); delivery to Temporal comes
after and may fail or be cut short by a restart. Every terminal attempt without `signalled_at`
is therefore signalled again, right away by whoever finished it and every few seconds by this
loop, until Temporal has it. The workflow's signal handler is idempotent, so a repeat is
harmless. The workflow is the execution's own, or for the element of a large map node, the
chunk workflow that created the attempt (`TaskAttempt.workflow_id`).

With a `quiet` policy (`ExecutionActivities.quiet_finishes`), a plain success whose workflow
has nothing to do about it yet is recorded as told without a signal (`held`), and the
execution's next finish that is signalled carries the news that others were (`look`: the
workflow then reads them). A signal costs the Temporal server more CPU than a no-op task
costs the agent; a fan-out of plain nodes sends a few instead of one per attempt.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.repositories import attempts as attempts_repo
from control_plane.db.session import transaction
from control_plane.orchestration.workflows import AttemptFinished

log = logging.getLogger(__name__)

# Sends a finished attempt to the workflow of that id (a Temporal signal). Returns normally
# when the workflow has it or has already closed; raises when it should be tried again.
AttemptFinishedSink = Callable[[str, AttemptFinished], Awaitable[None]]
# Tells the workflow of that id that attempts of its finished without a signal; as the sink.
LookSink = Callable[[str], Awaitable[None]]
# Marks, in the outbox's transaction, the pending finishes to hold and those to signal with a
# `LookSink` call (`ExecutionActivities.quiet_finishes`).
QuietPolicy = Callable[
    [Session, list[attempts_repo.FinishedAttempt]], list[attempts_repo.FinishedAttempt]
]
# How many signals are in flight at once.
DELIVERY_WINDOW = 32


class FinishNotifier:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        sink: AttemptFinishedSink,
        *,
        quiet: QuietPolicy | None = None,
        look: LookSink | None = None,
    ) -> None:
        if (quiet is None) != (look is None):
            raise ValueError("a quiet policy needs a look sink, and a look sink a policy")
        self._sessions = sessions
        self._sink = sink
        self._quiet = quiet
        self._look = look
        self._lock = asyncio.Lock()
        self._asked_again = False
        self._soon: asyncio.Task[None] | None = None

    def deliver_soon(self) -> None:
        """`deliver_pending` in the background, now: an agent's report is answered without
        waiting for Temporal. Calls made while a round runs make one more round, not one
        each; a failed round is left to the periodic loop (`run`)."""
        self._asked_again = True
        if self._soon is None or self._soon.done():
            self._soon = asyncio.get_running_loop().create_task(
                self._deliver_while_asked(), name="finish-notifier-soon"
            )

    async def _deliver_while_asked(self) -> None:
        while self._asked_again:
            self._asked_again = False
            try:
                await self.deliver_pending()
            except Exception:  # the database is away: the periodic loop tries again
                log.warning("finish notifier round failed; retrying later", exc_info=True)
                return

    async def settle(self) -> None:
        """Until the background rounds `deliver_soon` asked for are over."""
        while self._soon is not None and not self._soon.done():
            await asyncio.shield(self._soon)

    async def deliver_pending(self) -> int:
        """Signal every finished attempt not yet delivered; returns how many were."""
        async with self._lock:
            pending = await asyncio.to_thread(self._pending)
            delivered = [item.attempt_id for item in pending if item.held]
            pending = [item for item in pending if not item.held]
            # A fan-out finishes many attempts at once: signal them a window at a time, not
            # one round trip after another.
            sent: list[bool] = []
            for first in range(0, len(pending), DELIVERY_WINDOW):
                window = pending[first : first + DELIVERY_WINDOW]
                sent += await asyncio.gather(*(self._deliver(item) for item in window))
            # After their finishes: a workflow told of held ones reads them. A finish that
            # carried that news stays in the outbox until the news is delivered too.
            looks = sorted({item.workflow_id for item in pending if item.look})
            told = dict(zip(looks, await asyncio.gather(*map(self._tell, looks)), strict=True))
            delivered += [
                item.attempt_id
                for item, ok in zip(pending, sent, strict=True)
                if ok and told.get(item.workflow_id, True)
            ]
            if delivered:
                await asyncio.to_thread(self._mark, delivered)
            return len(delivered)

    async def _deliver(self, item: attempts_repo.FinishedAttempt) -> bool:
        event = AttemptFinished(item.attempt_id, item.status, item.message)
        what = f"{item.status} of attempt {item.attempt_id}"
        return await self._sent(self._sink(item.workflow_id, event), what)

    async def _tell(self, workflow_id: str) -> bool:
        assert self._look is not None  # a finish marked `look` came from the policy
        what = f"the news of held finishes to workflow {workflow_id}"
        return await self._sent(self._look(workflow_id), what)

    @staticmethod
    async def _sent(sending: Awaitable[None], what: str) -> bool:
        """Whether `sending` went through; a failure is logged, and tried again later."""
        try:
            await sending
        except Exception:
            log.warning("could not deliver %s yet; will retry", what, exc_info=True)
            return False
        return True

    def _pending(self) -> list[attempts_repo.FinishedAttempt]:
        with self._sessions() as session:
            pending = attempts_repo.unsignalled_finished(session)
            return self._quiet(session, pending) if self._quiet and pending else pending

    def _mark(self, attempt_ids: list[str]) -> None:
        with transaction(self._sessions) as session:
            attempts_repo.mark_signalled(session, attempt_ids)

    async def run(self, stop: asyncio.Event, *, interval: float = 2.0) -> None:
        """Retry undelivered attempts every `interval` seconds until `stop`."""
        while not stop.is_set():
            try:
                await self.deliver_pending()
            except Exception:  # the database is away: next round
                log.warning("finish notifier round failed; retrying", exc_info=True)
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                pass
