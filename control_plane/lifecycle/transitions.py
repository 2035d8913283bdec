"""The one state-transition policy for attempts and executions.

Nothing else decides whether a state may change. Repositories ask `check_attempt_transition` /
`check_execution_transition` and then write with a compare-and-set, so a late RUNNING after
SUCCEEDED, or a move out of a terminal state, is refused instead of corrupting state.

An illegal move is an answer, not an error: the checks return an `IllegalTransition` (why not)
or None, and the repositories' moves return False for it, as for a move another writer made
first. Nobody raises or catches; a report refused for it says why (`lifecycle/reports.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

from fleetflow.states import AttemptState, ExecutionState

A = AttemptState
E = ExecutionState
S = TypeVar("S", bound=StrEnum)

_ATTEMPT_MOVES: dict[AttemptState, frozenset[AttemptState]] = {
    A.PENDING: frozenset({A.ASSIGNED, A.CANCELLED}),
    A.ASSIGNED: frozenset({A.LEASED, A.CANCELLED, A.LOST, A.PREEMPTED}),
    # An agent may report a terminal state without RUNNING (a task that fails at once).
    A.LEASED: frozenset({A.RUNNING, A.SUCCEEDED, A.FAILED, A.CANCELLED, A.LOST, A.PREEMPTED}),
    # PREEMPTED: the scheduler took its GPUs back (`control_plane/cohorts.py`).
    A.RUNNING: frozenset({A.SUCCEEDED, A.FAILED, A.CANCELLED, A.LOST, A.PREEMPTED}),
}

_EXECUTION_MOVES: dict[ExecutionState, frozenset[ExecutionState]] = {
    E.QUEUED: frozenset({E.RUNNING, E.FAILED, E.CANCELLED}),
    E.RUNNING: frozenset({E.SUCCEEDED, E.FAILED, E.CANCELLED}),
}

# Which timestamp column a move into a state stamps.
ATTEMPT_TIMESTAMP: dict[AttemptState, str] = {
    A.LEASED: "leased_at",
    A.RUNNING: "started_at",
    A.SUCCEEDED: "finished_at",
    A.FAILED: "finished_at",
    A.CANCELLED: "finished_at",
    A.LOST: "finished_at",
    A.PREEMPTED: "finished_at",
}
EXECUTION_TIMESTAMP: dict[ExecutionState, str] = {
    E.RUNNING: "started_at",
    E.SUCCEEDED: "finished_at",
    E.FAILED: "finished_at",
    E.CANCELLED: "finished_at",
}


@dataclass(frozen=True)
class IllegalTransition:
    """A state change the policy does not allow, and why (`str()`)."""

    what: str
    current: str
    target: str

    def __str__(self) -> str:
        return f"{self.what} cannot move from {self.current} to {self.target}"


def _check(
    what: str, moves: Mapping[S, frozenset[S]], current: S, target: S
) -> IllegalTransition | None:
    if target in moves.get(current, frozenset()):
        return None
    return IllegalTransition(what, current.value, target.value)


def check_attempt_transition(current: str, target: AttemptState) -> IllegalTransition | None:
    """None when an attempt in `current` may move to `target`; else why not.

    Raises:
        ValueError: `current` is not a state at all (corrupt data, not a move).
    """
    return _check("attempt", _ATTEMPT_MOVES, AttemptState(current), target)


def check_execution_transition(current: str, target: ExecutionState) -> IllegalTransition | None:
    """As `check_attempt_transition`, for an execution."""
    return _check("execution", _EXECUTION_MOVES, ExecutionState(current), target)


def attempt_values(target: AttemptState, now: datetime) -> dict[str, object]:
    """Column values written together with a move into `target`."""
    values: dict[str, object] = {"status": target.value}
    if column := ATTEMPT_TIMESTAMP.get(target):
        values[column] = now
    return values


def execution_values(target: ExecutionState, now: datetime) -> dict[str, object]:
    values: dict[str, object] = {"status": target.value}
    if column := EXECUTION_TIMESTAMP.get(target):
        values[column] = now
    return values
