"""The fencing and sequence rules of an agent's report (`control_plane.lifecycle.reports`),
without a database."""

from __future__ import annotations

from control_plane.lifecycle.reports import (
    STALE_FENCING_TOKEN,
    ReportVerdict,
    fencing_problem,
    judge_report,
)
from fleetflow.states import AttemptState

A = AttemptState


def test_only_the_current_leases_token_may_report() -> None:
    assert fencing_problem(2, 2) is None
    assert fencing_problem(2, 1) == STALE_FENCING_TOKEN  # an earlier lease
    assert fencing_problem(2, 3) == STALE_FENCING_TOKEN


def test_a_report_no_newer_than_the_last_is_a_duplicate() -> None:
    for sequence in (3, 2):
        verdict = judge_report(
            status=A.RUNNING, last_sequence=3, state=A.SUCCEEDED, sequence=sequence
        )
        assert verdict == ReportVerdict(True, "duplicate report ignored")


def test_a_newer_report_of_the_same_state_only_records_its_sequence() -> None:
    verdict = judge_report(status=A.RUNNING, last_sequence=1, state=A.RUNNING, sequence=2)
    assert verdict == ReportVerdict(True, "no change", record_sequence=True)


def test_a_newer_report_of_another_state_moves_the_attempt_when_the_policy_allows() -> None:
    verdict = judge_report(status=A.LEASED, last_sequence=0, state=A.RUNNING, sequence=1)
    assert verdict == ReportVerdict(True, move=True, record_sequence=True)


def test_a_move_the_policy_refuses_is_rejected_with_its_reason() -> None:
    verdict = judge_report(status=A.LOST, last_sequence=1, state=A.RUNNING, sequence=2)
    assert verdict == ReportVerdict(False, "attempt cannot move from LOST to RUNNING")
