"""Fixtures that start real servers: the Temporal test server and whole Fleetflow stacks."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from control_plane import processes
from fleetflow.storage import LocalBlobStore
from tests.integration.stack import Stack, TemporalServer, start_stack, start_temporal
from tests.integration.test_api import FakeLauncher


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test that used a whole stack reports its servers' logs: a control plane that
    died or an agent that stopped says why there, not only in the test's own assertion."""
    report = yield
    if report.failed:
        for name, value in getattr(item, "funcargs", {}).items():
            if isinstance(value, Stack):
                report.sections.append((f"logs of the stack `{name}`", value.logs()))
    return report


@pytest.fixture(scope="session")
def temporal_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalServer]:
    server = start_temporal(tmp_path_factory.mktemp("temporal"))
    yield server
    processes.stop(server.process)


STACKS = ["sqlite", "postgres", "postgres-split-worker"]
DEFAULT_STACKS = ("sqlite", "postgres-split-worker")
"""Where a `stack` test runs unless its module says otherwise: both databases and both places
of the Temporal worker (in the API's process, and in its own process as in production). The
third combination, PostgreSQL with the worker in the API's process, adds nothing either does
not test; a module that needs it marks `stacks(...)`, and `FLEETFLOW_ALL_STACKS=1` runs every
module on all three."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A `stack` test runs on its module's `stacks(...)` marker's stacks, else on
    `DEFAULT_STACKS` (all of `STACKS` with `FLEETFLOW_ALL_STACKS=1`)."""
    every = os.environ.get("FLEETFLOW_ALL_STACKS") == "1"
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        marker = item.get_closest_marker("stacks")
        params = getattr(getattr(item, "callspec", None), "params", {})
        allowed = marker.args if marker is not None else STACKS if every else DEFAULT_STACKS
        if "stack" in params and params["stack"] not in allowed:
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(scope="module", params=STACKS)
def stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    temporal_server: TemporalServer,
) -> Iterator[Stack]:
    home: Path = tmp_path_factory.mktemp(f"stack-{request.param}")
    if request.param == "sqlite":  # the others run on PostgreSQL
        url = f"sqlite:///{home / 'fleetflow.db'}"
    else:
        url = request.getfixturevalue("postgres_database_factory")()
    running = start_stack(home, url, temporal_server, split=request.param.endswith("split-worker"))
    yield running
    running.stop()


@pytest.fixture
def launcher() -> FakeLauncher:
    """Records the executions the in-process API starts, instead of Temporal."""
    return FakeLauncher()


@pytest.fixture
def blob_store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")
