"""The state-transition policy: every legal move, every illegal one (an answer that says why,
not an exception), and the timestamps."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from control_plane.lifecycle.transitions import (
    IllegalTransition,
    attempt_values,
    check_attempt_transition,
    check_execution_transition,
    execution_values,
)
from fleetflow.states import AttemptState, ExecutionState

A = AttemptState
E = ExecutionState

# The table written out by hand from DESIGN.md and docs/architecture.md, not read back from the
# module, so a change to the policy has to change this test too.
LEGAL_ATTEMPT_MOVES = {
    (A.PENDING, A.ASSIGNED),
    (A.PENDING, A.CANCELLED),
    (A.ASSIGNED, A.LEASED),
    (A.ASSIGNED, A.CANCELLED),
    (A.ASSIGNED, A.LOST),
    (A.LEASED, A.RUNNING),
    # A leased attempt may report a terminal state directly (a task that fails at once).
    (A.LEASED, A.SUCCEEDED),
    (A.LEASED, A.FAILED),
    (A.LEASED, A.CANCELLED),
    (A.LEASED, A.LOST),
    (A.RUNNING, A.SUCCEEDED),
    (A.RUNNING, A.FAILED),
    (A.RUNNING, A.CANCELLED),
    (A.RUNNING, A.LOST),
    # The scheduler takes an attempt's GPUs back (cohorts): from any state that holds them.
    (A.ASSIGNED, A.PREEMPTED),
    (A.LEASED, A.PREEMPTED),
    (A.RUNNING, A.PREEMPTED),
}
LEGAL_EXECUTION_MOVES = {
    (E.QUEUED, E.RUNNING),
    (E.QUEUED, E.FAILED),
    (E.QUEUED, E.CANCELLED),
    (E.RUNNING, E.SUCCEEDED),
    (E.RUNNING, E.FAILED),
    (E.RUNNING, E.CANCELLED),
}
ILLEGAL_ATTEMPT_MOVES = sorted(set(itertools.product(A, A)) - LEGAL_ATTEMPT_MOVES)
ILLEGAL_EXECUTION_MOVES = sorted(set(itertools.product(E, E)) - LEGAL_EXECUTION_MOVES)
NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def _name(move: object) -> str:
    assert isinstance(move, tuple)
    return f"{move[0]}->{move[1]}"


@pytest.mark.parametrize("move", sorted(LEGAL_ATTEMPT_MOVES), ids=_name)
def test_legal_attempt_moves_are_allowed(move: tuple[AttemptState, AttemptState]) -> None:
    current, target = move
    assert check_attempt_transition(current.value, target) is None


@pytest.mark.parametrize("move", ILLEGAL_ATTEMPT_MOVES, ids=_name)
def test_illegal_attempt_moves_are_refused(move: tuple[AttemptState, AttemptState]) -> None:
    current, target = move
    refused = check_attempt_transition(current.value, target)
    assert isinstance(refused, IllegalTransition)
    assert refused.current == current.value
    assert refused.target == target.value
    assert str(refused) == f"attempt cannot move from {current} to {target}"


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (A.SUCCEEDED, A.RUNNING),  # a late RUNNING after SUCCEEDED
        (A.FAILED, A.SUCCEEDED),  # out of a terminal state
        (A.CANCELLED, A.RUNNING),
        (A.LOST, A.LEASED),
        (A.PENDING, A.LEASED),  # skipping placement
        (A.PENDING, A.RUNNING),
        (A.ASSIGNED, A.RUNNING),  # reporting without a lease
        (A.RUNNING, A.LEASED),  # backwards
        (A.LEASED, A.ASSIGNED),
        (A.ASSIGNED, A.PENDING),
        (A.RUNNING, A.RUNNING),  # a repeat is not a move
    ],
)
def test_named_illegal_attempt_moves(current: AttemptState, target: AttemptState) -> None:
    # Guards the generated list above against a typo in the legal table.
    assert (current, target) in ILLEGAL_ATTEMPT_MOVES
    assert isinstance(check_attempt_transition(current.value, target), IllegalTransition)


def test_nothing_leaves_a_terminal_attempt_state() -> None:
    for current in (s for s in A if s.terminal):
        for target in A:
            assert isinstance(check_attempt_transition(current.value, target), IllegalTransition)


@pytest.mark.parametrize("move", sorted(LEGAL_EXECUTION_MOVES), ids=_name)
def test_legal_execution_moves_are_allowed(move: tuple[ExecutionState, ExecutionState]) -> None:
    current, target = move
    assert check_execution_transition(current.value, target) is None


@pytest.mark.parametrize("move", ILLEGAL_EXECUTION_MOVES, ids=_name)
def test_illegal_execution_moves_are_refused(move: tuple[ExecutionState, ExecutionState]) -> None:
    current, target = move
    refused = check_execution_transition(current.value, target)
    assert isinstance(refused, IllegalTransition)
    assert refused.current == current.value
    assert refused.target == target.value
    assert str(refused) == f"execution cannot move from {current} to {target}"


def test_an_unknown_current_state_is_an_error_not_a_move() -> None:
    with pytest.raises(ValueError):
        check_attempt_transition("EXPLODED", A.RUNNING)
    with pytest.raises(ValueError):
        check_execution_transition("EXPLODED", E.RUNNING)


@pytest.mark.parametrize(
    ("target", "column"),
    [
        (A.PENDING, None),
        (A.ASSIGNED, None),
        (A.LEASED, "leased_at"),
        (A.RUNNING, "started_at"),
        (A.SUCCEEDED, "finished_at"),
        (A.FAILED, "finished_at"),
        (A.CANCELLED, "finished_at"),
        (A.LOST, "finished_at"),
    ],
)
def test_attempt_moves_stamp_their_timestamp(target: AttemptState, column: str | None) -> None:
    expected: dict[str, object] = {"status": target.value}
    if column is not None:
        expected[column] = NOW
    assert attempt_values(target, NOW) == expected


@pytest.mark.parametrize(
    ("target", "column"),
    [
        (E.QUEUED, None),
        (E.RUNNING, "started_at"),
        (E.SUCCEEDED, "finished_at"),
        (E.FAILED, "finished_at"),
        (E.CANCELLED, "finished_at"),
    ],
)
def test_execution_moves_stamp_their_timestamp(target: ExecutionState, column: str | None) -> None:
    expected: dict[str, object] = {"status": target.value}
    if column is not None:
        expected[column] = NOW
    assert execution_values(target, NOW) == expected
