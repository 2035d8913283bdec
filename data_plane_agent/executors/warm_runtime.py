"""The agent's end of the warm task runtime (`fleetflow.forkserver`, issue 15).

Starting `python -m fleetflow.runtime` costs the interpreter's start and the runtime's imports
(0.3-0.5 s) per attempt; forking a process that has done both costs about a millisecond. So the
local-process executor keeps one fork server and asks it for each attempt's process:

- `ForkServer`: one running fork server, started with the tasks' interpreter and environment
  over a private socket pair; it forks spares when asked and passes each to the agent, which
  sends an attempt straight to a spare, and tells of their ends;
- `ForkedTask`: a process it forked, as the executor watches one (`pid`, `returncode`,
  `wait()`, like `asyncio.subprocess.Process`), or `lost` when the server died under it;
- `WarmRuntime`: the executor's fork server over time: warmed up when the executor starts,
  started again at the next launch after it died, and none while it cannot be started (the
  executor then starts tasks as before), which is logged once.
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import json
import logging
import os
import signal
import socket
import stat
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fleetflow.forkserver import ASK_FOR_SPARE, FD_SPACE, MAX_REQUEST_BYTES, received_fds

logger = logging.getLogger(__name__)

FORKSERVER_MODULE = "fleetflow.forkserver"
READY_TIMEOUT_SECONDS = 120.0
"""How long a fork server may take to import the runtime (a busy machine, a cold disk)."""
CLOSE_TIMEOUT_SECONDS = 5.0
RETRY_AFTER_SECONDS = 60.0
"""After a fork server failed to start, how long tasks start the slow way before another try."""
SPARE_AFTER_SECONDS = 0.01
"""How long after a launch took the spare the next is asked for (at once when a launch waits)."""
_MAX_REPLY_BYTES = 1 << 16


class WarmRuntimeError(Exception):
    """The fork server is not there to fork an attempt: it did not start, or it died."""


class ForkedTask:
    """A task process the fork server forked (and reaps): what the executor watches.

    Attributes:
        pid: Its pid, also its process group's and session's.
        returncode: None while it runs; then its exit code, or minus the signal that killed it.
        lost: Why its end is unknown (the fork server died, and killed it), or None.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.lost: str | None = None
        self._ended: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def wait(self) -> int:
        """Wait for it to end; its return code. Cancelling a waiter does not cancel others."""
        return await asyncio.shield(self._ended)

    def _end(self, returncode: int, lost: str | None = None) -> None:
        if self._ended.done():
            return
        self.returncode = returncode
        self.lost = lost
        self._ended.set_result(returncode)


class ForkServer:
    """One running fork server (`fleetflow.forkserver`), started by `start`.

    It keeps one spare in hand: a process the server forked ahead, waiting for its attempt on
    a socket pair whose other end is ours. A launch sends its attempt straight to the spare;
    the next spare is asked for `SPARE_AFTER_SECONDS` later (at once when a launch waits for
    one), so that its fork and first steps do not compete with the attempt just handed over
    for a core of a small machine.
    """

    def __init__(self, process: asyncio.subprocess.Process, control: socket.socket) -> None:
        self._process = process
        self._control = control
        self._loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[None] = self._loop.create_future()
        self._spares: dict[int, socket.socket] = {}  # in the order they came
        self._waiting: collections.deque[asyncio.Future[tuple[int, socket.socket]]] = (
            collections.deque()
        )
        self._asked = 0  # spares asked for and not come (nor refused) yet
        self._top_up_handle: asyncio.TimerHandle | None = None
        self._tasks: dict[int, ForkedTask] = {}
        self._alive = True
        self._closing = False
        self._reaper: asyncio.Task[None] | None = None
        control.setblocking(False)
        self._loop.add_reader(control.fileno(), self._read)

    @classmethod
    async def start(
        cls,
        python: str,
        env: Mapping[str, str],
        *,
        ready_timeout: float = READY_TIMEOUT_SECONDS,
    ) -> ForkServer:
        """Start a fork server with `python` and `env`, and wait until it is warm.

        Raises:
            WarmRuntimeError: it could not be started, or did not get warm in time, or it
                would import from a directory others may write to.
        """
        unsafe = writable_import_path(env.get("PYTHONPATH", ""))
        if unsafe is not None:
            # It runs as the agent's user (root), imports hundreds of modules (and any
            # sitecustomize) from these paths whenever it starts: a task must not write there.
            raise WarmRuntimeError(
                f"the tasks' import path holds {unsafe}, which users other than the agent's "
                "may write to: the fork server would import from it as the agent's user"
            )
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # Its own session, as tasks have: a Ctrl-C at the agent's terminal is the agent's
            # to handle. Its working directory is on its sys.path while it imports: `/`.
            process = await asyncio.create_subprocess_exec(
                python,
                "-m",
                FORKSERVER_MODULE,
                str(theirs.fileno()),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                env=dict(env),
                cwd="/",
                start_new_session=True,
                pass_fds=(theirs.fileno(),),
            )
        except OSError as exc:
            ours.close()
            raise WarmRuntimeError(
                f"could not start {python} -m {FORKSERVER_MODULE}: {exc}"
            ) from exc
        finally:
            theirs.close()
        server = cls(process, ours)
        try:
            await asyncio.wait_for(asyncio.shield(server._ready), ready_timeout)
        except BaseException as exc:
            await server.close()
            if isinstance(exc, TimeoutError):
                raise WarmRuntimeError(f"not warm after {ready_timeout:.0f}s") from None
            if isinstance(exc, WarmRuntimeError):
                raise WarmRuntimeError(
                    f"it exited with code {process.returncode} before it was warm (its error, "
                    "if any, is on the agent's stderr)"
                ) from None
            raise
        return server

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self._alive

    @property
    def spares(self) -> list[int]:
        """The pids of the spares in hand."""
        return list(self._spares)

    async def spawn(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        uid: int | None,
        log_fd: int,
    ) -> ForkedTask:
        """Start the process of one attempt: `python -m fleetflow.runtime ARGS`, as `uid`, in
        `cwd`, with exactly `env`, stdout and stderr to `log_fd`, stdin from /dev/null: a
        spare takes it (one that died waiting is replaced once).

        Raises:
            WarmRuntimeError: the fork server cannot fork it (gone, or the fork failed).
        """
        body = {"args": list(args), "env": dict(env), "cwd": str(cwd), "uid": uid}
        request = json.dumps(body).encode()
        if len(request) > MAX_REQUEST_BYTES:
            raise WarmRuntimeError(f"the attempt's request is too large ({len(request)} bytes)")
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [log_fd]))]
        for _ in range(2):
            pid, channel = await self._take_spare()
            try:
                channel.sendmsg([request], rights, socket.MSG_NOSIGNAL)
            except (BrokenPipeError, ConnectionError):
                continue  # it died waiting: the next spare takes the attempt
            except OSError as exc:
                raise WarmRuntimeError(f"could not hand the attempt over: {exc}") from exc
            finally:
                channel.close()
            task = ForkedTask(pid)
            self._tasks[pid] = task  # before this task yields: its end comes after this
            return task
        raise WarmRuntimeError("the forked process died before it started")

    async def _take_spare(self) -> tuple[int, socket.socket]:
        if not self._alive:
            raise WarmRuntimeError("the fork server is not running")
        if self._spares:
            pid = next(iter(self._spares))
            spare = pid, self._spares.pop(pid)
        else:
            waiter: asyncio.Future[tuple[int, socket.socket]] = self._loop.create_future()
            self._waiting.append(waiter)
            self._top_up(spare_too=False)
            try:
                spare = await waiter
            finally:
                # Answered waiters were taken off already. Not `remove` under `suppress`: a
                # deque's miss formats the future's repr into its error, every time.
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
        if self._top_up_handle is None:
            self._top_up_handle = self._loop.call_later(SPARE_AFTER_SECONDS, self._top_up)
        return spare

    def _top_up(self, *, spare_too: bool = True) -> None:
        """Ask for a spare for each launch waiting, and (`spare_too`) one to keep in hand."""
        if spare_too and self._top_up_handle is not None:
            self._top_up_handle.cancel()
            self._top_up_handle = None
        wanted = len(self._waiting) + int(spare_too) - len(self._spares) - self._asked
        for _ in range(wanted):
            if not self._alive:
                return
            try:
                self._control.send(ASK_FOR_SPARE, socket.MSG_NOSIGNAL)
            except BlockingIOError:
                return  # a backlog of asks: the next take asks again
            except OSError:
                self._gone("the fork server exited")
                return
            self._asked += 1

    def _read(self) -> None:
        while self._alive:
            try:
                data, ancillary, _, _ = self._control.recvmsg(
                    _MAX_REPLY_BYTES, FD_SPACE, socket.MSG_CMSG_CLOEXEC
                )
            except BlockingIOError:
                return
            except OSError:
                data, ancillary = b"", []
            fds = received_fds(ancillary)
            if not data and not fds:
                self._gone("the fork server exited")
                return
            self._handle(json.loads(data), fds)

    def _handle(self, message: dict[str, Any], fds: list[int]) -> None:
        if "spare" in message and len(fds) == 1:
            self._asked -= 1
            spare = (message["spare"], socket.socket(fileno=fds[0]))
            spare[1].setblocking(False)
            waiter = self._next_waiting()
            if waiter is not None:
                waiter.set_result(spare)
            else:
                self._spares[spare[0]] = spare[1]
            return
        for fd in fds:  # none comes with any other message
            os.close(fd)
        if "ready" in message:
            if not self._ready.done():
                self._ready.set_result(None)
                self._top_up()
        elif "returncode" in message:
            task = self._tasks.pop(message["pid"], None)
            if task is not None:
                task._end(message["returncode"])
            elif message["pid"] in self._spares:  # it died waiting (killed): one in its place
                self._spares.pop(message["pid"]).close()
                self._top_up()
        elif "error" in message:  # an ask refused (the fork failed): a waiting launch fails
            self._asked -= 1
            waiter = self._next_waiting()
            if waiter is not None:
                waiter.set_exception(
                    WarmRuntimeError(f"the fork server could not fork: {message['error']}")
                )

    def _next_waiting(self) -> asyncio.Future[tuple[int, socket.socket]] | None:
        """The launch waiting longest for a spare, taken off the queue (None: none waits)."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():  # else it gave up (cancelled)
                return waiter
        return None

    def _gone(self, why: str) -> None:
        """The fork server is gone (or going): no spare comes any more, and its children
        die with it."""
        if not self._alive:
            return
        self._alive = False
        self._loop.remove_reader(self._control.fileno())
        self._control.close()
        if self._top_up_handle is not None:
            self._top_up_handle.cancel()
        for channel in self._spares.values():
            channel.close()
        self._spares.clear()
        if not self._ready.done():
            self._ready.set_exception(WarmRuntimeError(why))
        for waiter in self._waiting:
            if not waiter.done():
                waiter.set_exception(WarmRuntimeError(why))
        lost = f"the warm task runtime died while the task ran ({why})"
        for task in self._tasks.values():
            task._end(-signal.SIGKILL, lost)  # it dies with the server (its parent-death signal)
        self._reaper = self._loop.create_task(
            self._reap(len(self._tasks)), name="fork-server-reaper"
        )
        self._tasks.clear()

    async def _reap(self, tasks_lost: int) -> None:
        returncode = await self._process.wait()
        if not self._closing:
            logger.warning(
                "the warm task runtime (pid %d) exited with code %d, taking %d running task(s) "
                "with it; the next launch starts it again",
                self.pid,
                returncode,
                tasks_lost,
            )

    async def close(self) -> None:
        """Tell the fork server to leave (its remaining children die with it) and wait."""
        self._closing = True
        self._gone("the agent closed it")
        try:
            await asyncio.wait_for(asyncio.shield(self._process.wait()), CLOSE_TIMEOUT_SECONDS)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
        if self._reaper is not None:
            await self._reaper


def writable_import_path(pythonpath: str) -> str | None:
    """The first directory of `pythonpath` (or above an entry) where others could plant a
    module for the fork server, or None. Unsafe: the nearest existing directory of an entry
    (the entry itself, or where someone could create it) being writable by others; a directory
    further up being writable by others without the sticky bit (the entry could be renamed
    away and replaced). Relative entries are the fork server's: below `/`.
    """
    for entry in filter(None, pythonpath.split(os.pathsep)):
        nearest = True
        path = Path("/", entry)
        for directory in (path, *path.parents):
            try:
                mode = directory.stat().st_mode
            except OSError:
                continue  # not there (yet): judged by the directory it would be made in
            if mode & stat.S_IWOTH and (nearest or not mode & stat.S_ISVTX):
                return str(directory)
            nearest = False
    return None


class WarmRuntime:
    """The executor's fork server over time (see the module docstring).

    Args:
        python: The tasks' interpreter.
        env: The fork server's environment: the tasks' (without any attempt's own variables),
            and a die-with-the-agent request.
        retry_after_seconds: After a failed start, how long `server` answers None before the
            next try.
    """

    def __init__(
        self,
        python: str,
        env: Mapping[str, str],
        *,
        retry_after_seconds: float = RETRY_AFTER_SECONDS,
    ) -> None:
        self._python = python
        self._env = dict(env)
        self._retry_after_seconds = retry_after_seconds
        self._current: ForkServer | None = None
        self._starting: asyncio.Task[ForkServer] | None = None
        self._retry_at: float | None = None
        self._failure_logged = False
        self._closed = False

    @property
    def running(self) -> ForkServer | None:
        """The fork server, while one runs."""
        current = self._current
        return current if current is not None and current.alive else None

    def warm_up(self) -> None:
        """Start the fork server in the background, unless one runs or is starting."""
        if not self._closed and self._current is None and self._retry_at is None:
            self._start()

    async def server(self) -> ForkServer | None:
        """The running fork server, started (again) when there is none; None when it cannot
        be had now (it failed to start within the last `retry_after_seconds`, or closed)."""
        current = self._current
        if self._closed:
            return None
        if current is not None and current.alive:
            return current
        if self._retry_at is not None and time.monotonic() < self._retry_at:
            return None
        try:
            server = await asyncio.shield(self._start())
        except WarmRuntimeError:
            return None
        return server if server.alive else None

    def _start(self) -> asyncio.Task[ForkServer]:
        if self._starting is None:
            self._starting = asyncio.create_task(self._start_server(), name="fork-server-start")
            self._starting.add_done_callback(_retrieve)
        return self._starting

    async def _start_server(self) -> ForkServer:
        try:
            server = await ForkServer.start(self._python, self._env)
        except WarmRuntimeError as exc:
            self._retry_at = time.monotonic() + self._retry_after_seconds
            if not self._failure_logged:
                self._failure_logged = True
                logger.warning(
                    "the warm task runtime could not start (%s): tasks start as new "
                    "`python -m fleetflow.runtime` processes (slower) until it can; next try "
                    "in %.0fs",
                    exc,
                    self._retry_after_seconds,
                )
            raise
        finally:
            self._starting = None
        self._retry_at = None
        self._failure_logged = False
        if self._closed:
            await server.close()
            raise WarmRuntimeError("the warm task runtime was closed while it started")
        self._current = server
        logger.info("the warm task runtime is ready (pid %d, %s)", server.pid, self._python)
        return server

    async def close(self) -> None:
        """Stop the fork server (if any) for good: `server` answers None from now on."""
        self._closed = True
        if self._starting is not None:
            await asyncio.gather(self._starting, return_exceptions=True)
        if self._current is not None:
            await self._current.close()
            self._current = None


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Read a background start's exception (it was logged), so asyncio does not report it."""
    if not task.cancelled():
        task.exception()
