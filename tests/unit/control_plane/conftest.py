"""Fixtures of the execution activities' tests: the activities on a test database and a local
blob store, with the scheduler's wake-ups counted."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from control_plane.orchestration.activities import ExecutionActivities
from fleetflow.storage import LocalBlobStore


class Wakes:
    """Stands in for `Scheduler.wake`: counts the calls."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
def wakes() -> Wakes:
    return Wakes()


@pytest.fixture
def blobs(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


@pytest.fixture
def activities(
    session_factory: sessionmaker[Session], blobs: LocalBlobStore, wakes: Wakes
) -> ExecutionActivities:
    return ExecutionActivities(session_factory, blobs, on_attempt_ready=wakes)
