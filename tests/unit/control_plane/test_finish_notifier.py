"""The finish notifier's delivery round: the finished attempts of one workflow go in one
signal, many workflows are signalled a window at a time, and a signal that cannot be delivered
leaves its attempts in the outbox while the others leave it."""

from __future__ import annotations

import asyncio
from typing import Any

from control_plane.db.repositories.attempts import FinishedAttempt
from control_plane.orchestration.workflows import AttemptFinished
from control_plane.services.finish_notifier import DELIVERY_WINDOW, SIGNAL_BATCH, FinishNotifier


class PeakSink:
    """Records the signals sent and how many were in flight at once; refuses those to one
    workflow."""

    def __init__(self, refuse: str) -> None:
        self.refuse = refuse
        self.in_flight = self.peak = 0
        self.delivered: list[str] = []
        self.signals: list[tuple[str, list[str]]] = []

    async def __call__(self, workflow_id: str, events: list[AttemptFinished]) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(0.001)
            if workflow_id == self.refuse:
                raise RuntimeError("Temporal is away")
            self.signals.append((workflow_id, [event.attempt_id for event in events]))
            self.delivered += [event.attempt_id for event in events]
        finally:
            self.in_flight -= 1


def _round(pending: list[FinishedAttempt], sink: PeakSink) -> tuple[int, list[str]]:
    notifier = FinishNotifier(sessions=None, sink=sink)  # type: ignore[arg-type]
    marked: list[str] = []
    outbox: Any = notifier
    outbox._pending = lambda: pending
    outbox._mark = marked.extend
    return asyncio.run(notifier.deliver_pending()), marked


def test_a_workflows_finished_attempts_go_in_one_signal_in_order() -> None:
    pending = [
        FinishedAttempt(f"at-{i}", f"ex-1/chunk-{i % 3}", "FAILED" if i == 4 else "SUCCEEDED", "")
        for i in range(12)
    ]
    sink = PeakSink(refuse="")
    delivered, marked = _round(pending, sink)
    assert delivered == 12 and sorted(marked) == sorted(a.attempt_id for a in pending)
    assert sorted(sink.signals) == [
        ("ex-1/chunk-0", ["at-0", "at-3", "at-6", "at-9"]),
        ("ex-1/chunk-1", ["at-1", "at-4", "at-7", "at-10"]),
        ("ex-1/chunk-2", ["at-2", "at-5", "at-8", "at-11"]),
    ]


def test_a_burst_is_split_into_bounded_signals() -> None:
    pending = [FinishedAttempt(f"at-{i}", "ex-1", "SUCCEEDED", "") for i in range(250)]
    sink = PeakSink(refuse="")
    assert _round(pending, sink)[0] == 250
    assert [len(ids) for _, ids in sink.signals] == [SIGNAL_BATCH, SIGNAL_BATCH, 50]
    assert [i for _, ids in sink.signals for i in ids] == [a.attempt_id for a in pending]


def test_a_round_signals_a_window_at_a_time_and_keeps_what_failed() -> None:
    pending = [FinishedAttempt(f"at-{i}", f"ex-{i}", "SUCCEEDED", "") for i in range(70)]
    pending.append(FinishedAttempt("at-70", "ex-33", "LOST", "cluster gone"))
    sink = PeakSink(refuse="ex-33")
    delivered, marked = _round(pending, sink)
    assert delivered == 69
    assert 1 < sink.peak <= DELIVERY_WINDOW
    # Both attempts of the workflow that could not be signalled stay in the outbox.
    assert "at-33" not in marked and "at-70" not in marked
    assert sorted(marked) == sorted(sink.delivered) and len(set(marked)) == 69


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
