"""Hardening tests: bad input, limits, attacks (issue 8).

`make test` runs them with small example budgets; `make test-hardening` sets
FLEETFLOW_HARDENING_EXAMPLES higher (see docs/reliability.md).
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hardening: bad-input, limit and attack tests (issue 8)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/hardening/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.hardening)
