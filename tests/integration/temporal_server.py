"""Fixtures for the Temporal-server tier: a real Temporal server with SQLite persistence
(infra/scripts/temporal.py) that a test may kill and start again on the same port and database.

A test module uses them with `pytest_plugins = ["tests.integration.temporal_server"]`. When the
server cannot be built or started the tests skip with a loud reason; with
FLEETFLOW_REQUIRE_TEMPORAL_SERVER=1 (CI) they fail instead.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


class TemporalServerUnavailableWarning(UserWarning):
    """Tests against the real Temporal server were skipped: that tier did not run."""


def load_tooling() -> ModuleType:
    """`infra/scripts/temporal.py` (tooling scripts are not an installed package)."""
    name = "fleetflow_infra_temporal"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, REPO_ROOT / "infra" / "scripts" / "temporal.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture
def temporal_dev_server(tmp_path: Path) -> Iterator[Any]:
    """A server of this test's own, persisting to `tmp_path/temporal/temporal.db`."""
    tooling = load_tooling()
    directory = tmp_path / "temporal"
    directory.mkdir()
    try:
        server = tooling.start_temporal_server(directory / "temporal.db")
    except tooling.TemporalUnavailableError as exc:
        message = f"TEMPORAL SERVER TESTS SKIPPED - no Temporal server could be provisioned: {exc}"
        if os.environ.get("FLEETFLOW_REQUIRE_TEMPORAL_SERVER") == "1":
            pytest.fail(message)
        warnings.warn(message, TemporalServerUnavailableWarning, stacklevel=1)
        pytest.skip(message)
    try:
        yield server
    finally:
        server.stop()
        assert server.process.poll() is not None, "the Temporal server outlived its fixture"
