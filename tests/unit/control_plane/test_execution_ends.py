"""`ExecutionEnds`: a long-polled read wakes when its execution's end is committed (and only
then), reads at intervals for ends it cannot hear of, answers when its process stops, and
one tenant's waits cannot take another's."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from control_plane import execution_ends
from control_plane.execution_ends import ExecutionEnds, Wait, record_end
from tests.polling import wait_until_async

# Far beyond any test's time: only a wake-up can end these waits early.
NEVER = 3600.0


class Execution:
    """A read of one execution's state, counted; `final` once `end()` was called."""

    def __init__(self) -> None:
        self.reads = 0
        self.ended = False

    async def read(self) -> str:
        self.reads += 1
        return "SUCCEEDED" if self.ended else "RUNNING"


def is_final(state: str) -> bool:
    return state == "SUCCEEDED"


@pytest.fixture(autouse=True)
def no_recheck(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(execution_ends, "RECHECK_SECONDS", NEVER)


async def test_a_final_first_read_answers_at_once() -> None:
    ends, execution = ExecutionEnds(), Execution()
    execution.ended = True
    assert await ends.read_until_ended("t", "ex", execution.read, is_final, NEVER) == "SUCCEEDED"
    assert execution.reads == 1
    assert ends.waits_for("ex") == 0


async def test_an_end_told_from_another_thread_wakes_the_wait() -> None:
    ends, execution = ExecutionEnds(), Execution()
    waiting = asyncio.create_task(ends.read_until_ended("t", "ex", execution.read, is_final, NEVER))
    await wait_until_async(lambda: ends.waits_for("ex") == 1 and execution.reads == 1, timeout=30)
    execution.ended = True
    ends.ended(["another"])  # someone else's end wakes nobody here
    await asyncio.sleep(0.05)
    assert execution.reads == 1 and not waiting.done()
    threading.Thread(target=ends.ended, args=(["ex"],)).start()  # as a commit's thread does
    assert await asyncio.wait_for(waiting, 30) == "SUCCEEDED"
    assert execution.reads == 2
    assert ends.waits_for("ex") == 0


async def test_without_an_end_it_reads_again_at_intervals_until_its_time_is_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(execution_ends, "RECHECK_SECONDS", 0.01)
    ends, execution = ExecutionEnds(), Execution()
    assert await ends.read_until_ended("t", "ex", execution.read, is_final, 0.2) == "RUNNING"
    assert execution.reads > 2  # each recheck read again


async def test_a_zero_wait_reads_once_and_registers_nothing() -> None:
    ends, execution = ExecutionEnds(), Execution()
    assert await ends.read_until_ended("t", "ex", execution.read, is_final, 0) == "RUNNING"
    assert execution.reads == 1


async def test_stopping_releases_every_wait() -> None:
    ends, execution = ExecutionEnds(), Execution()
    waiting = asyncio.create_task(ends.read_until_ended("t", "ex", execution.read, is_final, NEVER))
    await wait_until_async(lambda: ends.waits_for("ex") == 1, timeout=30)
    ends.release_all()
    assert await asyncio.wait_for(waiting, 30) == "RUNNING"  # answered as it stands


async def test_a_tenant_past_its_waits_reads_once_and_leaves_others_theirs() -> None:
    ends = ExecutionEnds(max_waits_per_tenant=2)
    held = [Execution() for _ in range(2)]
    waits = [
        asyncio.create_task(ends.read_until_ended("greedy", "ex", e.read, is_final, NEVER))
        for e in held
    ]
    await wait_until_async(lambda: ends.waits_for("ex") == 2, timeout=30)
    # A third of the same tenant answers at once, without waiting.
    extra = Execution()
    assert await ends.read_until_ended("greedy", "ex", extra.read, is_final, NEVER) == "RUNNING"
    assert extra.reads == 1
    # Another tenant still waits, and is woken.
    other = Execution()
    waiting = asyncio.create_task(
        ends.read_until_ended("polite", "ex2", other.read, is_final, NEVER)
    )
    await wait_until_async(lambda: ends.waits_for("ex2") == 1, timeout=30)
    other.ended = True
    ends.ended(["ex2"])
    assert await asyncio.wait_for(waiting, 30) == "SUCCEEDED"
    # Ended waits give their places back.
    for execution in held:
        execution.ended = True
    ends.ended(["ex"])
    await asyncio.wait_for(asyncio.gather(*waits), 30)
    again = Execution()
    waiting = asyncio.create_task(
        ends.read_until_ended("greedy", "ex", again.read, is_final, NEVER)
    )
    await wait_until_async(lambda: ends.waits_for("ex") == 1, timeout=30)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert ends.waits_for("ex") == 0


def test_an_end_is_told_once_committed_and_never_when_rolled_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    told: list[list[str]] = []
    monkeypatch.setattr(execution_ends.ENDS, "ended", told.append)
    engine = create_engine("sqlite://")
    with Session(engine) as session:
        session.execute(text("SELECT 1"))  # as the move does: in a transaction begun
        record_end(session, "ex-rolled-back")
        session.rollback()
        session.execute(text("SELECT 1"))
        record_end(session, "ex-1")
        record_end(session, "ex-2")
        assert told == []  # not before the commit
        session.commit()
        session.commit()  # nothing left to tell
    assert told == [["ex-1"], ["ex-2"]]  # each end once, in order


def test_waking_a_wait_whose_loop_closed_does_not_raise_into_the_commit() -> None:
    async def make() -> Wait:
        return Wait()

    wait = asyncio.run(make())  # its loop is closed once this returns
    wait.wake()
    wait.wake(release=True)
    assert wait.released
