"""Attempts and clusters repositories on SQLite and PostgreSQL: creation, placement, leasing
with fencing tokens and report secrets, and agent reports (idempotent, ordered by sequence,
fenced, authorised by the lease's secret).

Every step runs in its own transaction, as the activities and the gRPC service run them, and
results are read back from a fresh session so that only what was committed counts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.models import Cluster, TaskAttempt, utcnow
from control_plane.db.repositories import attempts as attempts_repo
from control_plane.db.repositories import clusters as clusters_repo
from control_plane.db.repositories import tenancy
from control_plane.db.repositories.executions import create_execution
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.repositories.workflows import register_workflow_version
from control_plane.db.session import make_engine, make_session_factory, transaction
from control_plane.scheduling.scheduler import place_pending_attempts
from fleetflow.ir import WorkflowSpec
from fleetflow.states import AttemptState
from tests.sql_statements import statements

A = AttemptState
GRACE = timedelta(seconds=30)
BUNDLE = "c" * 64
# What an agent keeps of its leases: attempt id -> the lease's report secret (ids are unique).
SECRETS: dict[str, str] = {}


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def execution_id(sessions: sessionmaker[Session], workflow_spec: WorkflowSpec) -> str:
    with transaction(sessions) as session:
        tenant = get_or_create_tenant(session, "research")
        tenancy.grant_cluster(session, tenant, tenancy.EVERY_CLUSTER)
        workflow = register_workflow_version(session, tenant.id, workflow_spec, BUNDLE, None)
        return create_execution(session, tenant.id, workflow, {"n": 3}).id


def add_cluster(
    sessions: sessionmaker[Session], name: str, *, heartbeat_age: timedelta | None = None
) -> str:
    """A cluster whose agent heartbeated `heartbeat_age` ago (never, when None)."""
    with transaction(sessions) as session:
        cluster = clusters_repo.ensure_cluster(session, name, f"token-{name}", {})
        if heartbeat_age is not None:
            clusters_repo.record_heartbeat(session, cluster, capacity={})
            cluster.last_heartbeat_at = utcnow() - heartbeat_age
        return cluster.id


def add_attempt(
    sessions: sessionmaker[Session], execution_id: str, node_id: str = "n0", number: int = 1
) -> str:
    with transaction(sessions) as session:
        return create_attempt(session, execution_id, node_id, number).id


def create_attempt(
    session: Session, execution_id: str, node_id: str, number: int, uri_suffix: str = ""
) -> TaskAttempt:
    prefix = f"file:///blobs/executions/{execution_id}/{node_id}/{number}"
    return attempts_repo.create_attempt(
        session,
        execution_id=execution_id,
        node_id=node_id,
        task_name="examples.train.prepare",
        attempt_number=number,
        inputs_uri=f"{prefix}/inputs.json{uri_suffix}",
        outputs_uri=f"{prefix}/outputs.json{uri_suffix}",
    )


def place(sessions: sessionmaker[Session], only_cluster_id: str | None = None) -> int:
    with transaction(sessions) as session:
        only = session.get_one(Cluster, only_cluster_id) if only_cluster_id else None
        return place_pending_attempts(session, heartbeat_grace=GRACE, only_cluster=only)


def lease(sessions: sessionmaker[Session], cluster_id: str, max_attempts: int = 10) -> list[str]:
    with transaction(sessions) as session:
        leases = attempts_repo.lease_attempts(session, cluster_id, max_attempts)
        SECRETS.update({attempt.id: secret for attempt, secret in leases})
        return [attempt.id for attempt, _ in leases]


def as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything is written in UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def load(sessions: sessionmaker[Session], attempt_id: str) -> TaskAttempt:
    with sessions() as session:
        return session.get_one(TaskAttempt, attempt_id)


def report(
    sessions: sessionmaker[Session],
    cluster_id: str,
    attempt_id: str,
    state: AttemptState,
    sequence: int,
    *,
    fencing_token: int = 1,
    report_secret: str | None = None,
    message: str | None = None,
    traceback: str | None = None,
) -> attempts_repo.ReportOutcome:
    """Apply a report; with the secret of the attempt's lease unless `report_secret` is given."""
    with transaction(sessions) as session:
        return attempts_repo.apply_report(
            session,
            cluster_id,
            attempt_id=attempt_id,
            fencing_token=fencing_token,
            report_secret=SECRETS.get(attempt_id, "") if report_secret is None else report_secret,
            state=state,
            sequence=sequence,
            message=message,
            traceback=traceback,
        )


@pytest.fixture
def cluster_id(sessions: sessionmaker[Session]) -> str:
    return add_cluster(sessions, "alpha", heartbeat_age=timedelta(0))


@pytest.fixture
def leased_id(sessions: sessionmaker[Session], execution_id: str, cluster_id: str) -> str:
    """An attempt leased once by `cluster_id`'s agent (fencing token 1)."""
    attempt_id = add_attempt(sessions, execution_id)
    assert place(sessions) == 1
    assert lease(sessions, cluster_id) == [attempt_id]
    return attempt_id


# --- clusters ---------------------------------------------------------------------------------


def test_tokens_are_stored_hashed_and_rotated(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        cluster = clusters_repo.ensure_cluster(session, "alpha", "secret-1", {"zone": "a"})
        assert cluster.token_hash == clusters_repo.hash_token("secret-1") != "secret-1"
        assert len(cluster.token_hash) == 64
        first_id = cluster.id
    with transaction(sessions) as session:
        assert clusters_repo.cluster_for_token(session, "secret-1") is not None
        assert clusters_repo.cluster_for_token(session, "secret-2") is None
        rotated = clusters_repo.ensure_cluster(session, "alpha", "secret-2", {"zone": "b"})
        assert rotated.id == first_id and rotated.labels == {"zone": "b"}
    with transaction(sessions) as session:
        assert clusters_repo.cluster_for_token(session, "secret-1") is None
        found = clusters_repo.cluster_for_token(session, "secret-2")
        assert found is not None and found.id == first_id
    assert clusters_repo.new_agent_token() != clusters_repo.new_agent_token()


def test_heartbeat_records_capacity_version_and_merges_labels(
    sessions: sessionmaker[Session],
) -> None:
    cluster_id = add_cluster(sessions, "alpha")
    with transaction(sessions) as session:
        cluster = session.get_one(Cluster, cluster_id)
        cluster.labels = {"zone": "a", "tier": "gold"}
    with transaction(sessions) as session:
        cluster = session.get_one(Cluster, cluster_id)
        clusters_repo.record_heartbeat(
            session, cluster, capacity={"cpu_allocatable": 8.0}, agent_version="1.2.3"
        )
        clusters_repo.record_heartbeat(
            session, cluster, capacity={"cpu_allocatable": 4.0}, labels={"zone": "b"}
        )
    with sessions() as session:
        cluster = session.get_one(Cluster, cluster_id)
        assert cluster.capacity == {"cpu_allocatable": 4.0}
        assert cluster.agent_version == "1.2.3"  # a heartbeat without a version keeps it
        assert cluster.labels == {"zone": "b", "tier": "gold"}
        assert cluster.last_heartbeat_at is not None


def test_online_clusters_are_those_with_a_recent_heartbeat(
    sessions: sessionmaker[Session],
) -> None:
    add_cluster(sessions, "zulu", heartbeat_age=timedelta(0))
    add_cluster(sessions, "alpha", heartbeat_age=timedelta(seconds=5))
    add_cluster(sessions, "stale", heartbeat_age=timedelta(minutes=5))
    add_cluster(sessions, "never")
    with sessions() as session:
        online = clusters_repo.online_clusters(session, grace=GRACE)
        assert [c.name for c in online] == ["alpha", "zulu"]
        later = utcnow() + timedelta(seconds=28)
        assert [c.name for c in clusters_repo.online_clusters(session, grace=GRACE, now=later)] == [
            "zulu"
        ]


# --- creation ---------------------------------------------------------------------------------


def test_create_attempt_is_idempotent(sessions: sessionmaker[Session], execution_id: str) -> None:
    with transaction(sessions) as session:
        first = create_attempt(session, execution_id, "n0", 1)
        assert first.status == A.PENDING.value and first.cluster_id is None
        assert first.fencing_token == 0 and first.last_report_sequence == 0
        assert create_attempt(session, execution_id, "n0", 1).id == first.id
    # A retried activity, in a new transaction, with a session that never saw the row.
    with transaction(sessions) as session:
        again = create_attempt(session, execution_id, "n0", 1, uri_suffix=".retry")
        assert again.id == first.id
        assert again.inputs_uri == first.inputs_uri  # the first write wins; nothing overwritten
        assert create_attempt(session, execution_id, "n0", 2).id != first.id
        assert create_attempt(session, execution_id, "n1", 1).id != first.id
    with sessions() as session:
        rows = session.scalars(select(TaskAttempt).where(TaskAttempt.execution_id == execution_id))
        assert sorted((a.node_id, a.attempt_number) for a in rows) == [
            ("n0", 1),
            ("n0", 2),
            ("n1", 1),
        ]


# --- placement --------------------------------------------------------------------------------


def test_placement_leaves_attempts_pending_when_no_cluster_is_online(
    sessions: sessionmaker[Session], execution_id: str
) -> None:
    add_cluster(sessions, "stale", heartbeat_age=timedelta(minutes=5))
    add_cluster(sessions, "never")
    attempt_id = add_attempt(sessions, execution_id)
    assert place(sessions) == 0
    attempt = load(sessions, attempt_id)
    assert attempt.status == A.PENDING.value and attempt.cluster_id is None


def test_placement_only_to_clusters_with_a_recent_heartbeat(
    sessions: sessionmaker[Session], execution_id: str
) -> None:
    # "aaa-stale" would win the name tie-break if it were online.
    add_cluster(sessions, "aaa-stale", heartbeat_age=timedelta(minutes=5))
    add_cluster(sessions, "aaa-never")
    online = add_cluster(sessions, "zzz-online", heartbeat_age=timedelta(seconds=1))
    ids = [add_attempt(sessions, execution_id, node, 1) for node in ("n0", "n1")]
    assert place(sessions) == 2
    for attempt_id in ids:
        attempt = load(sessions, attempt_id)
        assert attempt.status == A.ASSIGNED.value and attempt.cluster_id == online
    assert place(sessions) == 0  # nothing left to place


def test_placement_spreads_by_active_attempts_ties_by_name(
    sessions: sessionmaker[Session], execution_id: str
) -> None:
    # Ids in the opposite order of names, so a tie broken by anything but the name shows.
    with transaction(sessions) as session:
        for cluster_id, name in (("cl-1", "beta"), ("cl-2", "alpha")):
            token_hash = clusters_repo.hash_token(f"token-{name}")
            session.add(Cluster(id=cluster_id, name=name, token_hash=token_hash, labels={}))
        session.flush()
        for cluster_id in ("cl-1", "cl-2"):
            clusters_repo.record_heartbeat(
                session, session.get_one(Cluster, cluster_id), capacity={}
            )
    alpha, beta = "cl-2", "cl-1"
    # Equal load: the tie goes to the first name.
    first = add_attempt(sessions, execution_id, "n0", 1)
    assert place(sessions) == 1
    assert load(sessions, first).cluster_id == alpha
    # alpha now has one active attempt, so the next goes to beta, then alpha again (tie).
    second = add_attempt(sessions, execution_id, "n0", 2)
    assert place(sessions) == 1
    assert load(sessions, second).cluster_id == beta
    third = add_attempt(sessions, execution_id, "n0", 3)
    assert place(sessions) == 1
    assert load(sessions, third).cluster_id == alpha


def test_placement_counts_only_active_attempts(
    sessions: sessionmaker[Session], execution_id: str
) -> None:
    alpha = add_cluster(sessions, "alpha", heartbeat_age=timedelta(0))
    # Three attempts on alpha: one stays active (LEASED), two finish (no longer load).
    busy, succeeded, failed = (add_attempt(sessions, execution_id, "n0", n) for n in (1, 2, 3))
    assert place(sessions) == 3
    assert sorted(lease(sessions, alpha)) == sorted([busy, succeeded, failed])
    assert report(sessions, alpha, succeeded, A.SUCCEEDED, 1).finished
    assert report(sessions, alpha, failed, A.FAILED, 1).finished
    beta = add_cluster(sessions, "beta", heartbeat_age=timedelta(0))
    # alpha: 1 active, beta: 0 -> beta, then a 1:1 tie -> alpha. Had the finished attempts
    # counted (alpha: 3), both would have gone to beta.
    batch = [add_attempt(sessions, execution_id, "n1", n) for n in (1, 2)]
    assert place(sessions) == 2
    assert sorted(load(sessions, a).cluster_id or "" for a in batch) == sorted([alpha, beta])


def test_placement_restricted_to_one_cluster(
    sessions: sessionmaker[Session], execution_id: str
) -> None:
    add_cluster(sessions, "alpha", heartbeat_age=timedelta(0))
    beta = add_cluster(sessions, "beta", heartbeat_age=timedelta(0))
    stale = add_cluster(sessions, "stale", heartbeat_age=timedelta(minutes=5))
    ids = [add_attempt(sessions, execution_id, "n0", n) for n in (1, 2)]
    assert place(sessions, only_cluster_id=stale) == 0  # an offline cluster gets nothing
    assert place(sessions, only_cluster_id=beta) == 2
    assert {load(sessions, a).cluster_id for a in ids} == {beta}


# --- leasing ----------------------------------------------------------------------------------


def test_lease_bumps_the_fencing_token_once(
    sessions: sessionmaker[Session], execution_id: str, cluster_id: str
) -> None:
    other = add_cluster(sessions, "beta", heartbeat_age=timedelta(minutes=5))
    attempt_id = add_attempt(sessions, execution_id)
    assert lease(sessions, cluster_id) == []  # PENDING is not leasable
    assert place(sessions) == 1
    assert lease(sessions, other) == []  # another cluster's agent cannot lease it
    before = utcnow()
    assert lease(sessions, cluster_id) == [attempt_id]
    attempt = load(sessions, attempt_id)
    assert attempt.status == A.LEASED.value
    assert attempt.fencing_token == 1
    assert attempt.leased_at is not None and as_utc(attempt.leased_at) >= before
    # A second lease of the same cluster gets nothing and does not bump the token again.
    assert lease(sessions, cluster_id) == []
    assert load(sessions, attempt_id).fencing_token == 1


def test_lease_honours_max_attempts(
    sessions: sessionmaker[Session], execution_id: str, cluster_id: str
) -> None:
    ids = {add_attempt(sessions, execution_id, "n0", n) for n in (1, 2, 3)}
    assert place(sessions) == 3
    first = lease(sessions, cluster_id, max_attempts=2)
    assert len(first) == 2
    rest = lease(sessions, cluster_id, max_attempts=2)
    assert len(rest) == 1
    assert set(first) | set(rest) == ids
    assert lease(sessions, cluster_id) == []


def test_each_lease_gets_its_own_secret_stored_as_its_hash(
    sessions: sessionmaker[Session], execution_id: str, cluster_id: str
) -> None:
    ids = [add_attempt(sessions, execution_id, "n0", n) for n in (1, 2)]
    assert place(sessions) == 2
    assert sorted(lease(sessions, cluster_id)) == sorted(ids)
    secrets = [SECRETS[i] for i in ids]
    assert len(set(secrets)) == 2 and all(s.startswith("ffl_") for s in secrets)
    for attempt_id, secret in zip(ids, secrets, strict=True):
        stored = load(sessions, attempt_id).report_secret_sha256
        assert stored == hashlib.sha256(secret.encode()).hexdigest()


# --- reports ----------------------------------------------------------------------------------


@pytest.mark.parametrize("secret", ["", "ffl_made-up", "other"])
def test_a_report_without_the_leases_secret_is_refused_and_changes_nothing(
    sessions: sessionmaker[Session], execution_id: str, cluster_id: str, secret: str
) -> None:
    target, other = (add_attempt(sessions, execution_id, "n0", n) for n in (1, 2))
    assert place(sessions) == 2 and len(lease(sessions, cluster_id)) == 2
    forged = SECRETS[other] if secret == "other" else secret
    for state in (A.RUNNING, A.SUCCEEDED, A.FAILED):
        with pytest.raises(attempts_repo.ReportNotAuthorizedError) as refused:
            report(sessions, cluster_id, target, state, 1, report_secret=forged)
        assert target in str(refused.value) and SECRETS[target] not in str(refused.value)
        assert not forged or forged not in str(refused.value)
    attempt = load(sessions, target)
    assert attempt.status == A.LEASED.value and attempt.last_report_sequence == 0
    assert report(sessions, cluster_id, target, A.SUCCEEDED, 1).finished


def test_a_lease_from_before_report_secrets_is_taken_on_the_older_checks(
    sessions: sessionmaker[Session], cluster_id: str, leased_id: str
) -> None:
    with transaction(sessions) as session:
        session.get_one(TaskAttempt, leased_id).report_secret_sha256 = None
    stale = report(sessions, cluster_id, leased_id, A.SUCCEEDED, 1, fencing_token=2)
    assert not stale.accepted and "fencing token" in stale.reason
    outcome = report(sessions, cluster_id, leased_id, A.SUCCEEDED, 1, report_secret="")
    assert (outcome.accepted, outcome.finished, outcome.without_secret) == (True, True, True)
    assert load(sessions, leased_id).status == A.SUCCEEDED.value


def test_running_then_succeeded_finishes_once(
    sessions: sessionmaker[Session], cluster_id: str, leased_id: str
) -> None:
    running = report(sessions, cluster_id, leased_id, A.RUNNING, 1)
    assert (running.accepted, running.finished) == (True, False)
    attempt = load(sessions, leased_id)
    assert attempt.status == A.RUNNING.value and attempt.started_at is not None
    assert attempt.finished_at is None and attempt.last_report_sequence == 1

    succeeded = report(sessions, cluster_id, leased_id, A.SUCCEEDED, 2, message="done")
    assert (succeeded.accepted, succeeded.finished) == (True, True)
    assert succeeded.attempt is not None and succeeded.attempt.id == leased_id
    attempt = load(sessions, leased_id)
    assert attempt.status == A.SUCCEEDED.value and attempt.finished_at is not None
    assert attempt.last_report_sequence == 2
    assert attempt.error_message is None and attempt.error_traceback is None

    again = report(sessions, cluster_id, leased_id, A.SUCCEEDED, 2)
    assert (again.accepted, again.finished) == (True, False)


def test_a_leased_attempt_may_finish_without_running(
    sessions: sessionmaker[Session], cluster_id: str, leased_id: str
) -> None:
    outcome = report(sessions, cluster_id, leased_id, A.SUCCEEDED, 1)
    assert (outcome.accepted, outcome.finished) == (True, True)
    assert load(sessions, leased_id).status == A.SUCCEEDED.value


def test_a_duplicated_report_changes_nothing(
    sessions: sessionmaker[Session], cluster_id: str, leased_id: str
) -> None:
    assert report(sessions, cluster_id, leased_id, A.RUNNING, 1).accepted
    before = load(sessions, leased_id)
    duplicate = report(sessions, cluster_id, leased_id, A.RUNNING, 1)
    assert (duplicate.accepted, duplicate.finished) == (True, False)
    assert "duplicate" in duplicate.reason
    # Same sequence, different content: still the same report as far as ordering goes.
    clash = report(sessions, cluster_id, leased_id, A.FAILED, 1, message="boom")
    assert (clash.accepted, clash.finished) == (True, False)
    after = load(sessions, leased_id)
    assert after.status == A.RUNNING.value
    assert after.last_report_sequence == 1
    assert after.started_at == before.started_at
    assert after.error_message is None and after.finished_at is None


def test_a_repeated_state_with_a_newer_sequence_only_advances_the_sequence(
    sessions: sessionmaker[Session], cluster_id: str, leased_id: str
) -> None:
    assert report(sessions, cluster_id, leased_id, A.RUNNING, 1).accepted
    started_at = load(sessions, leased_id).started_at
    repeat = report(sessions, cluster_id, leased_id, A.RUNNING, 2)
    assert (repeat.accepted, repeat.finished) == (True, False)
    attempt = load(sessions, leased_id)
    assert attempt.status == A.RUNNING.value and attempt.started_at == started_at
    assert attempt.last_report_sequence == 2
    # ...so another report reusing sequence 2 is now a duplicate.
    assert report(sessions, cluster_id, leased_id, A.SUCCEEDED, 2).finished is False
    assert load(sessions, leased_id).status == A.RUNNING.value


def test_an_older_report_after_a_newer_one_is_ignored(
    sessions: sessionmaker[Session], cluster_id: str, leased_id: str
) -> None:
    assert report(sessions, cluster_id, leased_id, A.SUCCEEDED, 2).finished
    finished_at = load(sessions, leased_id).finished_at
    late = report(sessions, cluster_id, leased_id, A.RUNNING, 1)
    assert late.finished is False
    assert late.reason  # says why nothing happened
    attempt = load(sessions, leased_id)
    assert attempt.status == A.SUCCEEDED.value
    assert attempt.last_report_sequence == 2
    assert attempt.started_at is None and attempt.finished_at == finished_at


def test_an_older_failure_does_not_overwrite_a_running_attempt(
    sessions: sessionmaker[Session], cluster_id: str, leased_id: str
) -> None:
    assert report(sessions, cluster_id, leased_id, A.RUNNING, 5).accepted
    late = report(sessions, cluster_id, leased_id, A.FAILED, 4, message="old", traceback="tb")
    assert late.finished is False
    attempt = load(sessions, leased_id)
    assert attempt.status == A.RUNNING.value
    assert attempt.error_message is None and attempt.error_traceback is None


@pytest.mark.parametrize("token", [0, 2])
def test_a_stale_fencing_token_is_rejected(
    sessions: sessionmaker[Session], cluster_id: str, leased_id: str, token: int
) -> None:
    outcome = report(sessions, cluster_id, leased_id, A.SUCCEEDED, 1, fencing_token=token)
    assert (outcome.accepted, outcome.finished) == (False, False)
    assert "fencing token" in outcome.reason
    attempt = load(sessions, leased_id)
    assert attempt.status == A.LEASED.value and attempt.last_report_sequence == 0


def test_a_report_from_another_cluster_looks_like_an_unknown_attempt(
    sessions: sessionmaker[Session], cluster_id: str, leased_id: str
) -> None:
    intruder = add_cluster(sessions, "intruder", heartbeat_age=timedelta(0))
    foreign = report(sessions, intruder, leased_id, A.SUCCEEDED, 1)
    missing = report(sessions, intruder, "at-does-not-exist", A.SUCCEEDED, 1)
    assert foreign == missing
    assert (foreign.accepted, foreign.reason, foreign.attempt) == (False, "unknown attempt", None)
    # The stale-token answer would tell the intruder the attempt exists: it must not get it.
    assert report(sessions, intruder, leased_id, A.SUCCEEDED, 1, fencing_token=0) == missing
    attempt = load(sessions, leased_id)
    assert attempt.status == A.LEASED.value and attempt.last_report_sequence == 0


def test_an_illegal_move_is_rejected_and_changes_nothing(
    sessions: sessionmaker[Session], cluster_id: str, leased_id: str
) -> None:
    assert report(sessions, cluster_id, leased_id, A.SUCCEEDED, 2).finished
    before = load(sessions, leased_id)
    late_running = report(sessions, cluster_id, leased_id, A.RUNNING, 3)
    assert (late_running.accepted, late_running.finished) == (False, False)
    assert late_running.reason == "attempt cannot move from SUCCEEDED to RUNNING"
    after = load(sessions, leased_id)
    assert after.status == A.SUCCEEDED.value
    assert after.last_report_sequence == 2
    assert (after.started_at, after.finished_at) == (before.started_at, before.finished_at)


def test_an_attempt_that_was_never_leased_cannot_be_reported_on(
    sessions: sessionmaker[Session], execution_id: str, cluster_id: str
) -> None:
    attempt_id = add_attempt(sessions, execution_id)
    assert place(sessions) == 1
    for state in (A.RUNNING, A.CANCELLED, A.LOST):
        with pytest.raises(attempts_repo.ReportNotAuthorizedError, match="never leased"):
            report(sessions, cluster_id, attempt_id, state, 1, fencing_token=0)
    assert load(sessions, attempt_id).status == A.ASSIGNED.value


def test_failed_stores_message_and_traceback(
    sessions: sessionmaker[Session], cluster_id: str, leased_id: str
) -> None:
    assert report(sessions, cluster_id, leased_id, A.RUNNING, 1).accepted
    traceback = 'Traceback (most recent call last):\n  File "t.py"\nValueError: bad n'
    outcome = report(
        sessions,
        cluster_id,
        leased_id,
        A.FAILED,
        2,
        message="ValueError: bad n",
        traceback=traceback,
    )
    assert (outcome.accepted, outcome.finished) == (True, True)
    attempt = load(sessions, leased_id)
    assert attempt.status == A.FAILED.value and attempt.finished_at is not None
    assert attempt.error_message == "ValueError: bad n"
    assert attempt.error_traceback == traceback


def test_cancelled_with_empty_strings_stores_no_error(
    sessions: sessionmaker[Session], cluster_id: str, leased_id: str
) -> None:
    # Protobuf strings default to "": that means "no message", not an empty one.
    outcome = report(sessions, cluster_id, leased_id, A.CANCELLED, 1, message="", traceback="")
    assert (outcome.accepted, outcome.finished) == (True, True)
    attempt = load(sessions, leased_id)
    assert attempt.status == A.CANCELLED.value
    assert attempt.error_message is None and attempt.error_traceback is None


def test_reports_of_one_attempt_in_one_transaction_read_it_once(
    sessions: sessionmaker[Session], cluster_id: str, leased_id: str
) -> None:
    """An agent's batch reports an attempt twice (RUNNING, SUCCEEDED): its row is read once,
    and the second report judges it as the first left it, in the session."""
    with statements(sessions) as seen, transaction(sessions) as session:
        for state, sequence in ((A.RUNNING, 1), (A.SUCCEEDED, 2)):
            outcome = attempts_repo.apply_report(
                session,
                cluster_id,
                attempt_id=leased_id,
                fencing_token=1,
                report_secret=SECRETS[leased_id],
                state=state,
                sequence=sequence,
                message=None,
                traceback=None,
            )
            assert (outcome.accepted, outcome.finished) == (True, state.terminal)
    on_attempts = [s.split()[0] for s in seen if "task_attempts" in s]
    assert on_attempts == ["SELECT", "UPDATE", "UPDATE"]
    attempt = load(sessions, leased_id)
    assert attempt.status == A.SUCCEEDED.value and attempt.last_report_sequence == 2
    assert attempt.started_at is not None and attempt.finished_at is not None


# --- moves ------------------------------------------------------------------------------------


def test_moves_into_one_state_write_their_own_columns(
    sessions: sessionmaker[Session], execution_id: str, cluster_id: str
) -> None:
    """A cancel by the control plane writes the state alone; an agent's report of CANCELLED
    also its sequence and message; a loss its reason: each its own columns, in any order."""
    ids = [add_attempt(sessions, execution_id, "n0", n) for n in (1, 2, 3, 4)]
    assert place(sessions) == 4 and len(lease(sessions, cluster_id)) == 4
    with transaction(sessions) as session:
        assert attempts_repo.move_attempt(
            session, session.get_one(TaskAttempt, ids[0]), A.CANCELLED
        )
    assert report(sessions, cluster_id, ids[1], A.CANCELLED, 3, message="stopped").finished
    with transaction(sessions) as session:
        assert attempts_repo.mark_lost(session, [session.get_one(TaskAttempt, ids[2])], "gone")
        assert attempts_repo.move_attempt(
            session, session.get_one(TaskAttempt, ids[3]), A.CANCELLED
        )
    cancelled, reported, lost, cancelled_after = (load(sessions, i) for i in ids)
    for attempt in (cancelled, cancelled_after):
        assert attempt.status == A.CANCELLED.value and attempt.finished_at is not None
        assert (attempt.last_report_sequence, attempt.error_message) == (0, None)
        assert attempt.fencing_token == 1  # the lease's, untouched
    assert (reported.status, reported.last_report_sequence) == (A.CANCELLED.value, 3)
    assert reported.error_message == "stopped" and reported.fencing_token == 1
    assert (lost.status, lost.error_message, lost.last_report_sequence) == (A.LOST.value, "gone", 0)


def test_a_move_compares_with_what_its_session_has_not_written_yet(
    sessions: sessionmaker[Session], execution_id: str
) -> None:
    """The session's pending changes are written before a move's compare-and-set, as before
    any query: an attempt added in the same transaction can be moved at once."""
    with transaction(sessions) as session:
        attempt = TaskAttempt(
            id="at-added",
            execution_id=execution_id,
            node_id="n9",
            task_name="examples.train.prepare",
            attempt_number=1,
            status=A.PENDING.value,
            inputs_uri="file:///blobs/in.json",
            outputs_uri="file:///blobs/out.json",
        )
        session.add(attempt)
        assert attempts_repo.move_attempt(session, attempt, A.CANCELLED)
        assert attempt.status == A.CANCELLED.value
    assert load(sessions, "at-added").status == A.CANCELLED.value
