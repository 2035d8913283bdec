"""The agent's on-disk report buffer: order across restarts, atomic writes, bound, corruption."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from data_plane_agent import report_buffer
from data_plane_agent.report_buffer import CorruptReportError, ReportBuffer, read_report
from fleetflow.agent.v1 import agent_pb2

RUNNING = agent_pb2.ATTEMPT_STATE_RUNNING
SUCCEEDED = agent_pb2.ATTEMPT_STATE_SUCCEEDED


def _report(
    attempt_id: str, sequence: int, state: int = SUCCEEDED, fencing_token: int = 1
) -> agent_pb2.ReportStatusRequest:
    """A final report by default: only those are written (a RUNNING one stays in memory)."""
    return agent_pb2.ReportStatusRequest(
        attempt_id=attempt_id, sequence=sequence, state=state, fencing_token=fencing_token
    )


async def _drain(buffer: ReportBuffer) -> list[tuple[str, int]]:
    """Take every report out as the agent's reporter does, oldest first."""
    taken = []
    while len(buffer):
        pending = await buffer.first()
        taken.append((pending.request.attempt_id, pending.request.sequence))
        buffer.remove(pending)
    await buffer.wait_empty()
    return taken


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def test_reports_come_back_in_order_after_reopening(tmp_path: Path) -> None:
    directory = tmp_path / "reports"
    buffer = ReportBuffer(directory, capacity=10)
    await buffer.put(_report("a", 1))
    await buffer.put(_report("b", 1))
    await buffer.put(_report("a", 2, SUCCEEDED))
    delivered = await buffer.first()
    buffer.remove(delivered)
    assert len(_files(directory)) == 2

    reopened = ReportBuffer(directory, capacity=10)  # as a new agent process would
    await reopened.put(_report("c", 1))

    assert await _drain(ReportBuffer(directory, capacity=10)) == [("b", 1), ("a", 2), ("c", 1)]
    assert _files(directory) == []


async def test_new_reports_sort_after_the_ones_left_behind(tmp_path: Path) -> None:
    directory = tmp_path / "reports"
    first_process = ReportBuffer(directory, capacity=20)
    for sequence in range(1, 12):  # past ten, where a plain decimal name would sort wrongly
        await first_process.put(_report("a", sequence))
    second_process = ReportBuffer(directory, capacity=20)
    await second_process.put(_report("b", 1))

    taken = await _drain(ReportBuffer(directory, capacity=20))
    assert taken == [*(("a", sequence) for sequence in range(1, 12)), ("b", 1)]


async def test_first_waits_for_a_report(tmp_path: Path) -> None:
    buffer = ReportBuffer(tmp_path / "reports", capacity=10)
    waiting = asyncio.create_task(buffer.first())
    await asyncio.sleep(0)  # let it start waiting on the empty buffer
    assert not waiting.done()

    await buffer.put(_report("a", 1))

    pending = await asyncio.wait_for(waiting, 5)
    assert (pending.request.attempt_id, pending.request.sequence) == ("a", 1)


async def test_a_report_is_never_visible_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "reports"
    buffer = ReportBuffer(directory, capacity=10)
    seen_while_syncing: list[list[str]] = []
    real_fsync = os.fsync

    def observing_fsync(fd: int) -> None:
        seen_while_syncing.append(_files(directory))
        real_fsync(fd)

    monkeypatch.setattr(report_buffer.os, "fsync", observing_fsync)
    await buffer.put(_report("a", 1))

    # While the bytes go to disk only the temporary file exists; then the report, whole.
    [temporary] = seen_while_syncing[0]
    assert temporary.startswith(".tmp-") and temporary.endswith(".tmp")
    assert _files(directory) == ["00000000000000000000.report"]
    assert read_report(directory / "00000000000000000000.report") == _report("a", 1)


async def test_a_write_cut_short_leaves_nothing_to_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "reports"
    buffer = ReportBuffer(directory, capacity=10)

    def failing_replace(source: object, target: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report_buffer.os, "replace", failing_replace)
    await buffer.put(_report("a", 1))
    monkeypatch.undo()

    # Kept for delivery by this process, but nothing half-written is left on disk.
    assert len(buffer) == 1
    assert _files(directory) == []
    assert "keeping it in memory only" in caplog.text
    pending = await buffer.first()
    buffer.remove(pending)

    # A temporary file left by a crash mid-write was never queued: it is discarded.
    (directory / "00000000000000000007.report.tmp").write_bytes(b"FFR1\x00\x01")
    assert len(ReportBuffer(directory, capacity=10)) == 0
    assert _files(directory) == []


async def test_a_full_buffer_drops_the_oldest_report_and_its_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "reports"
    buffer = ReportBuffer(directory, capacity=2)
    await buffer.put(_report("a", 1, RUNNING))
    in_flight = await buffer.first()  # the reporter is sending it when the buffer overflows
    await buffer.put(_report("b", 1))
    with caplog.at_level(logging.WARNING):
        await buffer.put(_report("a", 2, SUCCEEDED))

    assert "attempt a: report buffer full (2), dropping its RUNNING report (sequence 1)" in (
        caplog.text
    )
    assert len(_files(directory)) == 2
    buffer.remove(in_flight)  # already dropped: nothing else goes
    assert len(buffer) == 2

    # A smaller bound on the next start keeps the newest reports.
    assert await _drain(ReportBuffer(directory, capacity=1)) == [("a", 2)]
    assert _files(directory) == []


async def test_corrupt_files_are_set_aside_and_the_rest_replayed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "reports"
    buffer = ReportBuffer(directory, capacity=10)
    for attempt_id in ("a", "b", "c", "d", "e"):
        await buffer.put(_report(attempt_id, 1))
    names = _files(directory)
    (directory / names[1]).write_bytes(os.urandom(64))  # garbage
    truncated = (directory / names[2]).read_bytes()[:-3]
    (directory / names[2]).write_bytes(truncated)  # checksum no longer matches
    no_attempt = agent_pb2.ReportStatusRequest(sequence=1, state=RUNNING).SerializeToString()
    (directory / names[3]).write_bytes(report_buffer._frame(no_attempt))
    (directory / "notes.report").write_text("not a report")

    with caplog.at_level(logging.ERROR):
        reopened = ReportBuffer(directory, capacity=10)
        await reopened.put(_report("f", 1))

    assert await _drain(reopened) == [("a", 1), ("e", 1), ("f", 1)]
    assert _files(directory) == sorted(
        [
            f"{names[1]}.corrupt",
            f"{names[2]}.corrupt",
            f"{names[3]}.corrupt",
            "notes.report.corrupt",
        ]
    )
    assert "wrong magic" in caplog.text
    assert "checksum mismatch" in caplog.text
    assert "without attempt id" in caplog.text
    assert "not a report index" in caplog.text


def test_read_report_rejects_a_short_file(tmp_path: Path) -> None:
    path = tmp_path / "00000000000000000000.report"
    path.write_bytes(b"FF")
    with pytest.raises(CorruptReportError, match="shorter than its header"):
        read_report(path)


async def test_fencing_tokens_name_attempts_with_a_final_report_pending(tmp_path: Path) -> None:
    buffer = ReportBuffer(tmp_path / "reports", capacity=10)
    await buffer.put(_report("running", 1, RUNNING, fencing_token=3))
    await buffer.put(_report("done", 1, RUNNING, fencing_token=4))
    await buffer.put(_report("done", 2, SUCCEEDED, fencing_token=4))

    assert buffer.fencing_tokens() == {"done": 4}
    assert ReportBuffer(tmp_path / "reports", capacity=10).fencing_tokens() == {"done": 4}


async def test_a_report_carrying_a_report_secret_is_never_written(tmp_path: Path) -> None:
    buffer = ReportBuffer(tmp_path / "reports", capacity=10)
    signed = _report("a", 1)
    signed.report_secret = "ffl_must-not-reach-the-disk"
    with pytest.raises(ValueError, match="report secret"):
        await buffer.put(signed)
    assert len(buffer) == 0 and _files(tmp_path / "reports") == []
    await buffer.put(_report("a", 1))
    assert buffer.attempt_ids() == {"a"}


async def test_a_report_is_deliverable_while_its_file_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The round trip to the control plane does not wait for the fsyncs; a report delivered
    before its file is in place leaves no file behind once it is."""
    import threading

    may_write = threading.Event()
    write = report_buffer._write_durably

    def slow_write(path: Path, data: bytes) -> None:
        assert may_write.wait(10)
        write(path, data)

    monkeypatch.setattr(report_buffer, "_write_durably", slow_write)
    directory = tmp_path / "reports"
    buffer = ReportBuffer(directory, capacity=10)
    putting = asyncio.create_task(buffer.put(_report("a", 2, SUCCEEDED)))

    pending = await asyncio.wait_for(buffer.first(), 5)  # before any byte is on disk
    assert (pending.request.attempt_id, pending.writing) == ("a", True)
    assert buffer.fencing_tokens() == {"a": 1}  # the agent still answers for it
    assert not putting.done()  # put still keeps its promise: on disk when it returns
    buffer.remove(pending)  # delivered
    may_write.set()
    await putting
    assert _files(directory) == []


async def test_a_running_report_is_deliverable_but_never_written(tmp_path: Path) -> None:
    # Lost with the process, it loses nothing: the attempt's process is gone with it, and
    # its final report, on disk, is taken without it (LEASED may move to an end directly).
    directory = tmp_path / "reports"
    buffer = ReportBuffer(directory, capacity=10)
    await buffer.put(_report("a", 1, RUNNING))
    assert _files(directory) == []
    assert (await buffer.first()).request == _report("a", 1, RUNNING)
    await buffer.put(_report("a", 2, SUCCEEDED))
    assert len(_files(directory)) == 1

    assert await _drain(ReportBuffer(directory, capacity=10)) == [("a", 2)]
