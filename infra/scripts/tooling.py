"""What the tooling scripts beside this one share: messages on stderr and the build cache.

The scripts run as commands (`python infra/scripts/x.py`) and are imported by the tests by
path; each puts this folder on `sys.path` to import this module either way.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Reporter:
    """Progress lines `[fleetflow <tool>] …` on stderr; `loud` frames what must be noticed."""

    tool: str

    def say(self, message: str) -> None:
        sys.stderr.write(f"[fleetflow {self.tool}] {message}\n")
        sys.stderr.flush()

    def loud(self, message: str) -> None:
        bar = "!" * 78
        sys.stderr.write(f"\n{bar}\n[fleetflow {self.tool}] {message}\n{bar}\n\n")
        sys.stderr.flush()


def cache_root() -> Path:
    """Where built tools are kept: outside the repository, shared by every checkout
    (`$FLEETFLOW_CACHE_DIR`, else `$XDG_CACHE_HOME/fleetflow`, else `~/.cache/fleetflow`)."""
    if os.environ.get("FLEETFLOW_CACHE_DIR"):
        return Path(os.environ["FLEETFLOW_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fleetflow"
