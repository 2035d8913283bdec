"""Delivers finished attempts to the workflow waiting for them, durably (an outbox).

A terminal state is committed first (agent report, LOST marking); delivery to Temporal comes
after and may fail or be cut short by a restart. Every terminal attempt without `signalled_at`
is therefore signalled again, right away by whoever finished it and every few seconds by this
loop, until Temporal has it. The workflow's signal handler is idempotent, so a repeat is
harmless. The workflow is the execution's own, or for the element of a large map node, the
chunk workflow that created the attempt (`TaskAttempt.workflow_id`). All the attempts of one
workflow that are waiting go in one signal (up to `SIGNAL_BATCH`): a fan-out's burst of
finishes costs its workflow one history event and one round trip, not one per attempt.
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

# Sends finished attempts to the workflow of that id (one Temporal signal). Returns normally
# when the workflow has them or has already closed; raises when they should be tried again.
AttemptFinishedSink = Callable[[str, list[AttemptFinished]], Awaitable[None]]
# How many signals are in flight at once.
DELIVERY_WINDOW = 32
# The most finished attempts in one signal: bounds its payload (about 100 bytes each) and the
# attempts one failed signal sends again.
SIGNAL_BATCH = 100


class FinishNotifier:
    def __init__(self, sessions: sessionmaker[Session], sink: AttemptFinishedSink) -> None:
        self._sessions = sessions
        self._sink = sink
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
            signals = _signals(pending)
            delivered: list[str] = []
            # A fan-out finishes many attempts at once (in chunk workflows, across several
            # workflows): signal them a window at a time, not one round trip after another.
            for first in range(0, len(signals), DELIVERY_WINDOW):
                window = signals[first : first + DELIVERY_WINDOW]
                sent = await asyncio.gather(*(self._deliver(*signal) for signal in window))
                for (_, events), ok in zip(window, sent, strict=True):
                    delivered += [event.attempt_id for event in events] if ok else []
            if delivered:
                await asyncio.to_thread(self._mark, delivered)
            return len(delivered)

    async def _deliver(self, workflow_id: str, events: list[AttemptFinished]) -> bool:
        try:
            await self._sink(workflow_id, events)
        except Exception:
            log.warning(
                "could not deliver %s yet; will retry",
                ", ".join(f"{event.status} of attempt {event.attempt_id}" for event in events),
                exc_info=True,
            )
            return False
        return True

    def _pending(self) -> list[attempts_repo.FinishedAttempt]:
        with self._sessions() as session:
            return attempts_repo.unsignalled_finished(session)

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


def _signals(
    pending: list[attempts_repo.FinishedAttempt],
) -> list[tuple[str, list[AttemptFinished]]]:
    """The signals that deliver `pending`: per workflow, its attempts in the order given, at
    most `SIGNAL_BATCH` each."""
    by_workflow: dict[str, list[AttemptFinished]] = {}
    for item in pending:
        event = AttemptFinished(item.attempt_id, item.status, item.message)
        by_workflow.setdefault(item.workflow_id, []).append(event)
    return [
        (workflow_id, events[first : first + SIGNAL_BATCH])
        for workflow_id, events in by_workflow.items()
        for first in range(0, len(events), SIGNAL_BATCH)
    ]
