"""Attempt and execution states, the one definition both the control plane and the agent use.

The control plane's transition policy (`control_plane.lifecycle`) decides which moves are
legal; the agent reports only RUNNING and the terminal states (`AGENT_REPORTABLE`).
"""

from __future__ import annotations

from enum import StrEnum

# The map index of an attempt (and its node's outputs) that is not an element of a map node.
NO_MAP_INDEX = -1


class AttemptState(StrEnum):
    PENDING = "PENDING"
    ASSIGNED = "ASSIGNED"
    LEASED = "LEASED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    LOST = "LOST"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL_ATTEMPT


class ExecutionState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (ExecutionState.SUCCEEDED, ExecutionState.FAILED, ExecutionState.CANCELLED)


_TERMINAL_ATTEMPT = frozenset(
    {AttemptState.SUCCEEDED, AttemptState.FAILED, AttemptState.CANCELLED, AttemptState.LOST}
)

# What an agent reports: RUNNING and the terminal states (LOST for attempts it stops because it
# is shutting down). PENDING, ASSIGNED and LEASED belong to the control plane.
AGENT_REPORTABLE = frozenset({AttemptState.RUNNING, *_TERMINAL_ATTEMPT})
