"""The finish notifier's delivery round: many finished attempts are signalled a window at a
time, and one that cannot be delivered stays in the outbox while the others leave it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from control_plane.db.repositories.attempts import FinishedAttempt
from control_plane.orchestration.workflows import AttemptFinished
from control_plane.services.finish_notifier import DELIVERY_WINDOW, FinishNotifier


class PeakSink:
    """Records how many signals were in flight at once; refuses one attempt."""

    def __init__(self, refuse: str) -> None:
        self.refuse = refuse
        self.in_flight = self.peak = 0
        self.delivered: list[str] = []

    async def __call__(self, execution_id: str, event: AttemptFinished) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(0.001)
            if event.attempt_id == self.refuse:
                raise RuntimeError("Temporal is away")
            self.delivered.append(event.attempt_id)
        finally:
            self.in_flight -= 1


def test_a_round_signals_a_window_at_a_time_and_keeps_what_failed() -> None:
    pending = [FinishedAttempt(f"at-{i}", "ex-1", "SUCCEEDED", "") for i in range(70)]
    sink = PeakSink(refuse="at-33")
    notifier = FinishNotifier(sessions=None, sink=sink)  # type: ignore[arg-type]
    marked: list[str] = []
    outbox: Any = notifier
    outbox._pending = lambda: pending
    outbox._mark = marked.extend

    assert asyncio.run(notifier.deliver_pending()) == 69
    assert 1 < sink.peak <= DELIVERY_WINDOW
    assert "at-33" not in marked and sorted(marked) == sorted(sink.delivered)
    assert len(set(marked)) == 69


def test_deliveries_asked_for_during_a_round_make_one_more_round() -> None:
    """`deliver_soon` from every report of a burst: the caller does not wait, and the burst
    costs a round or two, not one per report."""

    async def scenario() -> tuple[int, list[str]]:
        notifier = FinishNotifier(sessions=None, sink=PeakSink(refuse=""))  # type: ignore[arg-type]
        outbox: Any = notifier
        rounds = 0
        finished: list[FinishedAttempt] = []

        def pending() -> list[FinishedAttempt]:
            nonlocal rounds
            rounds += 1
            taken = list(finished)
            finished.clear()
            return taken

        marked: list[str] = []
        outbox._pending = pending
        outbox._mark = marked.extend
        for i in range(20):
            finished.append(FinishedAttempt(f"at-{i}", "ex-1", "SUCCEEDED", ""))
            notifier.deliver_soon()  # returns at once
            await asyncio.sleep(0)
        await notifier.settle()
        return rounds, marked

    rounds, marked = asyncio.run(scenario())
    assert sorted(marked) == sorted(f"at-{i}" for i in range(20))
    assert rounds <= 3


def test_a_background_round_that_fails_is_left_to_the_loop(caplog: Any) -> None:
    async def scenario() -> None:
        notifier = FinishNotifier(sessions=None, sink=PeakSink(refuse=""))  # type: ignore[arg-type]

        def database_away() -> list[FinishedAttempt]:
            raise ConnectionError("database is away")

        outbox: Any = notifier
        outbox._pending = database_away
        notifier.deliver_soon()
        await notifier.settle()  # no exception escapes the background round

    asyncio.run(scenario())
    assert "finish notifier round failed; retrying later" in caplog.text


def test_held_finishes_are_recorded_unsignalled_and_the_news_goes_with_the_last() -> None:
    """A held finish is marked without a signal; a finish carrying the news (`look`) is marked
    only once the workflow was told too, else both are tried again next round."""
    looks: list[str] = []
    refuse_look = {"ex-2"}

    async def look(workflow_id: str) -> None:
        if workflow_id in refuse_look:
            raise RuntimeError("Temporal is away")
        looks.append(workflow_id)

    sink = PeakSink(refuse="")
    notifier = FinishNotifier(
        sessions=None,  # type: ignore[arg-type]
        sink=sink,
        quiet=lambda session, pending: pending,
        look=look,
    )
    pending = [
        FinishedAttempt("at-1", "ex-1", "SUCCEEDED", "", held=True),
        FinishedAttempt("at-2", "ex-1", "SUCCEEDED", "", look=True),
        FinishedAttempt("at-3", "ex-2", "SUCCEEDED", "", look=True),
        FinishedAttempt("at-4", "ex-3", "FAILED", "boom"),
    ]
    marked: list[str] = []
    outbox: Any = notifier
    outbox._pending = lambda: pending
    outbox._mark = marked.extend

    assert asyncio.run(notifier.deliver_pending()) == 3
    assert sorted(sink.delivered) == ["at-2", "at-3", "at-4"]  # never the held one
    assert looks == ["ex-1"]
    assert sorted(marked) == ["at-1", "at-2", "at-4"]  # at-3 waits for its news to go out


def test_a_quiet_policy_needs_a_look_sink() -> None:
    with pytest.raises(ValueError, match="look sink"):
        FinishNotifier(
            sessions=None,  # type: ignore[arg-type]
            sink=PeakSink(refuse=""),
            quiet=lambda session, pending: pending,
        )
