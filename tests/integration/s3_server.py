"""Fixtures for the S3 tier: a real S3-compatible server (SeaweedFS, infra/scripts/s3_server.py)
on a free loopback port for the whole session, and a fresh bucket per test.

A test module uses them with `pytest_plugins = ["tests.integration.s3_server"]`. When the
server cannot be built or started the tests skip with a loud reason; with FLEETFLOW_REQUIRE_S3=1
(CI) they fail instead.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from fleetflow.storage.s3 import S3BlobStore, S3Settings
from tests.tiers import load_script, require_built, tier_unavailable

REQUIRE_ENV = "FLEETFLOW_REQUIRE_S3"


def load_tooling() -> ModuleType:
    return load_script("infra/scripts/s3_server.py")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    """A throw-away S3 server for the session; `.env()` gives its `FLEETFLOW_S3_*` settings."""
    tooling = load_tooling()
    require_built("S3 server", tooling.binary_path(), tooling.BIN_ENV, REQUIRE_ENV)
    try:
        server = tooling.start_s3_server()
    except tooling.S3ServerUnavailableError as exc:
        tier_unavailable(f"S3 TESTS SKIPPED - the S3 server did not start: {exc}", REQUIRE_ENV)
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
