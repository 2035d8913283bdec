"""What the tooling scripts beside this one share: messages on stderr and the build cache.

The scripts run as commands (`python infra/scripts/x.py`) and are imported by the tests by
path; each puts this folder on `sys.path` to import this module either way.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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


def ensure_built(
    target: Path, bin_env: str, build: Callable[[Path], None], unavailable: type[Exception]
) -> Path:
    """A tool's binary: the one `$<bin_env>` names, else the cached build at `target`, else a
    new build into it (one process builds, concurrent ones wait for it).

    Raises:
        unavailable: `$<bin_env>` names no executable file (the build raises its own).
    """
    given = os.environ.get(bin_env)
    if given:
        if not os.access(given, os.X_OK):
            raise unavailable(f"{bin_env}={given} is not an executable file")
        return Path(given)
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.is_file():
            build(target)
    return target


def spawn_server(argv: list[str], **popen: Any) -> subprocess.Popen[bytes]:
    """Start a native server that dies with this process (SIGTERM through the parent-death
    signal), even when the test run is killed; `popen` goes to `subprocess.Popen`."""
    from fleetflow.child_processes import die_with_parent_argv, parent_env

    env = {**(popen.pop("env", None) or os.environ), **parent_env()}
    return subprocess.Popen(die_with_parent_argv(argv), env=env, **popen)


def guard_server(pid: int, sig: signal.Signals) -> subprocess.Popen[bytes]:
    """For a server that daemonized itself: a guard child that sends it `sig` when this process
    dies, and exits by itself once the server has."""
    from fleetflow.child_processes import guard_argv, parent_env

    return subprocess.Popen(
        guard_argv(pid, sig),
        env={**os.environ, **parent_env()},
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
