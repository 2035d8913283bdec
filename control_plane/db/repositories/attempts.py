"""Task attempt rows: creation, compare-and-set state moves, leasing, agent status reports,
loss, and the outbox of finished attempts their workflows have not heard of yet.

Which PENDING attempt goes where is the scheduler's (`control_plane/placement/`), which moves
attempts through `move_attempt` like everyone else.

Every state change is a compare-and-set `UPDATE … WHERE status = <seen>` after the transition
policy allowed it, so concurrent leases, duplicated or late reports cannot both win.

A lease hands its agent a fresh report secret and keeps only its SHA-256 on the attempt; a
status report is applied only with that secret, so holding the cluster's token is not enough
to decide an attempt's result: one must hold its lease.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import NamedTuple
from typing import cast as typed

from sqlalchemy import Integer, Table, Update, bindparam, select, tuple_, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from control_plane.db.models import (
    DEFAULT_PREEMPTION_GRACE_SECONDS,
    Cluster,
    Cohort,
    CohortMember,
    Execution,
    TaskAttempt,
    new_id,
    utcnow,
)
from control_plane.db.repositories._insert import insert_ignoring_conflicts
from control_plane.lifecycle.reports import fencing_problem, judge_report
from control_plane.lifecycle.transitions import (
    ATTEMPT_TIMESTAMP,
    attempt_values,
    check_attempt_transition,
)
from control_plane.tokens import hash_token, matches_hash, new_lease_secret
from fleetflow.states import NO_MAP_INDEX, AttemptState
from fleetflow.timestamps import as_utc

A = AttemptState
ACTIVE_STATES = (A.ASSIGNED.value, A.LEASED.value, A.RUNNING.value)


def create_attempt(
    session: Session,
    *,
    execution_id: str,
    node_id: str,
    task_name: str,
    attempt_number: int,
    inputs_uri: str,
    outputs_uri: str,
    map_index: int = NO_MAP_INDEX,
    cache_hit: bool = False,
) -> TaskAttempt:
    """Create the attempt, or return the one that already exists (activities retry).

    A cache hit is born SUCCEEDED with the cached outputs: creation, not a state move.
    """
    new = NewAttempt(
        node_id, map_index, task_name, attempt_number, inputs_uri, outputs_uri, cache_hit
    )
    (attempt,) = create_attempts(session, execution_id, [new])
    return attempt


@dataclass(frozen=True)
class NewAttempt:
    """An attempt to create: which try of which unit, and where its inputs and outputs are."""

    node_id: str
    map_index: int
    task_name: str
    attempt_number: int
    inputs_uri: str
    outputs_uri: str
    cache_hit: bool = False
    # The workflow to signal when it finishes, when not the execution's own (a map chunk).
    workflow_id: str | None = None
    # A node of a conditional's branch not taken: born SKIPPED, finished, nothing to signal.
    skipped: bool = False


def create_attempts(
    session: Session, execution_id: str, new: Sequence[NewAttempt]
) -> list[TaskAttempt]:
    """Create the attempts of one execution, each unless it already exists (activities
    retry); returns the rows in the order of `new`, the existing ones as they are now.

    One insert for all and one read back, however many. A cache hit is born SUCCEEDED with
    the cached outputs: creation, not a state move. Creation times increase in `new`'s order,
    which is the order placement offers attempts of equal priority in.
    """
    rows = []
    created: datetime | None = None
    for attempt in new:
        now = utcnow()
        created = now if created is None or now > created else created + timedelta(microseconds=1)
        rows.append(
            {
                "id": new_id("at"),
                "execution_id": execution_id,
                "node_id": attempt.node_id,
                "map_index": attempt.map_index,
                "task_name": attempt.task_name,
                "attempt_number": attempt.attempt_number,
                "status": (
                    A.SKIPPED
                    if attempt.skipped
                    else A.SUCCEEDED
                    if attempt.cache_hit
                    else A.PENDING
                ).value,
                "cache_hit": attempt.cache_hit,
                "inputs_uri": attempt.inputs_uri,
                "outputs_uri": attempt.outputs_uri,
                "created_at": created,
                "finished_at": created if attempt.cache_hit or attempt.skipped else None,
                "signalled_at": created if attempt.skipped else None,
                "workflow_id": attempt.workflow_id,
            }
        )
    insert_ignoring_conflicts(session, TaskAttempt, rows)
    keys = [(a.node_id, a.map_index, a.attempt_number) for a in new]
    found = existing_attempts(session, execution_id, keys)
    return [found[key] for key in keys]


UnitKey = tuple[str, int, int]  # (node id, map index, attempt number): one try of one unit


def existing_attempts(
    session: Session, execution_id: str, keys: Sequence[UnitKey]
) -> dict[UnitKey, TaskAttempt]:
    """The attempts of `keys` that exist, by key (one read)."""
    if not keys:
        return {}
    return {
        (row.node_id, row.map_index, row.attempt_number): row
        for row in session.scalars(
            select(TaskAttempt).where(
                TaskAttempt.execution_id == execution_id,
                tuple_(TaskAttempt.node_id, TaskAttempt.map_index, TaskAttempt.attempt_number).in_(
                    keys
                ),
            )
        )
    }


def find_attempt(
    session: Session,
    execution_id: str,
    node_id: str,
    attempt_number: int,
    map_index: int = NO_MAP_INDEX,
) -> TaskAttempt | None:
    return session.scalar(
        select(TaskAttempt).where(
            TaskAttempt.execution_id == execution_id,
            TaskAttempt.node_id == node_id,
            TaskAttempt.map_index == map_index,
            TaskAttempt.attempt_number == attempt_number,
        )
    )


def skipped_nodes(session: Session, execution_id: str, node_ids: Sequence[str]) -> set[str]:
    """Which of `node_ids` were skipped (their conditional's branch was not taken)."""
    if not node_ids:
        return set()
    return set(
        session.scalars(
            select(TaskAttempt.node_id).where(
                TaskAttempt.execution_id == execution_id,
                TaskAttempt.node_id.in_(list(node_ids)),
                TaskAttempt.status == A.SKIPPED.value,
            )
        )
    )


def succeeded_outputs(
    session: Session, execution_id: str, node_ids: Iterable[str]
) -> dict[tuple[str, int], str]:
    """(node, map index) -> the outputs of the latest succeeded attempt of each unit of
    `node_ids` in the execution: what a recovery of it reuses."""
    rows = session.execute(
        select(TaskAttempt.node_id, TaskAttempt.map_index, TaskAttempt.outputs_uri)
        .where(
            TaskAttempt.execution_id == execution_id,
            TaskAttempt.node_id.in_(set(node_ids)),
            TaskAttempt.status == A.SUCCEEDED.value,
        )
        .order_by(TaskAttempt.attempt_number)
    )
    return {(node_id, map_index): uri for node_id, map_index, uri in rows}


def latest_succeeded_attempt(
    session: Session, execution_id: str, node_id: str, map_index: int = NO_MAP_INDEX
) -> TaskAttempt:
    attempt = session.scalar(
        select(TaskAttempt)
        .where(
            TaskAttempt.execution_id == execution_id,
            TaskAttempt.node_id == node_id,
            TaskAttempt.map_index == map_index,
            TaskAttempt.status == A.SUCCEEDED.value,
        )
        .order_by(TaskAttempt.attempt_number.desc())
    )
    if attempt is None:
        raise LookupError(f"node {node_id} of {execution_id} has no succeeded attempt")
    return attempt


# Every lease and report moves an attempt, and placement assigns and explains on every pass:
# these statements are built once, with every value bound, and are Core statements (on the
# table), which the ORM would otherwise copy and hash again on every execution.
_ATTEMPTS = typed(Table, TaskAttempt.__table__)
_COLUMNS = TaskAttempt.__mapper__.columns  # by attribute name, as moves name them
# A move's compare-and-set, one statement per set of columns it writes (a handful: each
# caller of `move_attempt` writes its own), built on first use.
_MOVES: dict[tuple[str, ...], Update] = {}


def _move(columns: tuple[str, ...]) -> Update:
    statement = _MOVES.get(columns)
    if statement is None:
        statement = _MOVES[columns] = (
            update(_ATTEMPTS)
            .where(
                _ATTEMPTS.c.id == bindparam("attempt_id"),
                _ATTEMPTS.c.status == bindparam("seen_status"),
            )
            .values({_COLUMNS[column]: bindparam(f"new_{column}") for column in columns})
        )
    return statement


def move_attempt(
    session: Session, attempt: TaskAttempt, target: AttemptState, **extra: object
) -> bool:
    """Compare-and-set the attempt's state through the transition policy; False when the
    policy refuses the move or someone else moved it first."""
    if check_attempt_transition(attempt.status, target) is not None:
        return False
    values = {**attempt_values(target, utcnow()), **extra}
    if not _compare_and_set(session, attempt.id, attempt.status, values):
        return False
    # The row now holds what was read plus what was written: set, not read back (a refresh
    # was a SELECT of the whole row per move, two to three moves per attempt).
    for key, value in values.items():
        set_committed_value(attempt, key, value)
    return True


def _compare_and_set(
    session: Session, attempt_id: str, seen_status: str, values: dict[str, object]
) -> bool:
    """Write `values` to the attempt if its status is still `seen_status`; whether it was.
    The session autoflushes before a Core statement as before an ORM one: what it holds is
    written first (a test pins it)."""
    params = {f"new_{column}": value for column, value in values.items()}
    result = session.execute(
        _move(tuple(values)), {"attempt_id": attempt_id, "seen_status": seen_status, **params}
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


# Placement holds no ORM rows: it explains by id.
_EXPLAIN = (
    update(_ATTEMPTS)
    .where(
        _ATTEMPTS.c.id.in_(bindparam("attempt_ids", expanding=True)),
        _ATTEMPTS.c.status == A.PENDING.value,
    )
    .values(pending_reason=bindparam("reason"))
)


def assign_pending(
    session: Session,
    attempt_id: str,
    *,
    cluster_id: str,
    gpu_type: str | None,
    gpu: int,
    cpu: float,
    memory_bytes: int,
    borrowed_gpus: int,
) -> bool:
    """`move_attempt` PENDING -> ASSIGNED by id, for placement, which holds no ORM row:
    compare-and-set, so False when someone else moved the attempt first. Records where it
    goes and what it holds; clears the pending reason."""
    assert check_attempt_transition(A.PENDING, A.ASSIGNED) is None
    values = {
        **attempt_values(A.ASSIGNED, utcnow()),
        "pending_reason": None,
        "cluster_id": cluster_id,
        "gpu_type": gpu_type,
        "gpu": gpu,
        "cpu": cpu,
        "memory_bytes": memory_bytes,
        "borrowed_gpus": borrowed_gpus,
    }
    return _compare_and_set(session, attempt_id, A.PENDING.value, values)


def set_pending_reason(session: Session, attempt_ids: Sequence[str], reason: str) -> None:
    """Say why these attempts wait, in one statement however many; those no longer PENDING
    are left as they are."""
    session.execute(_EXPLAIN, {"attempt_ids": list(attempt_ids), "reason": reason})


class Lease(NamedTuple):
    """One attempt leased to an agent, with the report secret of this lease.

    The secret exists in clear only here and in the agent's answer: the attempt row keeps its
    SHA-256. Never log it.
    """

    attempt: TaskAttempt
    report_secret: str


# Built once: every lease reads it.
_ASSIGNED_TO = (
    select(TaskAttempt)
    .where(
        TaskAttempt.cluster_id == bindparam("cluster_id"),
        TaskAttempt.status == A.ASSIGNED.value,
    )
    .order_by(TaskAttempt.created_at)
    .limit(bindparam("max_attempts", type_=Integer))
)


def lease_attempts(session: Session, cluster_id: str, max_attempts: int) -> list[Lease]:
    """Hand this cluster's ASSIGNED attempts to its agent, bumping each fencing token and
    giving each lease a new report secret (stored as its hash)."""
    candidates = session.scalars(
        _ASSIGNED_TO, {"cluster_id": cluster_id, "max_attempts": max_attempts}
    ).all()
    leased = []
    for attempt in candidates:
        secret = new_lease_secret()
        if move_attempt(
            session,
            attempt,
            A.LEASED,
            fencing_token=attempt.fencing_token + 1,
            report_secret_sha256=hash_token(secret),
        ):
            leased.append(Lease(attempt, secret))
    return leased


@dataclass(frozen=True)
class ReportOutcome:
    accepted: bool
    reason: str = ""
    attempt: TaskAttempt | None = None
    # True when this report moved the attempt into a terminal state.
    finished: bool = False
    # True when the attempt's lease predates report secrets and the report was taken on the
    # cluster token and fencing token alone.
    without_secret: bool = False


class ReportNotAuthorizedError(Exception):
    """A report about an attempt without the report secret of the lease that holds it.

    The message names the attempt, never the secret that was sent.
    """

    def __init__(self, attempt_id: str, why: str) -> None:
        super().__init__(f"report for attempt {attempt_id} refused: {why}")
        self.attempt_id = attempt_id


def apply_report(
    session: Session,
    cluster_id: str,
    *,
    attempt_id: str,
    fencing_token: int,
    report_secret: str,
    state: AttemptState,
    sequence: int,
    message: str | None,
    traceback: str | None,
    observed_at: datetime | None = None,
) -> ReportOutcome:
    """Apply one agent report; idempotent, ordered by `sequence`, fenced by `fencing_token`,
    authorised by the lease's `report_secret`. The attempt's new timestamp is when the agent
    observed the change (`observed_at`, on its clock), where one is given, kept between the
    attempt's previous timestamp and now (`observed_time`).

    The checks, in order: the attempt must be this cluster's (else "unknown attempt", the same
    answer as for one that does not exist); the fencing token the current lease's (else
    rejected as stale, whatever the secret: a report of an earlier lease changes nothing
    either way); the attempt must have been leased at all; then the report must carry the
    current lease's secret, compared by its SHA-256 in constant time.

    An attempt leased before the control plane issued secrets has no hash (NULL) but a
    fencing token: its reports are taken on the older checks alone, so upgrading with
    attempts in flight loses none of their results (the outcome says `without_secret`).

    Raises:
        ReportNotAuthorizedError: The attempt was never leased, or the secret is missing or
            not this lease's. Nothing was written.
    """
    attempt = _reported_attempt(session, attempt_id)
    if attempt is None or attempt.cluster_id != cluster_id:
        # The same answer whether the attempt is another cluster's or does not exist.
        return ReportOutcome(False, "unknown attempt")
    stale = fencing_problem(attempt.fencing_token, fencing_token)
    if stale is not None:
        return ReportOutcome(False, stale)
    if attempt.fencing_token == 0:
        raise ReportNotAuthorizedError(attempt_id, "it was never leased")
    stored = attempt.report_secret_sha256
    if stored is not None:
        if not report_secret:
            raise ReportNotAuthorizedError(
                attempt_id,
                "it carries no report secret; only the agent holding the attempt's lease may "
                "report it",
            )
        if not matches_hash(report_secret, stored):
            raise ReportNotAuthorizedError(
                attempt_id, "its report secret is not that of the attempt's lease"
            )
    outcome = _apply_authorised_report(
        session,
        attempt,
        state=state,
        sequence=sequence,
        message=message,
        traceback=traceback,
        observed_at=observed_at,
    )
    return replace(outcome, without_secret=True) if stored is None else outcome


# Built once: every report reads its attempt.
_BY_ID = select(TaskAttempt).where(TaskAttempt.id == bindparam("attempt_id"))
_MAPPER = TaskAttempt.__mapper__


def _reported_attempt(session: Session, attempt_id: str) -> TaskAttempt | None:
    """`session.get`: the session's own row when it holds one (a batch's earlier report of
    the same attempt), else the row read by the statement built once."""
    if _MAPPER.identity_key_from_primary_key((attempt_id,)) in session.identity_map:
        return session.get(TaskAttempt, attempt_id)
    return session.scalars(_BY_ID, {"attempt_id": attempt_id}).one_or_none()


def _apply_authorised_report(
    session: Session,
    attempt: TaskAttempt,
    *,
    state: AttemptState,
    sequence: int,
    message: str | None,
    traceback: str | None,
    observed_at: datetime | None,
) -> ReportOutcome:
    verdict = judge_report(
        status=attempt.status,
        last_sequence=attempt.last_report_sequence,
        state=state,
        sequence=sequence,
    )
    if not verdict.move:
        if verdict.record_sequence:
            attempt.last_report_sequence = sequence
        return ReportOutcome(verdict.accepted, verdict.reason, attempt)
    extra: dict[str, object] = {"last_report_sequence": sequence}
    if state in (A.FAILED, A.CANCELLED, A.LOST, A.PREEMPTED):
        extra.update(error_message=message or None, error_traceback=traceback or None)
    column = ATTEMPT_TIMESTAMP.get(state)
    if observed_at is not None and column is not None:
        extra[column] = observed_time(observed_at, attempt.started_at or attempt.leased_at)
    if not move_attempt(session, attempt, state, **extra):
        return ReportOutcome(False, "attempt changed concurrently; report again", attempt)
    return ReportOutcome(True, "", attempt, finished=state.terminal)


def starts_successors_ahead(attempt: TaskAttempt) -> bool:
    """Whether what follows `attempt` may be started ahead of its workflow
    (`ExecutionActivities.start_successors`): it SUCCEEDED, maps no element, and was itself
    created ahead (no workflow's `start_attempts` made it). Read from the row a report already
    loaded, so that a map's thousands of elements cost no transaction each to find this."""
    return (
        attempt.status == AttemptState.SUCCEEDED.value
        and attempt.map_index == NO_MAP_INDEX
        and attempt.workflow_id is None
    )


def observed_time(observed_at: datetime, previous: datetime | None) -> datetime:
    """When an agent saw a change, on its clock, but never before the attempt's previous
    timestamp nor after now: a skewed clock cannot order an attempt's times wrongly.

    A RUNNING report waits a moment for its attempt's end (the agent's reporter), and a
    buffered one may go out long after: stamped on arrival, a short task would show no
    running time, and one reported after an outage the outage's end."""
    now = utcnow()
    earliest = now if previous is None else min(as_utc(previous), now)
    return min(max(as_utc(observed_at), earliest), now)


def cancel_unfinished(session: Session, execution_id: str) -> list[str]:
    """Move the execution's attempts that have not finished (waiting, placed or running) to
    CANCELLED; the ids moved. Their agents are told to stop them at their next heartbeat."""
    unfinished = session.scalars(
        select(TaskAttempt).where(
            TaskAttempt.execution_id == execution_id,
            TaskAttempt.status.in_([A.PENDING.value, *ACTIVE_STATES]),
        )
    ).all()
    return [a.id for a in unfinished if move_attempt(session, a, A.CANCELLED)]


LEASE_HELD_STATES = (A.LEASED.value, A.RUNNING.value)


def mark_lost(session: Session, attempts: list[TaskAttempt], reason: str) -> list[str]:
    """Move active attempts to LOST (their cluster lost them); returns the ids moved."""
    lost = []
    for attempt in attempts:
        if move_attempt(session, attempt, A.LOST, error_message=reason):
            lost.append(attempt.id)
    return lost


def held_attempts(session: Session, cluster_id: str) -> list[TaskAttempt]:
    """Attempts this cluster's agent has leased and not finished."""
    return list(
        session.scalars(
            select(TaskAttempt).where(
                TaskAttempt.cluster_id == cluster_id,
                TaskAttempt.status.in_(LEASE_HELD_STATES),
            )
        )
    )


@dataclass(frozen=True)
class StopOrder:
    """An attempt an agent runs that it must stop, why, and how long the task has between
    SIGTERM and the kill (None: the agent's own grace, as for a cancel)."""

    attempt_id: str
    reason: str
    grace_seconds: int | None = None


def reconcile_running(
    session: Session,
    cluster: Cluster,
    running: dict[str, int | None],
    *,
    leased_before: datetime,
) -> tuple[list[str], list[StopOrder]]:
    """Compare what the agent runs (`attempt id -> fencing token`, None when not reported)
    with what it should.

    Returns (lost, stop): attempts it holds but does not run, leased before `leased_before`
    (so a lease still in flight to the agent is not mistaken for a lost one), become LOST; the
    ones it runs that are no longer its to run (finished, cancelled, preempted, re-leased,
    another cluster's) must be stopped. A preempted one gets its cohort's preemption grace.
    """
    missing = [
        a
        for a in held_attempts(session, cluster.id)
        if a.id not in running and a.leased_at is not None and as_utc(a.leased_at) < leased_before
    ]
    lost = mark_lost(session, missing, f"cluster {cluster.name}'s agent no longer runs it")
    stop = []
    for attempt_id, token in running.items():
        attempt = session.get(TaskAttempt, attempt_id)
        if attempt is None:
            stop.append(StopOrder(attempt_id, "unknown attempt"))
        elif attempt.cluster_id != cluster.id:
            stop.append(StopOrder(attempt_id, "assigned to another cluster"))
        elif attempt.status == A.PREEMPTED.value:
            grace = preemption_grace_seconds(session, attempt.execution_id)
            stop.append(StopOrder(attempt_id, "preempted", grace))
        elif attempt.status not in LEASE_HELD_STATES:
            stop.append(StopOrder(attempt_id, attempt.status.lower()))
        elif token is not None and attempt.fencing_token != token:
            stop.append(StopOrder(attempt_id, "superseded by a newer lease"))
    return lost, stop


def preemption_grace_seconds(session: Session, execution_id: str) -> int:
    """The grace of a preempted attempt of this execution: its tenant's cohort's (the default
    when the tenant left its cohort since)."""
    grace = session.scalar(
        select(Cohort.preemption_grace_seconds)
        .join(CohortMember, CohortMember.cohort_id == Cohort.id)
        .join(Execution, Execution.tenant_id == CohortMember.tenant_id)
        .where(Execution.id == execution_id)
    )
    return DEFAULT_PREEMPTION_GRACE_SECONDS if grace is None else int(grace)


def lose_attempts_of_silent_clusters(session: Session, *, grace: timedelta) -> list[str]:
    """Attempts on clusters whose agent has not heartbeated within `grace` become LOST."""
    cutoff = utcnow() - grace
    rows = session.execute(
        select(TaskAttempt, Cluster.last_heartbeat_at)
        .join(Cluster, Cluster.id == TaskAttempt.cluster_id)
        .where(TaskAttempt.status.in_(ACTIVE_STATES))
    ).all()
    silent = [
        attempt for attempt, heartbeat in rows if heartbeat is None or as_utc(heartbeat) < cutoff
    ]
    return mark_lost(session, silent, f"no heartbeat from its cluster for {grace.seconds}s")


@dataclass(frozen=True)
class FinishedAttempt:
    attempt_id: str
    workflow_id: str  # the workflow waiting for it: the execution's, or a map chunk's
    status: str
    message: str
    execution_id: str = ""
    node_id: str = ""
    # Whether it may start what follows it ahead of its workflow (`starts_successors_ahead`).
    ahead: bool = False
    # Set by `ExecutionActivities.quiet_finishes`: recorded as told without a signal (its
    # workflow hears of it later), or signalled with the news that others were.
    held: bool = False
    look: bool = False


def unsignalled_finished(session: Session, limit: int = 200) -> list[FinishedAttempt]:
    """Terminal attempts whose workflow has not been told yet (the outbox)."""
    rows = session.scalars(
        select(TaskAttempt)
        .where(
            # Exactly the rows of the partial index `ix_task_attempts_unsignalled`: only a
            # terminal attempt has `finished_at`. (A status condition would lead the planner
            # to the status index, and through every attempt that ever finished.)
            TaskAttempt.signalled_at.is_(None),
            TaskAttempt.finished_at.is_not(None),
            TaskAttempt.cache_hit.is_(False),
        )
        .order_by(TaskAttempt.finished_at)
        .limit(limit)
    ).all()
    return [
        FinishedAttempt(
            a.id,
            a.workflow_id or a.execution_id,
            a.status,
            a.error_message or "",
            a.execution_id,
            a.node_id,
            starts_successors_ahead(a),
        )
        for a in rows
    ]


def mark_signalled(session: Session, attempt_ids: list[str]) -> None:
    session.execute(
        update(TaskAttempt)
        .where(TaskAttempt.id.in_(attempt_ids))
        .values(signalled_at=utcnow())
        .execution_options(synchronize_session=False)
    )
