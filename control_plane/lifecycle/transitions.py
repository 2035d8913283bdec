"""The one state-transition policy for attempts and executions.

Nothing else decides whether a state may change. Repositories ask `check_attempt_transition` /
`check_execution_transition` and then write with a compare-and-set, so a late RUNNING after
SUCCEEDED, or a move out of a terminal state, is refused instead of corrupting state.
"""

from __future__ import annotations

from datetime import datetime

from fleetflow.states import AttemptState, ExecutionState

A = AttemptState
E = ExecutionState

_ATTEMPT_MOVES: dict[AttemptState, frozenset[AttemptState]] = {
    A.PENDING: frozenset({A.ASSIGNED, A.CANCELLED}),
    A.ASSIGNED: frozenset({A.LEASED, A.CANCELLED, A.LOST}),
    # An agent may report a terminal state without RUNNING (a task that fails at once).
    A.LEASED: frozenset({A.RUNNING, A.SUCCEEDED, A.FAILED, A.CANCELLED, A.LOST}),
    A.RUNNING: frozenset({A.SUCCEEDED, A.FAILED, A.CANCELLED, A.LOST}),
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
}
EXECUTION_TIMESTAMP: dict[ExecutionState, str] = {
    E.RUNNING: "started_at",
    E.SUCCEEDED: "finished_at",
    E.FAILED: "finished_at",
    E.CANCELLED: "finished_at",
}


class IllegalTransitionError(Exception):
    """A state change the policy does not allow."""

    def __init__(self, what: str, current: str, target: str) -> None:
        super().__init__(f"{what} cannot move from {current} to {target}")
        self.current = current
        self.target = target


def check_attempt_transition(current: str, target: AttemptState) -> None:
    if target not in _ATTEMPT_MOVES.get(AttemptState(current), frozenset()):
        raise IllegalTransitionError("attempt", current, target)


def check_execution_transition(current: str, target: ExecutionState) -> None:
    if target not in _EXECUTION_MOVES.get(ExecutionState(current), frozenset()):
        raise IllegalTransitionError("execution", current, target)


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
