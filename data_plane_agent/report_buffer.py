"""Status reports waiting for the control plane, kept on disk so that none is lost.

While the control plane is unreachable an attempt may finish; its report must survive not only
the outage but the agent's own restart (a crash, an upgrade, a SIGKILL from the kubelet), or the
control plane would mark the attempt LOST and run it again although it succeeded. Each pending
`ReportStatusRequest` is therefore one file under the buffer directory (`<work_dir>/reports/`):

- `<index>.report`, where `index` is a zero-padded counter, so that the names sort in the order
  the reports were made; a new process continues after the highest index it finds;
- the contents: a header (magic and CRC-32 of the payload) then the serialized protobuf, so a
  damaged file is recognised rather than parsed into a wrong report;
- written atomically: to `<index>.report.tmp`, fsynced, renamed into place, directory fsynced.
  A report counts as queued only once its file is in place; a `.tmp` left by a crash was never
  queued and is deleted on the next start;
- only final reports (an attempt's end) are written: a RUNNING report is kept in memory (see
  `ReportBuffer.put`).

A report is stored without its lease's report secret, and `put` refuses one that carries a
secret: the agent adds it as it sends. The secrets have one place on disk of their own
(`lease_store`, `<work_dir>/leases/`), from which the next agent process on the same work dir
loads them, so the reports it replays here still go out with theirs.

A report is queued for delivery as its file is being written, not after: the round trip to the
control plane need not wait for two fsyncs. That loses nothing a crash could not already take:
a crash before the file is in place finds the report either delivered or never made, as if the
agent had died a moment before making it (the state change it reports lives in this process's
memory until then). A report settled (delivered or dropped) while its file is still being
written loses its file once written.

A file removed when its report was delivered may reappear after a crash (the unlink is not
fsynced): it is sent again and the control plane ignores it as a duplicate sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import struct
import zlib
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from data_plane_agent.protocol import is_final_report, report_from_bytes, report_state_name
from fleetflow.agent.v1.agent_pb2 import ReportStatusRequest
from fleetflow.storage.local import TEMPORARY_SUFFIX, write_atomically

logger = logging.getLogger(__name__)

REPORTS_DIR = "reports"
"""Under the work directory: status reports not yet delivered."""
REPORT_SUFFIX = ".report"
CORRUPT_SUFFIX = ".corrupt"
_MAGIC = b"FFR1"
_HEADER = struct.Struct(">4sI")  # magic, CRC-32 of the payload
_INDEX_DIGITS = 20


class CorruptReportError(ValueError):
    """A buffered report file cannot be read back as a status report."""


@dataclass(eq=False)
class PendingReport:
    """One report waiting for delivery; `path` is None when it could not be persisted."""

    request: ReportStatusRequest
    path: Path | None
    tries: int = 0
    writing: bool = False
    """Its file is still being written."""
    settled: bool = False
    """Delivered or dropped: its file goes (once written)."""

    def describe(self) -> str:
        return f"{report_state_name(self.request)} report (sequence {self.request.sequence})"


class ReportBuffer:
    """Status reports waiting for delivery, oldest first, at most `capacity` of them; the
    final ones on disk (a RUNNING one in memory only).

    Opening a buffer loads what a previous process left in `directory`: files that cannot be
    read are logged and renamed to `*.corrupt`, never fatal. The agent's reporter takes each
    attempt's reports in order with `next_batch` (several attempts' at once), and `remove`s each
    one once the control plane accepted or definitively rejected it.

    When full, `put` drops the oldest report (and its file) with a warning. That is safe: a
    dropped RUNNING report is superseded by the attempt's later reports (the control plane
    only needs sequences to increase), and an attempt whose final report was dropped is no
    longer among those the agent lists as held when it registers and heartbeats, so the control
    plane's reconciliation marks it LOST and runs it again elsewhere. The bound trades a rerun
    for a full disk.

    Args:
        directory: Where the report files live (created if missing).
        capacity: The most reports kept; on opening, older ones beyond it are dropped.
    """

    def __init__(self, directory: Path, capacity: int) -> None:
        self._directory = Path(directory)
        self._capacity = capacity
        self._reports: deque[PendingReport] = deque()
        self._next_index = 0
        self._write_lock = asyncio.Lock()
        self._not_empty = asyncio.Event()
        self._changed = asyncio.Event()  # a report came or went: see `next_batch`
        self._empty = asyncio.Event()
        self._load()

    @property
    def directory(self) -> Path:
        return self._directory

    def __len__(self) -> int:
        return len(self._reports)

    def _load(self) -> None:
        self._directory.mkdir(parents=True, exist_ok=True)
        for leftover in self._directory.glob(f"*{TEMPORARY_SUFFIX}"):
            logger.info("removing %s, a report write cut short by a crash", leftover)
            leftover.unlink(missing_ok=True)
        indexed: list[tuple[int, Path]] = []
        for path in self._directory.glob(f"*{REPORT_SUFFIX}"):
            stem = path.name.removesuffix(REPORT_SUFFIX)
            if stem.isdigit():
                indexed.append((int(stem), path))
            else:
                _set_aside(path, "its name is not a report index")
        indexed.sort()
        if indexed:
            self._next_index = indexed[-1][0] + 1
        for _, path in indexed:
            try:
                request = read_report(path)
            except CorruptReportError as exc:
                _set_aside(path, str(exc))
                continue
            self._make_room()
            self._reports.append(PendingReport(request, path))
        if self._reports:
            logger.info(
                "%d status report(s) left by a previous agent process in %s will be replayed",
                len(self._reports),
                self._directory,
            )
        self._update_events()

    async def put(self, request: ReportStatusRequest) -> None:
        """Queue a report, deliverable at once; a final one is on disk when this returns
        (unless the disk failed: logged), a RUNNING one is kept in memory only.

        A RUNNING report lost with this process loses nothing: its attempt's process is gone
        with it (`fencing_tokens`), and an attempt may go from LEASED to its end directly, so
        a final report replayed without it is still taken. Writing it cost a file, two fsyncs
        and an unlink per attempt.

        Raises:
            ValueError: The report carries a report secret, which must never reach the disk.
        """
        if request.report_secret:
            raise ValueError("a report secret must not be buffered: set it only when sending")
        if not is_final_report(request):
            # Without the write lock: an attempt's reports are put one after the other (the
            # agent's one event pump), so they stay in order without waiting for others' files.
            self._make_room()
            self._reports.append(PendingReport(request, None))
            self._update_events()
            return
        async with self._write_lock:  # files are numbered and queued in the order of the calls
            self._make_room()
            path = self._directory / f"{self._next_index:0{_INDEX_DIGITS}d}{REPORT_SUFFIX}"
            self._next_index += 1
            report = PendingReport(request, path, writing=True)
            self._reports.append(report)  # deliverable while its file is written
            self._update_events()
            try:
                await asyncio.to_thread(_write_durably, path, encode_report(request))
            except OSError as exc:
                # Still delivered if this process lives on; only a restart would lose it.
                logger.error(
                    "attempt %s: could not persist a status report to %s (%s); keeping it in "
                    "memory only",
                    request.attempt_id,
                    path,
                    exc,
                )
                report.path = None
            finally:
                report.writing = False
            if report.settled:
                _unlink(report)

    def _make_room(self) -> None:
        while len(self._reports) >= self._capacity:
            dropped = self._reports.popleft()
            logger.warning(
                "attempt %s: report buffer full (%d), dropping its %s",
                dropped.request.attempt_id,
                self._capacity,
                dropped.describe(),
            )
            _settle(dropped)

    async def first(self) -> PendingReport:
        """The oldest report, waiting for one if the buffer is empty."""
        while not self._reports:
            await self._not_empty.wait()
        return self._reports[0]

    async def next_batch(self, excluded: Collection[str], limit: int) -> list[PendingReport]:
        """The oldest `limit` reports of attempts not in `excluded` (those whose reports are
        being sent), oldest first, waiting for one: an attempt's reports go out in order, and
        none while an earlier one is on its way."""
        while True:
            ready = (r for r in self._reports if r.request.attempt_id not in excluded)
            batch = list(itertools.islice(ready, limit))
            if batch:
                return batch
            self._changed.clear()
            await self._changed.wait()

    async def wait_for_final(self, excluded: Collection[str], timeout: float) -> None:
        """Until a final report of an attempt not in `excluded` waits here, or `timeout`
        seconds have passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not any(
            is_final_report(r.request)
            for r in self._reports
            if r.request.attempt_id not in excluded
        ):
            left = deadline - loop.time()
            if left <= 0:
                return
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def wake(self) -> None:
        """`next_batch`'s waiters look again (what they exclude changed)."""
        self._changed.set()

    def remove(self, report: PendingReport) -> None:
        """Forget a report `first` or `next_batch` returned (a no-op if it was dropped
        meanwhile)."""
        with contextlib.suppress(ValueError):  # dropped by `_make_room` meanwhile
            self._reports.remove(report)  # by identity: reports compare so
            _settle(report)
        self._update_events()

    async def wait_empty(self) -> None:
        await self._empty.wait()

    def attempt_ids(self) -> set[str]:
        """The attempts with a report waiting here."""
        return {r.request.attempt_id for r in self._reports}

    def fencing_tokens(self) -> dict[str, int]:
        """Attempt id -> fencing token of every attempt whose final report is still to deliver.

        The agent still answers for these attempts although they no longer run. An attempt with
        only a RUNNING report here is not one of them: in this process it is still active, and
        after a restart its process is gone with the previous agent, so it is rightly lost.
        """
        return {
            r.request.attempt_id: r.request.fencing_token
            for r in self._reports
            if is_final_report(r.request)
        }

    def _update_events(self) -> None:
        self._changed.set()
        if self._reports:
            self._not_empty.set()
            self._empty.clear()
        else:
            self._not_empty.clear()
            self._empty.set()


def read_report(path: Path) -> ReportStatusRequest:
    """Read one buffered report file.

    Raises:
        CorruptReportError: The file is unreadable, damaged, or not a status report.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorruptReportError(f"cannot read it: {exc}") from exc
    if len(data) < _HEADER.size:
        raise CorruptReportError("shorter than its header")
    magic, checksum = _HEADER.unpack_from(data)
    payload = data[_HEADER.size :]
    if magic != _MAGIC:
        raise CorruptReportError("not a report file (wrong magic)")
    if zlib.crc32(payload) != checksum:
        raise CorruptReportError("checksum mismatch")
    try:
        request = report_from_bytes(payload)
    except ValueError as exc:
        raise CorruptReportError(f"not a status report: {exc}") from exc
    if not request.attempt_id or request.sequence < 1 or not request.state:
        raise CorruptReportError("a status report without attempt id, sequence or state")
    return request


def encode_report(request: ReportStatusRequest) -> bytes:
    """A report file's contents (header, then payload), as `read_report` reads them back."""
    return _frame(request.SerializeToString())


def _frame(payload: bytes) -> bytes:
    return _HEADER.pack(_MAGIC, zlib.crc32(payload)) + payload


def _write_durably(path: Path, data: bytes) -> None:
    write_atomically(path, lambda f: f.write(data), durable=True)


def _settle(report: PendingReport) -> None:
    """The report is done with: its file goes now, or once `put` has written it."""
    report.settled = True
    if not report.writing:
        _unlink(report)


def _unlink(report: PendingReport) -> None:
    if report.path is None:
        return
    try:
        report.path.unlink(missing_ok=True)
    except OSError as exc:  # it is delivered again after a restart, then ignored as a duplicate
        logger.warning("could not remove the delivered report %s: %s", report.path, exc)


def _set_aside(path: Path, reason: str) -> None:
    corrupt = path.with_name(path.name + CORRUPT_SUFFIX)
    try:
        os.replace(path, corrupt)
    except OSError as exc:
        logger.error("report buffer: %s is corrupt (%s) and stays ignored: %s", path, reason, exc)
        return
    logger.error("report buffer: %s is corrupt (%s); moved aside to %s", path, reason, corrupt)
