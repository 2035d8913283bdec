"""The contract between the agent loop and the executors (local process, Kubernetes pod)."""

from __future__ import annotations

from typing import Protocol

from data_plane_agent.attempts import AttemptEvent, TaskAssignment


class Executor(Protocol):
    """Runs attempts and tells the agent, through `next_event`, how each one goes.

    For every launched attempt an executor emits exactly one terminal event (SUCCEEDED, FAILED
    or CANCELLED), usually after a RUNNING event. None of its coroutines may block the event
    loop.
    """

    name: str
    """The executor kind the agent registers with, e.g. "local-process"."""

    async def launch(self, assignment: TaskAssignment) -> None:
        """Start the attempt. Failures to start are reported as a FAILED event, not raised."""
        ...

    async def next_event(self) -> AttemptEvent:
        """Wait for the next state change of any attempt."""
        ...

    async def kill(self, attempt_id: str, reason: str) -> None:
        """Stop a running attempt; it then ends CANCELLED with `reason`. Unknown ids are ignored."""
        ...

    def running(self) -> list[str]:
        """Ids of the attempts launched and not yet ended."""
        ...

    async def shutdown(self, reason: str) -> None:
        """Kill every running attempt (each ends CANCELLED with `reason`)."""
        ...
