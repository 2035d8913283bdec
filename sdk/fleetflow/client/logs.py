"""Following what an execution's task attempts print: `follow_logs` reads each attempt's
stored output as it grows and yields the lines added since the last read."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

import httpx

from fleetflow.api_models.executions import AttemptLog, AttemptPublic, ExecutionPublic
from fleetflow.states import AttemptState

if TYPE_CHECKING:
    from fleetflow.client.executions import Executions

_NOT_STARTED = frozenset({AttemptState.PENDING, AttemptState.ASSIGNED, AttemptState.LEASED})
_LOG_MATCH_CHARS = 4096  # how much of the last read output locates it in the next read
GAP_TEXT = "[output lost here: it outgrew what the control plane keeps between two reads]"


@dataclass(frozen=True)
class LogLine:
    """One line a task attempt printed, as `Client.follow_logs` yields it.

    Attributes:
        attempt_id: the attempt (`at-…`).
        node_id: its node (`n1-train`).
        map_index: its element of a map node; None for other nodes.
        attempt_number: 1 for the first try, 2 for the first retry…
        text: the line, without its line break.
        gap: True for a marker, not a printed line: output was lost here (the attempt printed
            more than the control plane keeps between two reads).
    """

    attempt_id: str
    node_id: str
    map_index: int | None
    attempt_number: int
    text: str
    gap: bool = False

    @classmethod
    def of(cls, attempt: AttemptPublic | AttemptLog, text: str, *, gap: bool = False) -> LogLine:
        """A line `attempt` printed (a marker when `gap`)."""
        attempt_id = attempt.id if isinstance(attempt, AttemptPublic) else attempt.attempt_id
        return cls(
            attempt_id, attempt.node_id, attempt.map_index, attempt.attempt_number, text, gap
        )


@dataclass
class _LogCursor:
    """What was read of one attempt's stored output, to yield only what was added since."""

    attempt: AttemptPublic
    read_length: int = 0  # length of the text last read
    tail: str = ""  # its last characters, to find where it ends in the next read
    partial: str = ""  # a line not yet ended by a line break
    ended_at: float | None = None  # monotonic time the attempt was first seen ended
    done: bool = False

    def lines(self, text: str | None, *, final: bool) -> Iterator[LogLine]:
        """The lines `text` (the whole stored output now) adds; the unfinished last one too
        when `final`."""
        if text is not None:
            end = self.read_length
            if len(text) >= end and text[end - len(self.tail) : end] == self.tail:
                added, gap = text[end:], False  # it only grew: the usual case
            else:  # the stored window moved on (it keeps the last MiB): find where we were
                at = text.rfind(self.tail) if self.tail else -1
                added, gap = (text[at + len(self.tail) :], False) if at >= 0 else (text, True)
            self.read_length, self.tail = len(text), text[-_LOG_MATCH_CHARS:]
            if gap:
                if self.partial:
                    yield LogLine.of(self.attempt, self.partial)
                    self.partial = ""
                yield LogLine.of(self.attempt, GAP_TEXT, gap=True)
            *complete, self.partial = (self.partial + added).split("\n")
            for line in complete:
                yield LogLine.of(self.attempt, line.removesuffix("\r"))
        if final and self.partial:
            yield LogLine.of(self.attempt, self.partial.removesuffix("\r"))
            self.partial = ""


def _server_time(response: httpx.Response) -> datetime | None:
    """The control plane's clock (the `Date` header), to judge its timestamps without ours."""
    try:
        return parsedate_to_datetime(response.headers["date"])
    except (KeyError, TypeError, ValueError):
        return None


def follow_logs(
    executions: Executions,
    execution_id: str,
    *,
    node: str | None,
    attempt: int | None,
    poll_interval: float,
    final_log_grace: float,
) -> Iterator[LogLine]:
    """`Client.follow_logs`, which documents it."""
    cursors: dict[str, _LogCursor] = {}
    while True:
        response = executions.transport.request("GET", executions.path(execution_id))
        execution = ExecutionPublic.model_validate_json(response.content)
        server_now = _server_time(response)
        now = time.monotonic()
        execution_over = execution.status.terminal
        reading: list[tuple[_LogCursor, bool]] = []
        for entry in execution.attempts:
            if entry.cache_hit or (node is not None and entry.node_id != node):
                continue
            if attempt is not None and entry.attempt_number != attempt:
                continue
            cursor = cursors.setdefault(entry.id, _LogCursor(entry))
            cursor.attempt = entry
            ended = entry.status.terminal or execution_over
            if cursor.done or (entry.status in _NOT_STARTED and not ended):
                continue
            if ended and cursor.ended_at is None:
                cursor.ended_at = now
                finished = entry.finished_at
                if server_now and finished:  # long over: its final output is stored
                    if (server_now - finished).total_seconds() > final_log_grace + 1:
                        cursor.ended_at = now - final_log_grace
            final = cursor.ended_at is not None and now - cursor.ended_at >= final_log_grace
            reading.append((cursor, final))
        if reading:
            ids = [cursor.attempt.id for cursor, _ in reading]
            logs = {a.attempt_id: a.log for a in executions.logs(execution_id, attempt_ids=ids)}
            for cursor, final in reading:
                yield from cursor.lines(logs.get(cursor.attempt.id), final=final)
                cursor.done = final
        if execution_over and all(cursor.done for cursor in cursors.values()):
            return
        time.sleep(poll_interval)
