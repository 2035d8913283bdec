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
    # A node of a conditional's branch that was not taken: recorded by the control plane
    # when the branch is decided, never leased, never reported by an agent.
    SKIPPED = "SKIPPED"

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
    {
        AttemptState.SUCCEEDED,
        AttemptState.FAILED,
        AttemptState.CANCELLED,
        AttemptState.LOST,
        AttemptState.SKIPPED,
    }
)

# What an agent reports: RUNNING and the terminal states of a run (LOST for attempts it stops
# because it is shutting down). PENDING, ASSIGNED, LEASED and SKIPPED belong to the control
# plane.
AGENT_REPORTABLE = frozenset(
    {
        AttemptState.RUNNING,
        AttemptState.SUCCEEDED,
        AttemptState.FAILED,
        AttemptState.CANCELLED,
        AttemptState.LOST,
    }
)
