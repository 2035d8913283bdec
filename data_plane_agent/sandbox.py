"""Task sandboxes of the local-process executor: each attempt runs as a user of its own.

A task is untrusted code. Run as the agent's user it could read the agent's files (lease
secrets, its token file, the blob store it stages from, other attempts' directories) and signal
or trace other tasks. So when it can (the agent is root, or was given a uid range it may switch
to), the executor runs every attempt as a uid taken from a range (`FLEETFLOW_AGENT_TASK_UIDS`,
default 50000-59999), with a group of the same number and no supplementary groups:

- no two running attempts share a uid, and a uid is handed out again only after every process
  left under it was killed (a task that escaped its process group does not outlive its
  attempt); uids and gids that name a user or group of this machine are skipped;
- the attempt's sandbox directory (its code, staged inputs, outputs, result file; `HOME` and
  `TMPDIR` point into it) is the only directory it owns; everything the agent keeps is the
  agent's, mode 0700 or 0600;
- the interpreter must be one that user can run: the agent's own when it can, else a system
  Python of the same version given the agent's import paths (`FLEETFLOW_AGENT_TASK_PYTHON`
  names one outright). The choice is probed once, by running it as a task user.

When the agent is root, tasks must not run as root: no usable uid or interpreter is an error
at start. A non-root agent without a uid range runs tasks as itself and says so at start.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import hashlib
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from data_plane_agent.executors.base import ExecutorStartError
from fleetflow.child_processes import as_user_argv

logger = logging.getLogger(__name__)

DEFAULT_TASK_UIDS = "50000-59999"
_PROBE_SECONDS = 60.0


@dataclass(frozen=True)
class UidRange:
    first: int
    last: int

    @classmethod
    def parse(cls, text: str) -> UidRange:
        """`"50000-59999"` (or one uid) -> a range; ValueError naming the problem."""
        first_text, _, last_text = text.strip().partition("-")
        try:
            first = int(first_text)
            last = int(last_text) if last_text else first
        except ValueError:
            raise ValueError(f"task uids {text!r}: expected FIRST-LAST, e.g. 50000-59999") from None
        if not 0 < first <= last < 2**32 - 1:
            raise ValueError(f"task uids {text!r}: need 0 < FIRST <= LAST < 4294967295")
        return cls(first, last)


class TaskUsers:
    """Hands out a uid per running attempt (see the module docstring).

    Every agent of the machine draws from the same default range, so a uid is also locked
    machine-wide while an attempt holds it (`flock` on `<lock_dir>/<uid>.lock`, released with
    the lock's file, also when the agent dies): two agents never give one uid to two tasks,
    nor kill each other's tasks when an attempt of theirs ends.

    The lock file also says whether the uid was given up swept (`release(swept=True)`: the
    holder saw none of its processes left after the attempt's end). Only then does the next
    `acquire` skip its own look at every process, which cost about 3 ms of each launch; a uid
    whose holder died, or gave it up unswept, or a lock file that says anything else, is swept
    as before.
    """

    def __init__(self, uids: UidRange, lock_dir: Path | None = None) -> None:
        self._uids = uids
        self._lock_dir = lock_dir or _uid_lock_dir()
        self._next = uids.first
        self._held: dict[int, int] = {}  # uid -> its lock file's descriptor
        self._lock = threading.Lock()

    def acquire(self) -> int:
        """A uid no running attempt of this machine holds and no account names, with no
        process left running as it.

        Raises:
            ExecutorStartError: every uid of the range is taken or named.
        """
        size = self._uids.last - self._uids.first + 1
        with self._lock:
            for _ in range(size):
                uid = self._next
                self._next = uid + 1 if uid < self._uids.last else self._uids.first
                if uid in self._held or _names_an_account(uid):
                    continue
                fd = self._try_lock(uid)
                if fd is not None:
                    self._held[uid] = fd
                    was_swept = os.pread(fd, len(_SWEPT) + 1, 0) == _SWEPT
                    _mark(fd, _HELD)  # until released swept, the next holder sweeps
                    if not was_swept:
                        # A process left by an agent that died holding the uid must not share
                        # it with the next task.
                        kill_processes_of(uid)
                    return uid
        raise ExecutorStartError(
            f"no free task uid in {self._uids.first}-{self._uids.last}: widen "
            "FLEETFLOW_AGENT_TASK_UIDS or run fewer attempts at once"
        )

    def _try_lock(self, uid: int) -> int | None:
        path = self._lock_dir / f"{uid}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def release(self, uid: int, *, swept: bool = False) -> None:
        """Let another attempt have `uid`. `swept`: the caller killed every process of it
        after the attempt's last one ended, and saw none left (`kill_processes_of`), so the
        next `acquire` need not look again; else it kills whatever still runs as it."""
        with self._lock:
            fd = self._held.pop(uid, None)
        if fd is not None:
            try:
                if swept:
                    _mark(fd, _SWEPT)
            finally:
                os.close(fd)


# What a uid's lock file holds: written while held, and when given up swept.
_HELD = b"held"
_SWEPT = b"swept"


def _mark(fd: int, state: bytes) -> None:
    """Write `state` as the whole of the lock file (not synced: a machine that restarts has
    no process of the uid left anyway)."""
    os.pwrite(fd, state, 0)
    os.ftruncate(fd, len(state))


def _uid_lock_dir() -> Path:
    """Where task uids are locked: one place for every agent of the machine (they all run as
    root to switch users), owner-only."""
    for candidate in (
        Path("/run/fleetflow/task-uids"),
        Path(tempfile.gettempdir()) / "fleetflow-task-uids",
    ):
        try:
            candidate.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            continue
        info = candidate.lstat()
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid():
            candidate.chmod(0o700)
            return candidate
    raise ExecutorStartError(
        "no directory to lock task uids in: /run/fleetflow/task-uids cannot be made, and "
        f"{Path(tempfile.gettempdir()) / 'fleetflow-task-uids'} is not the agent's own"
    )


_CAP_SETGID, _CAP_SETUID = 6, 7


def can_switch_users() -> bool:
    """Whether this process may change its uid and gid (root with its capabilities)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    effective = int(line.split()[1], 16)
                    return all(effective >> cap & 1 for cap in (_CAP_SETGID, _CAP_SETUID))
    except (OSError, ValueError):
        pass
    return False


def _names_an_account(uid: int) -> bool:
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(uid)
        except KeyError:
            continue
        return True
    return False


def kill_processes_of(uid: int) -> bool:
    """SIGKILL every process whose real, effective or saved uid is `uid`; True when a look
    found none left (False: they kept forking faster than five looks killed them)."""
    for _ in range(5):  # a process may fork while we look: look again until none is left
        found = [pid for pid in _pids() if uid in _uids_of(pid)]
        if not found:
            return True
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    return False


def _pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def _uids_of(pid: int) -> tuple[int, ...]:
    """The real, effective, saved and filesystem uids of `pid` (none once it is gone).

    Read as bytes in one call: a sweep reads every process's status twice per attempt, and
    a text file iterated line by line made the sweeps two fifths of the agent's CPU in a
    fan-out. (The owner of `/proc/<pid>` is no substitute: a process that makes itself
    undumpable shows as root's.)"""
    try:
        fd = os.open(f"/proc/{pid}/status", os.O_RDONLY)
    except OSError:
        return ()
    try:
        status = os.read(fd, 4096)  # "Uid:" is within the first few hundred bytes
    except OSError:
        return ()
    finally:
        os.close(fd)
    start = status.find(b"\nUid:")
    if start < 0:
        return ()
    end = status.find(b"\n", start + 1)
    try:
        return tuple(int(part) for part in status[start + 5 : end].split())
    except ValueError:
        return ()


@dataclass(frozen=True)
class Interpreter:
    """How a task process starts Python: the executable, and the import paths it needs."""

    executable: str
    pythonpath: tuple[str, ...] = ()

    def env(self) -> dict[str, str]:
        return {"PYTHONPATH": os.pathsep.join(self.pythonpath)} if self.pythonpath else {}


def _agent_import_paths() -> tuple[str, ...]:
    """The agent's import paths outside its Python's own installation (the virtualenv's
    site-packages, editable installs), for another interpreter of the same version."""
    base = Path(sys.base_prefix).resolve()
    paths = []
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        if Path(entry).resolve().is_relative_to(base):
            continue
        paths.append(entry)
    return tuple(dict.fromkeys(paths))


def interpreter_candidates(configured: str | None) -> list[Interpreter]:
    if configured:
        return [Interpreter(configured, _agent_import_paths())]
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [Interpreter(sys.executable)]
    for system in (f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        if os.path.exists(system) and os.path.realpath(system) != os.path.realpath(sys.executable):
            candidates.append(Interpreter(system, _agent_import_paths()))
    return candidates


def probe(interpreter: Interpreter, uid: int | None, cwd: Path) -> str | None:
    """Why `interpreter` cannot start the task runtime as `uid`, or None when it can."""
    try:
        done = subprocess.run(
            as_user(uid, [interpreter.executable, "-c", "import fleetflow.runtime"]),
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **interpreter.env()},
            cwd=cwd,
            capture_output=True,
            timeout=_PROBE_SECONDS,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{interpreter.executable}: {exc}"
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        return f"{interpreter.executable}: {lines[-1] if lines else f'exit {done.returncode}'}"
    return None


def as_user(uid: int | None, argv: list[str]) -> list[str]:
    """`argv`, run as `uid` when one is given (`fleetflow.child_processes.as_user_argv`)."""
    return argv if uid is None else as_user_argv(uid, argv)


def traversable_by_others(path: Path) -> bool:
    """Whether a user with no rights of its own can reach entries below `path`."""
    for directory in (path, *path.parents):
        try:
            mode = directory.stat().st_mode
        except FileNotFoundError:
            continue  # will be created by us, with a mode we choose
        if not mode & stat.S_IXOTH:
            return False
    return True


class NotTheTasksFile(Exception):
    """A file the agent was to read for a task is not one the task wrote (the message says
    why, to follow its name: "is not a regular file")."""


@contextlib.contextmanager
def open_task_file(path: Path, owner: int | None) -> Iterator[int]:
    """A descriptor of `path`, a file a task wrote: opened without following a link (a task
    may plant one to a file only the agent can read), and only if it is a regular file owned
    by `owner` (any owner when None; a hard link to a file of the agent's is the agent's).

    Raises:
        OSError: it cannot be opened (a link: ELOOP).
        NotTheTasksFile: it is not a regular file, or not the task user's.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotTheTasksFile("is not a regular file")
        if owner is not None and info.st_uid != owner:
            raise NotTheTasksFile("is not a file the task wrote")
        yield fd
    finally:
        os.close(fd)


def read_regular_file(path: Path, owner: int | None, max_bytes: int) -> bytes | None:
    """At most `max_bytes` of `path` if `open_task_file` opens it, else None."""
    try:
        with open_task_file(path, owner) as fd, os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(max_bytes)
    except (OSError, NotTheTasksFile):
        return None


@dataclass(frozen=True)
class TaskIsolation:
    """How the local-process executor separates tasks from the agent and from each other."""

    users: TaskUsers | None
    """Where each attempt's uid comes from; None: tasks run as the agent's user."""
    interpreter: Interpreter
    sandbox_root: Path
    """Below it, one directory per running attempt, owned by the attempt's user."""


_probed: set[tuple[Interpreter, bool]] = set()
"""Interpreters a probe found usable (with or without task users): probed once a process."""


def resolve_isolation(
    work_dir: Path,
    *,
    task_uids: str = "auto",
    task_python: str | None = None,
    sandbox_dir: Path | None = None,
) -> TaskIsolation:
    """The isolation the settings ask for on this machine, checked; see the module docstring.

    Raises:
        ExecutorStartError: what is asked cannot be had here (root without task users, no
            interpreter the task users can run, a sandbox directory they cannot reach).
    """
    root = os.geteuid() == 0
    switch = can_switch_users()
    users: TaskUsers | None
    if task_uids == "auto":
        if root and not switch:
            raise ExecutorStartError(
                "the agent runs as root but cannot switch users (no CAP_SETUID/CAP_SETGID), so "
                "its tasks would run as root: run it as an unprivileged user, give it those "
                "capabilities, or set FLEETFLOW_AGENT_TASK_UIDS=off to run tasks as root "
                "anyway (they can then read every file root owns)"
            )
        users = TaskUsers(UidRange.parse(DEFAULT_TASK_UIDS)) if switch else None
    elif task_uids == "off":
        if switch:
            raise ExecutorStartError(
                "task uids off: an agent that can switch users (root) must run tasks as other "
                "users (set FLEETFLOW_AGENT_TASK_UIDS to a range such as 50000-59999, or auto)"
            )
        users = None
    else:
        try:
            users = TaskUsers(UidRange.parse(task_uids))
        except ValueError as exc:
            raise ExecutorStartError(str(exc)) from None
    if users is None:
        logger.warning(
            "tasks run as the agent's own user (uid %d): they can read what the agent can; run "
            "the agent as root or give it FLEETFLOW_AGENT_TASK_UIDS to isolate them",
            os.geteuid(),
        )
    sandbox_root = _sandbox_root(work_dir, sandbox_dir, shared=users is not None)
    interpreter = _interpreter(task_python, users, sandbox_root)
    return TaskIsolation(users=users, interpreter=interpreter, sandbox_root=sandbox_root)


def _sandbox_root(work_dir: Path, configured: Path | None, *, shared: bool) -> Path:
    root = configured or work_dir.resolve() / "sandboxes"
    if configured is None and shared and not traversable_by_others(root.parent):
        digest = hashlib.sha256(str(work_dir.resolve()).encode()).hexdigest()[:12]
        root = Path(tempfile.gettempdir()).resolve() / f"fleetflow-sandboxes-{digest}"
    if shared and not traversable_by_others(root.parent):
        raise ExecutorStartError(
            f"task users cannot reach the sandbox directory {root}: a directory above it is "
            "not searchable by others; set FLEETFLOW_AGENT_SANDBOX_DIR"
        )
    root.mkdir(parents=True, exist_ok=True)
    info = root.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise ExecutorStartError(
            f"sandbox directory {root} is not a directory of the agent's own (someone else "
            "made it, or it is a link); remove it or set FLEETFLOW_AGENT_SANDBOX_DIR"
        )
    # Others may pass through to the sandbox they own, never list the others.
    root.chmod(0o711 if shared else 0o700)
    for leftover in root.iterdir():  # sandboxes of a previous agent: its tasks are gone
        shutil.rmtree(leftover, ignore_errors=True)
    return root


def _interpreter(configured: str | None, users: TaskUsers | None, cwd: Path) -> Interpreter:
    problems = []
    for candidate in interpreter_candidates(configured):
        key = (candidate, users is not None)
        if key in _probed:
            return candidate
        uid = users.acquire() if users is not None else None
        try:
            problem = probe(candidate, uid, cwd)  # waits for its process
        finally:
            if users is not None and uid is not None:
                users.release(uid)
        if problem is None:
            _probed.add(key)
            if candidate.executable != sys.executable:
                logger.info(
                    "tasks run with %s: task users cannot run the agent's Python %s",
                    candidate.executable,
                    sys.executable,
                )
            return candidate
        problems.append(problem)
    raise ExecutorStartError(
        "no Python the task users can run the task runtime with ("
        + "; ".join(problems)
        + "): set FLEETFLOW_AGENT_TASK_PYTHON to one they can, with fleetflow importable"
    )
