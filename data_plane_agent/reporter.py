"""Status reports, from an attempt's state change to the control plane's answer.

Each report is numbered per attempt (RUNNING is 1, the terminal state 2; an adopted attempt
continues above any number its previous agent process can have used), fenced with its lease's
token, and queued in a bounded buffer on disk (`report_buffer`, under `<work_dir>/reports/`),
so that reports made while the control plane is unreachable are sent once it is back, even by
the next agent process if this one dies first. The delivery loop sends what is waiting over the
current session, many reports per call (`ReportStatuses`; one per call to a control plane that
predates it), each attempt's in order, retrying outages and (a bounded number of times) server
errors.

Each lease comes with a report secret that the control plane requires on the attempt's
reports. It is kept apart from the `TaskAssignment` executors see: in memory, and on disk only
in its lease file (`lease_store`, `<work_dir>/leases/<attempt_id>.json`, mode 0600 in a 0700
directory), written before the attempt is launched where its process outlives the agent (a
pod), else while it is staged and before its final report is buffered (what a restarted agent
replays), and deleted once its last report is settled. Never in a buffered report (it is
added as the report is sent), a log line, or the task's environment or arguments. So it
survives a reconnection, the control plane's restart (which keeps only its hash) and this
process's: the next agent process on the same work dir loads the lease files, and the reports
it replays, or makes for the pods it adopts, carry their secrets.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
from pydantic import SecretStr

from data_plane_agent.attempts import AttemptEvent, TaskAssignment
from data_plane_agent.lease_store import LEASES_DIR, LeaseStore, names_a_lease_file
from data_plane_agent.log_fields import AttemptLogFields
from data_plane_agent.pacing import Backoff
from data_plane_agent.protocol import (
    ReportAnswer,
    is_final_report,
    report_request,
    with_report_secret,
)
from data_plane_agent.report_buffer import REPORTS_DIR, PendingReport, ReportBuffer
from data_plane_agent.session import Session
from data_plane_agent.settings import AgentSettings
from fleetflow.agent.v1.agent_pb2 import ReportStatusRequest

# The agent loop's parts log under the one name operators know them by.
logger = logging.getLogger("data_plane_agent.agent")

MAX_REPORT_TRIES = 10
"""Tries for a report the control plane answers with a server-side error (not for outages)."""
REPORT_BATCH = 64
"""The most reports sent in one call: the control plane's `MAX_REPORTS_PER_CALL`."""
RUNNING_REPORT_LINGER_SECONDS = 0.025
"""How long RUNNING reports wait for a final report to go with them. A short task's end then
shares their call: one call and one commit on the control plane instead of two, and no call
competing with the task's start for the CPU. Final reports never wait."""
REPORT_WINDOW = 2
"""Calls under way at once. Whatever waits meanwhile goes in the next call, so a burst of
reports (a fan-out's) takes a call or two, and one slow answer holds up no other attempt."""

# The control plane is away: a report is kept until it gets through.
_OUTAGE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})
# The control plane answered but failed: retried a bounded number of times.
_SERVER_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)


class Reporter:
    """Numbers, buffers and delivers the status reports of the agent's leases.

    An attempt is *open* from its lease (or adoption) to its terminal report; a lease's secret
    is kept while the attempt is open or a report of it waits in the buffer.

    Args:
        settings: The work dir, the buffer's bound, the backoff between tries.
        session: The session reports go over.
        log_fields: The log fields of the attempts reported on.
    """

    def __init__(
        self, settings: AgentSettings, session: Session, log_fields: AttemptLogFields
    ) -> None:
        self._settings = settings
        self._session = session
        self._log_fields = log_fields
        # Loads what a previous agent process could not deliver; replayed once registered.
        self._reports = ReportBuffer(settings.work_dir / REPORTS_DIR, settings.max_buffered_reports)
        # The open attempts, with the count of reports made for each.
        self._sequences: dict[str, int] = {}
        # Attempt id -> (fencing token, report secret) of the leases this agent answers for,
        # mirrored in `_leases` on disk (with those a previous process left, loaded here).
        self._leases = LeaseStore(settings.work_dir / LEASES_DIR)
        self._report_secrets: dict[str, tuple[int, SecretStr]] = self._leases.load()
        # Whether the control plane takes several reports per call (until it says it does not).
        self._batches = True
        # Attempt id -> its lease file being written (`store_lease_meanwhile`).
        self._storing: dict[str, asyncio.Task[None]] = {}

    # ----------------------------------------------------------------------------- leases

    def open_lease(self, assignment: TaskAssignment, report_secret: SecretStr) -> None:
        """Begin reporting on a newly leased attempt, whose reports count from 1.

        A new lease (a new fencing token) replaces the secret of any earlier one; `store_lease`
        (or `store_lease_meanwhile`) puts it on disk.
        """
        attempt_id = assignment.attempt_id
        self._sequences[attempt_id] = 0
        self._report_secrets[attempt_id] = (assignment.fencing_token, report_secret)
        remembered = self._settings.max_buffered_reports + self._settings.max_parallel
        if len(self._report_secrets) > remembered:
            # Reports the full buffer dropped leave their secrets behind: forget them.
            for leased in list(self._report_secrets):
                self._forget_report_secret(leased)

    def adopt(self, assignments: list[TaskAssignment]) -> None:
        """Continue reporting on attempts a previous agent process launched.

        Their reports continue from a sequence number above any the previous process can
        have used (milliseconds since the epoch), so none is dropped as a duplicate, and carry
        the report secret the previous process stored in the attempt's lease file.
        """
        base = time.time_ns() // 1_000_000
        for assignment in assignments:
            self._sequences[assignment.attempt_id] = base

    def forget_unclaimed_leases(self) -> None:
        """Forget a previous process's leases neither adopted nor with a report left: nothing
        more will be reported under them."""
        for leased in list(self._report_secrets):
            self._forget_report_secret(leased)

    async def store_lease(self, assignment: TaskAssignment, report_secret: SecretStr) -> None:
        """Put the lease's secret on disk, for the next agent process should this one die
        before the attempt's last report is settled. Failing that, it stays in memory only."""
        attempt_id = assignment.attempt_id
        if not names_a_lease_file(attempt_id):
            logger.warning(
                "attempt %s: its id is not of the form at-<hex>; its report secret is kept in "
                "memory only and dies with this process",
                attempt_id,
            )
            return
        try:
            await asyncio.to_thread(
                self._leases.save, attempt_id, assignment.fencing_token, report_secret
            )
        except OSError as exc:
            logger.error(
                "attempt %s: could not store its report secret in %s (%s); keeping it in "
                "memory only",
                attempt_id,
                self._leases.directory,
                exc,
            )

    def store_lease_meanwhile(self, assignment: TaskAssignment, report_secret: SecretStr) -> None:
        """`store_lease` in the background, for an attempt whose process dies with this agent:
        its lease file matters only to its final report buffered on disk (replayed by the next
        agent process), and that report waits for it (`report`). Writing it durably was 1-3 ms
        of every launch; the supervisor starts it once the attempt's process has started."""
        attempt_id = assignment.attempt_id
        storing = asyncio.create_task(
            self.store_lease(assignment, report_secret), name=f"lease-file-{attempt_id}"
        )
        self._storing[attempt_id] = storing

        def stored(task: asyncio.Task[None]) -> None:
            if self._storing.get(attempt_id) is task:
                del self._storing[attempt_id]

        storing.add_done_callback(stored)

    # ---------------------------------------------------------------------------- reports

    async def report(self, event: AttemptEvent, fencing_token: int) -> None:
        """Queue the report of an open attempt's state change; it is on disk when this
        returns."""
        storing = self._storing.get(event.attempt_id)
        if storing is not None and event.state.terminal:
            # Its lease file first (the report may be replayed from disk), however that ended.
            await asyncio.wait((storing,))
        sequence = self._sequences[event.attempt_id] + 1
        self._sequences[event.attempt_id] = sequence
        await self._reports.put(
            report_request(event, fencing_token=fencing_token, sequence=sequence)
        )

    def close_attempt(self, attempt_id: str) -> None:
        """The attempt's last report is queued: once it is settled, its secret goes too."""
        self._sequences.pop(attempt_id, None)
        self._forget_report_secret(attempt_id)

    def final_report_tokens(self) -> dict[str, int]:
        """Attempt id -> fencing token of the attempts whose final report is still to deliver
        (see `ReportBuffer.fencing_tokens`)."""
        return self._reports.fencing_tokens()

    @property
    def report_secrets(self) -> dict[str, tuple[int, SecretStr]]:
        """Attempt id -> (fencing token, report secret) of the leases still answered for."""
        return self._report_secrets

    async def deliver_reports(self) -> None:
        """Send the buffered reports, for ever: what is waiting goes in one call, up to
        `REPORT_BATCH` reports, with up to `REPORT_WINDOW` calls under way; an attempt's
        reports in order, none while an earlier one is on its way.

        A burst (a buffer replayed after an outage, a wide fan-out's ends) goes out in a few
        calls, each one token lookup, thread hop and commit on the control plane, instead of
        one of each per report. A control plane older than `ReportStatuses` gets the same
        reports one per call, side by side."""
        backoff = Backoff(
            self._settings.reconnect_initial_backoff_seconds,
            self._settings.reconnect_max_backoff_seconds,
        )
        sending: dict[str, asyncio.Task[None]] = {}  # attempt id -> the call carrying its report
        calls: set[asyncio.Task[None]] = set()
        try:
            while True:
                if len(calls) >= REPORT_WINDOW:
                    await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
                    continue
                batch = await self._reports.next_batch(sending.keys(), REPORT_BATCH)
                if not any(is_final_report(pending.request) for pending in batch):
                    await self._reports.wait_for_final(
                        sending.keys(), RUNNING_REPORT_LINGER_SECONDS
                    )
                    batch = await self._reports.next_batch(sending.keys(), REPORT_BATCH)
                await self._session.wait_registered()
                call = asyncio.create_task(
                    self._deliver(batch, backoff, sending), name="report-call"
                )
                calls.add(call)
                call.add_done_callback(calls.discard)
                for pending in batch:
                    sending[pending.request.attempt_id] = call
        finally:
            for call in calls:
                call.cancel()

    async def _deliver(
        self,
        batch: list[PendingReport],
        backoff: Backoff,
        sending: dict[str, asyncio.Task[None]],
    ) -> None:
        """One try at a batch; a report to try again stays in the buffer, the first of its
        attempt, after a pause."""
        try:
            retries = []
            for pending, answer in zip(batch, await self._answers(batch), strict=True):
                error = self._take_answer(pending, answer)
                if error is not None:
                    retries.append((pending, error))
            if not retries:
                backoff.reset()
                return
            delay = backoff.next_delay()
            for pending, error in retries:
                with self._log_fields.of(pending.request.attempt_id):
                    logger.warning(
                        "attempt %s: could not send its %s (%s: %s); retrying in %.1fs",
                        pending.request.attempt_id,
                        pending.describe(),
                        error.code().name,
                        error.details(),
                        delay,
                    )
            await asyncio.sleep(delay)  # pacing between retries
        except Exception:
            logger.exception("could not send %d status report(s)", len(batch))
            await asyncio.sleep(backoff.next_delay())  # pacing: no busy loop on a bug
        finally:
            for pending in batch:
                sending.pop(pending.request.attempt_id, None)
            self._reports.wake()

    async def _answers(
        self, batch: list[PendingReport]
    ) -> list[ReportAnswer | grpc.aio.AioRpcError]:
        """The control plane's answer to each report, or the error its call failed with."""
        requests = [self._with_report_secret(pending.request) for pending in batch]
        if self._batches:
            try:
                return list(await self._session.report_statuses(requests))
            except grpc.aio.AioRpcError as exc:
                if exc.code() is not grpc.StatusCode.UNIMPLEMENTED:
                    return [exc] * len(requests)
                self._batches = False
                logger.info(
                    "the control plane predates ReportStatuses: sending reports one per call"
                )
        return list(await asyncio.gather(*(self._answer(request) for request in requests)))

    async def _answer(self, request: ReportStatusRequest) -> ReportAnswer | grpc.aio.AioRpcError:
        try:
            return await self._session.report_status(request)
        except grpc.aio.AioRpcError as exc:
            return exc

    def _take_answer(
        self, pending: PendingReport, answer: ReportAnswer | grpc.aio.AioRpcError
    ) -> grpc.aio.AioRpcError | None:
        """Settle the report by its answer, and log it; or the error to send it again after
        (an outage, or a server error within `MAX_REPORT_TRIES`: the caller logs those)."""
        attempt_id = pending.request.attempt_id
        with self._log_fields.of(attempt_id):
            if isinstance(answer, grpc.aio.AioRpcError):
                pending.tries += 1
                code = answer.code()
                if code in _OUTAGE_CODES or (
                    code in _SERVER_ERROR_CODES and pending.tries < MAX_REPORT_TRIES
                ):
                    return answer
                if code is not grpc.StatusCode.PERMISSION_DENIED:
                    logger.error(
                        "attempt %s: giving up on its %s after %d tries (%s: %s)",
                        attempt_id,
                        pending.describe(),
                        pending.tries,
                        code.name,
                        answer.details(),
                    )
                    self._settle(pending)
                    return None
                answer = ReportAnswer(False, answer.details() or "", refused=True)
            self._settle(pending)
            self._log_answer(pending, answer)
        return None

    def _log_answer(self, pending: PendingReport, answer: ReportAnswer) -> None:
        attempt_id = pending.request.attempt_id
        if answer.refused:
            # Not this lease's report to make (or its secret was lost with the agent process
            # that leased it): sending it again cannot help.
            logger.error(
                "attempt %s: the control plane refused its %s: %s",
                attempt_id,
                pending.describe(),
                answer.reason,
            )
        elif answer.accepted:
            # A RUNNING report is routine (the executor logged the start): worth a line only
            # when debugging; the last report's delivery is where the result became safe.
            level = logging.INFO if is_final_report(pending.request) else logging.DEBUG
            logger.log(level, "attempt %s: delivered its %s", attempt_id, pending.describe())
        else:
            logger.info(
                "attempt %s: the control plane ignored its %s: %s",
                attempt_id,
                pending.describe(),
                answer.reason or "no reason given",
            )

    async def flush(self) -> None:
        """At shutdown: give the reports a last chance to go out over a live session, within
        the settings' deadline; say how many are left for the next start."""
        if self._session.registered:
            try:
                await asyncio.wait_for(
                    self._reports.wait_empty(), self._settings.shutdown_report_seconds
                )
            except TimeoutError:
                pass
        if len(self._reports):
            logger.warning(
                "%d status report(s) could not be delivered before shutdown; kept in %s for the "
                "next start",
                len(self._reports),
                self._reports.directory,
            )

    def _with_report_secret(self, request: ReportStatusRequest) -> ReportStatusRequest:
        """The report as sent: with the secret of its lease, when this agent holds it."""
        held = self._report_secrets.get(request.attempt_id)
        if held is None or held[0] != request.fencing_token:
            return request  # a lease whose secret was lost, or an earlier lease's report
        return with_report_secret(request, held[1])

    def _settle(self, pending: PendingReport) -> None:
        """Done with a report (delivered, ignored or refused): off the buffer and, when it was
        the attempt's last, its lease's secret out of memory and off the disk."""
        self._reports.remove(pending)
        self._forget_report_secret(pending.request.attempt_id)

    def _forget_report_secret(self, attempt_id: str) -> None:
        """Forget a lease's secret once nothing more will be reported under it."""
        if attempt_id not in self._sequences and attempt_id not in self._reports.attempt_ids():
            if self._report_secrets.pop(attempt_id, None) is not None:
                self._leases.delete(attempt_id)
