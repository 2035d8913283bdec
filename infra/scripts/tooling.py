"""What the tooling scripts beside this one share: messages on stderr, the build cache and
system packages installed with apt-get (a server's process: `server_process`).

The scripts run as commands (`python infra/scripts/x.py`) and are imported by the tests by
path; each puts this folder on `sys.path` to import this module either way.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
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


def exit_status(run: Callable[[], object], unavailable: type[Exception], report: Reporter) -> int:
    """A script's exit status: 0 once `run` returns, 1 with the reason framed on stderr when it
    raises `unavailable` (the tool cannot be provided or started here)."""
    try:
        run()
    except unavailable as exc:
        report.loud(str(exc))
        return 1
    return 0


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


def can_apt_get_install() -> bool:
    """Whether a missing system package may be installed here: as root, with apt-get."""
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def apt_get_install(args: Sequence[str], unavailable: type[Exception]) -> None:
    """`apt-get update`, then `apt-get install -y <args>`, without questions.

    Raises:
        unavailable: either command failed; the message has its output.
    """
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", *args]):
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise unavailable(
                f"`{' '.join(command)}` failed with exit code {result.returncode}:\n"
                f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )
