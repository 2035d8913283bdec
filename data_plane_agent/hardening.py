"""Keep the cluster token away from the tasks the agent runs (issue 13, finding 2).

Local-process tasks run as the agent's own user. Such a process may read another process's
`/proc/<pid>/environ` (the environment it was *started* with, whatever it unset since),
`/proc/<pid>/mem`, and attach a debugger to it, as long as that process is *dumpable*. So the
agent, once its settings are read:

- makes itself non-dumpable (`prctl(PR_SET_DUMPABLE, 0)`): the kernel then gives its `/proc`
  entries to root and refuses same-user `ptrace` and reads of its environment and memory;
- removes the token's variable from `os.environ` (`forget_token_environment`), so nothing it
  starts later inherits it, whatever environment that child is given.

`exec` makes a process dumpable again, so tasks, which the agent starts with `exec`, stay
ordinary processes; the die-with-parent request (`fleetflow.child_processes`) is unaffected.
A task can still read any *file* its user can, the token file included: against hostile tasks,
read the token from standard input (`--token-file -`) or run tasks as another user.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

logger = logging.getLogger(__name__)

TOKEN_ENV = "FLEETFLOW_AGENT_TOKEN"
"""The variable the cluster token may come from; removed once the settings are loaded."""

_PR_GET_DUMPABLE = 3
_PR_SET_DUMPABLE = 4


def make_process_undumpable() -> bool:
    """Make this process non-dumpable, so that other processes of its user (its tasks) cannot
    read its `/proc/<pid>/environ` or memory, nor `ptrace` it. No core dumps are written either.

    Returns:
        True when the process is non-dumpable now; False on a platform without
        `PR_SET_DUMPABLE` (not Linux), where a warning is logged and nothing changes.

    Raises:
        OSError: Linux refused the request (it should not: a process may always lower its own
            dumpability).
    """
    if sys.platform != "linux":
        logger.warning(
            "cannot make the agent non-dumpable on %s (Linux only): processes of its user, "
            "tasks included, may read its memory and the cluster token in it",
            sys.platform,
        )
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_DUMPABLE, 0) failed: {os.strerror(errno)}")
    if libc.prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError("prctl(PR_SET_DUMPABLE, 0) did not take effect")
    return True


def forget_token_environment() -> None:
    """Remove the token's variable from `os.environ` (and so from the C environment children
    inherit). `/proc/self/environ` keeps showing it: hence `make_process_undumpable`."""
    for name in [n for n in os.environ if n.upper() == TOKEN_ENV]:  # settings ignore case
        del os.environ[name]
