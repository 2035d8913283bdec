"""The contextual log fields of the agent's lines about an attempt.

Lines about an attempt carry its cluster, execution and node besides its id, also when they are
written long after the attempt ended (a report delivered after an outage). The session learns
the cluster's name when it registers; the supervisor remembers each attempt's execution and
node when it leases or adopts it; the supervisor and the reporter both log through here.
"""

from __future__ import annotations

import contextlib

from data_plane_agent.attempts import TaskAssignment
from fleetflow.logs import log_context


class AttemptLogFields:
    """Execution and node of recently leased attempts, the oldest forgotten first."""

    def __init__(self) -> None:
        self.cluster_name: str | None = None
        """The name the control plane registered this agent's cluster under, once it did."""
        self._origins: dict[str, tuple[str, str]] = {}

    def remember(self, assignment: TaskAssignment) -> None:
        self._origins[assignment.attempt_id] = (assignment.execution_id, assignment.node_id)

    def forget_oldest_beyond(self, count: int) -> None:
        """Keep only the `count` attempts remembered last."""
        while len(self._origins) > count:
            del self._origins[next(iter(self._origins))]

    def of(self, attempt_id: str) -> contextlib.AbstractContextManager[None]:
        """Log fields of an attempt: its id, and its execution and node when known (not for
        reports a previous agent process left)."""
        execution_id, node_id = self._origins.get(attempt_id, (None, None))
        return log_context(
            cluster=self.cluster_name,
            execution_id=execution_id,
            node_id=node_id,
            attempt_id=attempt_id,
        )

    def of_assignment(self, assignment: TaskAssignment) -> contextlib.AbstractContextManager[None]:
        """Log fields of an attempt being leased, from its assignment."""
        return log_context(
            cluster=self.cluster_name,
            execution_id=assignment.execution_id,
            node_id=assignment.node_id,
            attempt_id=assignment.attempt_id,
        )
