"""Whether an agent's status report may change its attempt: the fencing and sequence rules.

Pure, so the rules are stated (and tested) in one place; `db/repositories/attempts.py`
(`apply_report`) reads the attempt, checks the lease's report secret, asks these, and writes
what they allow. In order: a report under another lease's fencing token is stale, whatever
else it says; one no newer than the last applied (by the agent's per-attempt sequence number)
is a duplicate and changes nothing; one of the state the attempt is in only records its
sequence; anything else is a state move, which the transition policy must allow.
"""

from __future__ import annotations

from dataclasses import dataclass

from control_plane.lifecycle.transitions import check_attempt_transition
from fleetflow.states import AttemptState

STALE_FENCING_TOKEN = "stale fencing token: the attempt was leased again"


def fencing_problem(lease_token: int, reported_token: int) -> str | None:
    """Why a report under `reported_token` may not touch an attempt whose current lease has
    `lease_token`, or None."""
    return None if reported_token == lease_token else STALE_FENCING_TOKEN


@dataclass(frozen=True)
class ReportVerdict:
    """What one (fenced, authorised) report does to its attempt.

    Attributes:
        accepted: whether the agent is told the report was taken.
        reason: why not, or what it did instead of a move ("duplicate report ignored").
        move: the report moves the attempt into the reported state.
        record_sequence: the report's sequence becomes the attempt's last (it is newer).
    """

    accepted: bool
    reason: str = ""
    move: bool = False
    record_sequence: bool = False


def judge_report(
    *, status: str, last_sequence: int, state: AttemptState, sequence: int
) -> ReportVerdict:
    """What a report of `state` with `sequence` does to an attempt in `status` whose last
    applied report had `last_sequence`."""
    if sequence <= last_sequence:
        return ReportVerdict(True, "duplicate report ignored")
    if status == state.value:
        return ReportVerdict(True, "no change", record_sequence=True)
    refusal = check_attempt_transition(status, state)
    if refusal is not None:
        return ReportVerdict(False, str(refusal))
    return ReportVerdict(True, move=True, record_sequence=True)
