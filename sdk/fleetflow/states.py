"""Attempt and execution states, the one definition both the control plane and the agent use.

The control plane's transition policy (`control_plane.lifecycle`) decides which moves are
legal; the agent reports only RUNNING and the terminal states (`AGENT_REPORTABLE`). Also
the rule of a map node with a `min_success_ratio` (how many elements may fail) and how its
outcome reads, shared by local runs, the Temporal workflow and the CLI.
"""

from __future__ import annotations

import math
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
    # Stopped by the control plane to give its GPUs back to a tenant of its cohort that needs
    # its nominal quota (or to higher-priority work of its own tenant): recorded by the control
    # plane, never reported by an agent; it runs again without using the task's retries.
    PREEMPTED = "PREEMPTED"
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
        AttemptState.PREEMPTED,
        AttemptState.SKIPPED,
    }
)

# What an agent reports: RUNNING and the terminal states of a run (LOST for attempts it stops
# because it is shutting down). PENDING, ASSIGNED, LEASED, PREEMPTED and SKIPPED belong to the
# control plane.
AGENT_REPORTABLE = frozenset(
    {
        AttemptState.RUNNING,
        AttemptState.SUCCEEDED,
        AttemptState.FAILED,
        AttemptState.CANCELLED,
        AttemptState.LOST,
    }
)


def map_failures_allowed(elements: int, min_success_ratio: float) -> int:
    """How many of a map node's `elements` may fail (after their retries) with the node still
    succeeding: at least `min_success_ratio` of them must succeed. Rounded first, so that 0.7
    of 10 needs 7 successes, not 8 (0.7 * 10 is 7.000000000000001 in floating point)."""
    needed = math.ceil(round(min_success_ratio * elements, 6))
    return elements - needed


def too_many_failures(node: str, failed: int, elements: int, min_success_ratio: float) -> str:
    """What a map node that failed for too many failed elements says, locally and remotely:
    `n1-train: 3 of 10 elements failed; min_success_ratio 0.8 needs 8 to succeed`."""
    needed = elements - map_failures_allowed(elements, min_success_ratio)
    return (
        f"{node}: {failed} of {elements} elements failed; min_success_ratio "
        f"{min_success_ratio:g} needs {needed} to succeed"
    )


def partial_success(node: str, succeeded: int, elements: int, min_success_ratio: float) -> str:
    """How a map node that succeeded with failed elements reads, locally and remotely:
    `n1-train: 8/10 elements succeeded (min_success_ratio 0.8)`."""
    return (
        f"{node}: {succeeded}/{elements} elements succeeded "
        f"(min_success_ratio {min_success_ratio:g}); the failed ones are None in its outputs"
    )
