"""Child processes that do not outlive their parent (servers, the dev stack's, the agent's tasks).

A Python child asks for it itself: the parent puts its pid in `FLEETFLOW_PARENT_PID` and the
child calls `die_with_parent_if_asked()` first thing. A native child (a Go server) is started
through this file run as a script, `die_with_parent_argv(argv)`: it asks for the parent-death
signal and then `exec`s the server, which keeps the request. That avoids `preexec_fn`, which
runs Python in a child forked from a threaded process (gRPC, pytest plugins) and can crash it.
A server that daemonizes itself (PostgreSQL's `pg_ctl start`) gets a guard instead,
`guard_argv(pid)`: a small child of ours that signals the server when we die.

The kernel sends the signal when the *thread* that forked the child exits, so start such
children from a thread that lives as long as they should (the main thread, in practice).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import sys
import time

PARENT_PID_ENV = "FLEETFLOW_PARENT_PID"
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _die_with_parent() -> None:
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def parent_env() -> dict[str, str]:
    """Environment that asks a Python child (or the wrapper below) to die with this process."""
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


def die_with_parent_argv(argv: list[str]) -> list[str]:
    """`argv` wrapped so that the native program gets SIGTERM when this process dies.

    The caller must also pass `parent_env()` in the child's environment.
    """
    # -I: stdlib only, and not this folder on sys.path (our types.py would shadow the stdlib).
    return [sys.executable, "-I", os.path.abspath(__file__), "exec", *argv]


def as_user_argv(uid: int, argv: list[str]) -> list[str]:
    """`argv` wrapped so that it runs as `uid` (group `uid`, no supplementary groups, umask
    077). The caller must be root. The switch happens in the wrapper, after `exec`: asking
    `subprocess` for `user=` would `fork` a threaded process (gRPC) instead of `vfork`ing it,
    and gRPC's fork handlers can crash the parent."""
    return [sys.executable, "-I", os.path.abspath(__file__), "as-user", str(uid), *argv]


def become_user(uid: int) -> None:
    """Switch this process to `uid` for good: group `uid`, no supplementary groups, umask 077.
    The caller must be root. Exits at once (126) if any of it did not take: a task never runs
    with the caller's rights. Shared by `as_user_argv`'s wrapper and the fork server's children
    (`fleetflow.forkserver`), so that both switch the same way."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (uid, uid, uid) or os.getgroups():
        os._exit(126)
    os.umask(0o077)


def _as_user(uid: int, argv: list[str]) -> None:
    # Found while we can still read our own installation: once switched, this interpreter may
    # not import the modules a PATH search needs (a Python below a mode-700 home).
    program = shutil.which(argv[0]) or argv[0]
    become_user(uid)
    os.execv(program, argv)


def guard_argv(pid: int, sig: signal.Signals = signal.SIGTERM) -> list[str]:
    """A guard process that sends `sig` to `pid` when this process dies (and exits when `pid`
    does). Start it with `parent_env()` in its environment."""
    return [sys.executable, "-I", os.path.abspath(__file__), "guard", str(pid), sig.name]


def _guard(pid: int, sig: signal.Signals) -> None:
    def fire(*_: object) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        os._exit(0)

    signal.signal(signal.SIGTERM, fire)
    parent = int(os.environ.pop(PARENT_PID_ENV, "0"))
    _die_with_parent()
    if os.getppid() != parent:
        fire()  # the parent died before we asked for the signal
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return  # the server ended on its own
        except PermissionError:
            pass  # alive, owned by another user (a server run as `postgres` while we are root)
        time.sleep(1)


def _main(args: list[str]) -> None:
    if args[:1] == ["exec"] and len(args) > 1:
        die_with_parent_if_asked()
        os.execvp(args[1], args[1:])
    if args[:1] == ["as-user"] and len(args) > 2 and args[1].isdigit():
        _as_user(int(args[1]), args[2:])
    if args[:1] == ["guard"] and len(args) == 3:
        _guard(int(args[1]), signal.Signals[args[2]])
        return
    sys.stderr.write(
        "usage: child_processes.py exec PROGRAM [ARG...] | as-user UID PROGRAM [ARG...] | "
        "guard PID SIGNAL\n"
    )
    sys.exit(2)


if __name__ == "__main__":
    _main(sys.argv[1:])
