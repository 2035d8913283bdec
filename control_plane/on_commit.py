"""Work that must happen only once a session's transaction has committed: counting an
execution's end in the metrics, waking the requests that wait for it.

`on_commit` queues an action on the session; the actions run, in order, right after the
commit, and are dropped if the transaction rolls back (so a transaction retried after a failed
commit acts once). An action runs in the committing thread, after the commit: it must not
raise, or the commit would look failed to its caller.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session

_KEY = "fleetflow.on_commit"


def on_commit(session: Session, action: Callable[[], object]) -> None:
    """Run `action` once `session`'s transaction commits; never if it rolls back."""
    session.info.setdefault(_KEY, []).append(action)


@event.listens_for(Session, "after_commit")
def _run_committed(session: Session) -> None:
    for action in session.info.pop(_KEY, ()):
        action()


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_KEY, None)
