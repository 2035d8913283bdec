"""Marks the attempts of clusters that stopped heartbeating LOST, so they run elsewhere.

Several control-plane replicas may run this loop: every move is a compare-and-set through the
transition policy, so an attempt is lost (and re-dispatched) once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.repositories import attempts as attempts_repo
from control_plane.db.session import transaction
from control_plane.services.finish_notifier import FinishNotifier

log = logging.getLogger(__name__)


def lose_attempts_of_silent_clusters(
    sessions: sessionmaker[Session], grace: timedelta
) -> list[str]:
    with transaction(sessions) as session:
        return attempts_repo.lose_attempts_of_silent_clusters(session, grace=grace)


async def watch_cluster_health(
    sessions: sessionmaker[Session],
    notifier: FinishNotifier,
    stop: asyncio.Event,
    *,
    grace: timedelta,
    interval: float,
    reconnect_allowance: timedelta,
    on_capacity_freed: Callable[[], None] = lambda: None,
) -> None:
    """Every `interval` seconds, mark the attempts of silent clusters LOST; deliver their
    results and wake the scheduler (`on_capacity_freed`: their quota is free)."""
    # After our own start (or an outage of ours) every agent looks silent until it reconnects,
    # which its backoff may delay: give them that long before judging.
    try:
        await asyncio.wait_for(stop.wait(), timeout=(grace + reconnect_allowance).total_seconds())
    except TimeoutError:
        pass
    while not stop.is_set():
        try:
            lost = await asyncio.to_thread(lose_attempts_of_silent_clusters, sessions, grace)
            if lost:
                log.warning("%d attempt(s) lost with their silent cluster: %s", len(lost), lost)
                on_capacity_freed()
                await notifier.deliver_pending()
        except Exception:
            log.warning("cluster health round failed; retrying", exc_info=True)
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
        except TimeoutError:
            pass
