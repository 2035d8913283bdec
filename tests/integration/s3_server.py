"""Fixtures for the S3 tier: a real S3-compatible server (SeaweedFS, infra/scripts/s3_server.py)
on a free loopback port for the whole session, and a fresh bucket per test.

A test module uses them with `pytest_plugins = ["tests.integration.s3_server"]`. When the
server cannot be built or started the tests skip with a loud reason; with FLEETFLOW_REQUIRE_S3=1
(CI) they fail instead.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fleetflow.storage.s3 import S3BlobStore, S3Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


class S3UnavailableWarning(UserWarning):
    """S3 tests were skipped: the S3 tier did not run."""


def load_tooling() -> ModuleType:
    """`infra/scripts/s3_server.py` (tooling scripts are not an installed package)."""
    name = "fleetflow_infra_s3_server"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, REPO_ROOT / "infra" / "scripts" / "s3_server.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    """A throw-away S3 server for the session; `.env()` gives its `FLEETFLOW_S3_*` settings."""
    tooling = load_tooling()
    try:
        server = tooling.start_s3_server()
    except tooling.S3ServerUnavailableError as exc:
        message = f"S3 TESTS SKIPPED - no S3 server could be provisioned: {exc}"
        if os.environ.get("FLEETFLOW_REQUIRE_S3") == "1":
            pytest.fail(message)
        warnings.warn(message, S3UnavailableWarning, stacklevel=1)
        pytest.skip(message)
    try:
        yield server
    finally:
        server.stop()
        assert server.process.poll() is not None, "the S3 server outlived its fixture"


@pytest.fixture
def s3_settings(s3_server: Any) -> S3Settings:
    return S3Settings(
        **{k.removeprefix("FLEETFLOW_S3_").lower(): v for k, v in s3_server.env().items()}
    )


@pytest.fixture
def s3_bucket(s3_settings: S3Settings) -> str:
    """A new, empty bucket on the session's server."""
    bucket = f"ff-{uuid.uuid4().hex[:16]}"
    S3BlobStore(bucket, settings=s3_settings).ensure_bucket()
    return bucket
