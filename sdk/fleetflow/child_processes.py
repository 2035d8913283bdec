"""Child processes that do not outlive their parent (the dev stack's, the agent's tasks).

A Python child asks for it itself: the parent puts its pid in `FLEETFLOW_PARENT_PID` and the
child calls `die_with_parent_if_asked()` first thing. That avoids `preexec_fn`, which runs
Python in a child forked from a threaded process (gRPC) and can crash it. Native children
(the Temporal server) get `die_with_parent_hook()` as `preexec_fn`, only while the parent has
no gRPC threads yet.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

PARENT_PID_ENV = "FLEETFLOW_PARENT_PID"
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _die_with_parent() -> None:
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def die_with_parent_hook() -> Callable[[], None] | None:
    """A `preexec_fn` for native children of a process that has no threads yet."""
    return _die_with_parent if _LIBC is not None else None


def parent_env() -> dict[str, str]:
    """Environment that asks a Python child to die with this process."""
    return {PARENT_PID_ENV: str(os.getpid())}


def die_with_parent_if_asked() -> None:
    """Receive SIGTERM when the parent named in the environment dies; exit now if it already
    has (the parent may die between our fork and this call)."""
    expected = os.environ.pop(PARENT_PID_ENV, "")
    if not expected.isdigit() or _LIBC is None:
        return
    _die_with_parent()
    if os.getppid() != int(expected):
        os._exit(1)
