"""The warm task runtime: a fork server that starts task attempts without starting Python.

`python -m fleetflow.runtime` spends 0.3-0.5 s starting an interpreter and importing the runtime
(pydantic, the type system, the blob stores) for a task that may run a few milliseconds. So the
local-process executor (`data_plane_agent.executors.warm_runtime`) starts this module once, as
`python -m fleetflow.forkserver FD`, with the tasks' interpreter and the tasks' environment
(never the agent's settings nor credentials). It imports the runtime, and then forks one child
per attempt, which turns itself into what `python -m fleetflow.runtime ARGS` would have been and
runs it. It imports only `fleetflow` and the standard library, and never anything of a task's:
the children unpack and import the bundles, the server never sees them. Each child is forked
ahead, a *spare* that waits in a session of its own, and the agent hands an attempt to a spare
itself, over a socket pair whose other end the server passed it: a launch costs one message,
not a fork (the fork and the child's first steps were about 4 ms of each launch), nor a round
trip through the server (1-2 ms more).

Protocol, over descriptor FD: the agent's `socket.socketpair(AF_UNIX, SOCK_SEQPACKET)`, inherited
and never bound to a path (nothing else can reach it: the children close it first thing):

- agent -> server: `ASK_FOR_SPARE`, nothing else;
- server -> agent, JSON: `{"ready": PID}` once warm; for each ask, `{"spare": PID}` with the
  agent's end of that spare's socket pair attached (SCM_RIGHTS), once the spare is in a
  session of its own, or `{"error": "..."}`; and `{"pid": PID, "returncode": CODE}` when the
  server reaped a child, an attempt or a spare that died waiting (negative: killed by that
  signal, as `asyncio` reports it);
- agent -> spare, over its pair: the attempt as JSON, `{"args": [...], "env": {...},
  "cwd": "...", "uid": 50001 | null}` (at most `MAX_REQUEST_BYTES`), with the descriptor of
  the attempt's log attached (the agent opened it, as it does for an exec'd task). The agent
  closing its end instead lets the spare go.

The server is root when the agent is (its children must switch to the tasks' uids). What keeps
tasks away from it and from each other:

- it never sees a request: the agent sends each to its spare over a socket pair only the two
  hold (the server closes its copy of the agent's end once it passed it, before it forks
  again), so no attempt's argv or environment is ever in the memory later children inherit;
- it is not dumpable (no `ptrace`, no `/proc/<pid>/mem` for a task of the agent's own user);
  a task of another uid cannot signal or trace it anyway;
- it exits when the agent closes its end, and dies with the agent (a parent-death signal); its
  children die with it (SIGKILL), re-armed after their uid switch (which clears the request).

Each child, before the runtime's `main` (in this order):

1. drops the server's signal handling (SIGCHLD, its wakeup descriptor) and closes its socket;
2. `setsid` (its own session, hence process group: the agent stops an attempt by its group),
   and only then tells the server it is ready (the server names a child to the agent only
   after this);
3. asks for SIGKILL when the server dies, sets up the task's logging (to descriptor 2, as
   the runtime's `main` would), writes ahead the pages an attempt's path writes (learnt once,
   at the server's start, from a rehearsal: `_rehearse`), and waits for its request (the
   agent closing its end, or the server dying, ends it); then stdin from /dev/null, stdout and
   stderr the log, every other descriptor closed;
4. switches to the task's uid as the exec path does (`child_processes.become_user`), asks for
   the parent-death signal again and checks the server is still its parent; is made dumpable,
   as `exec` would make it;
5. enters the sandbox, takes the attempt's environment for `os.environ`, and resets what an
   interpreter computes at start and a fork would share: `random`'s state, `tempfile`'s
   directory, the user site paths, `sys.argv`, `sys.path[0]`;
6. runs `fleetflow.runtime.main_then_exit(args)`: it leaves with `os._exit`, never returning
   into the server's loop.

What every child still shares with the server: the string-hash seed (`PYTHONHASHSEED` is drawn
once per interpreter; a task cannot learn it from hashes), and the modules imported at start,
fresh as the server imported them.
"""

from __future__ import annotations

import array
import collections.abc
import contextlib
import ctypes
import gc
import json
import os
import random
import select
import signal
import site
import socket
import struct
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, NoReturn

from fleetflow.child_processes import become_user, die_with_parent_if_asked

ASK_FOR_SPARE = b"spare"
"""The one message the agent sends the server: fork a spare and pass it over."""
MAX_REQUEST_BYTES = 1 << 17
"""The largest request (an attempt's JSON) a spare reads; the agent sends none larger."""

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_NAME = 15
TASK_PROCESS_NAME = "fleetflow-task"
"""The name (`/proc/PID/comm`, what `ps -o comm` and `top` show) of a forked attempt: its
command line is still the server's (`python -m fleetflow.forkserver`)."""
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
_FD_BYTES = struct.calcsize("i")
FD_SPACE = socket.CMSG_SPACE(_FD_BYTES)
"""The ancillary room for the one descriptor a message of the protocol carries."""
_MADV_POPULATE_WRITE = 23  # Linux 5.14
_PAGE = os.sysconf("SC_PAGE_SIZE")
_PAGE_PRESENT = 1 << 63  # /proc/PID/pagemap's flags (Documentation/admin-guide/mm/pagemap.rst)
_PAGE_EXCLUSIVE = 1 << 56
MAX_PREFAULT_PAGES = 4096
"""At most this many pages (16 MiB) are written ahead in each spare (`_rehearse`)."""
REHEARSAL_MODULE = "fleetflow_rehearsal"
REHEARSAL_SOURCE = '''import fleetflow


@fleetflow.task
def rehearsal(x: int) -> int:
    """The fork server runs it once, to learn which of its pages an attempt writes."""
    return x
'''


def _prctl(option: int, value: int) -> None:
    if _LIBC is None or _LIBC.prctl(option, value, 0, 0, 0) != 0:
        errno = ctypes.get_errno() if _LIBC is not None else 0
        raise OSError(errno, f"prctl({option}, {value}) failed")


def _preload() -> None:
    """Import what every attempt imports, once, here. Nothing of a task's, ever."""
    import fleetflow
    import fleetflow.runtime
    import fleetflow.storage.local  # noqa: F401 - staged attempts write outputs through it

    # A task module's `from fleetflow import task, ...` would import these in every child
    # (compiling them too, where bytecode cannot be written): bound once here. Not the HTTP
    # client, which tasks seldom use.
    for name in fleetflow.LAZY_EXPORTS.keys() - {"Client"}:
        getattr(fleetflow, name)
    # Built once, and used once: argparse compiles its patterns (into `re`'s cache) at the
    # first parse, which would be every child's otherwise.
    options = ("bundle-uri", "inputs-uri", "outputs-uri", "module", "function", "result-file")
    fleetflow.runtime.argument_parser().parse_args(
        [arg for option in options for arg in (f"--{option}", "x")] + ["--code-unpacked"]
    )
    # A log line with one argument asks whether it is a Mapping; the first such question per
    # type walks every registered Mapping (half a millisecond in a fresh child): asked here.
    for value in ("", 0, 0.0, None):
        isinstance(value, collections.abc.Mapping)


class _Server:
    def __init__(self, control: socket.socket, hot_pages: list[tuple[int, int]]) -> None:
        self.control = control
        # What each spare writes ahead while it waits (`_rehearse`).
        self.hot_pages = hot_pages
        self.pid = os.getpid()
        # SIGCHLD only writes a byte here; children are reaped in the loop, after the message
        # that names them went out (the agent must hear of a pid before of its end).
        self.wakeup_read, self.wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wakeup_write, warn_on_full_buffer=False)

    def send(self, message: dict[str, Any], fd: int | None = None) -> None:
        rights = (
            [] if fd is None else [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]
        )
        self.control.sendmsg([json.dumps(message).encode()], rights, socket.MSG_NOSIGNAL)

    def serve(self) -> int:
        poller = select.poll()
        poller.register(self.control, select.POLLIN)
        poller.register(self.wakeup_read, select.POLLIN)
        self.send({"ready": self.pid})
        while True:
            for fd, _events in poller.poll():
                if fd == self.wakeup_read:
                    self.reap()
                elif not self.handle_ask():
                    return 0  # the agent closed its end: leave (children die with us)

    def reap(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wakeup_read, 512):
                pass
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            # An attempt's end, or a spare's that died waiting: the agent tells them apart.
            self.send({"pid": pid, "returncode": os.waitstatus_to_exitcode(status)})

    def handle_ask(self) -> bool:
        """Answer one ask for a spare: fork it and pass the agent its end of the spare's
        socket; False when the agent has gone."""
        ask = self.control.recv(len(ASK_FOR_SPARE) + 1)
        if not ask:
            return False
        if ask != ASK_FOR_SPARE:
            self.send({"error": "malformed ask"})
            return True
        try:
            pid, ours = self.fork_spare()
        except OSError as exc:
            self.send({"error": f"fork failed: {exc}"})
            return True
        try:
            self.send({"spare": pid}, ours.fileno())
        finally:
            ours.close()  # the agent's now: no later child inherits it
        return True

    def fork_spare(self) -> tuple[int, socket.socket]:
        """Fork the process of a request to come: it waits, in a session of its own, for the
        request over a socket pair whose other end goes to the agent; returned once it is in
        its session: its pid and that end.

        Raises:
            OSError: the fork failed.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        in_session_read, in_session_write = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            for fd in (in_session_read, in_session_write):
                os.close(fd)
            ours.close()
            theirs.close()
            raise
        if pid == 0:
            try:
                os.close(in_session_read)
                ours.close()
                self.become_attempt(theirs, in_session_write)
            except BaseException:  # noqa: BLE001 - said where it can be read, then exit
                with contextlib.suppress(BaseException):
                    sys.stderr.write("fleetflow fork server: could not start the attempt:\n")
                    traceback.print_exc()
                    sys.stderr.flush()
            finally:
                os._exit(126)
        os.close(in_session_write)
        theirs.close()
        try:
            os.read(in_session_read, 1)  # end of file: the child is in its own session (or dead)
        finally:
            os.close(in_session_read)
        return pid, ours

    def become_attempt(self, channel: socket.socket, in_session: int) -> NoReturn:
        """In the spare: wait for a request on `channel`, then become that attempt's runtime
        (see the module docstring) and run it."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.control.close()
        os.close(self.wakeup_read)
        os.close(self.wakeup_write)
        os.setsid()
        os.close(in_session)
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != self.pid:
            os._exit(1)  # the server died before we asked to die with it
        # What needs no request, done while waiting. Its handler writes to descriptor 2,
        # which becomes the attempt's log below.
        from fleetflow.runtime import configure_task_logging, main_then_exit

        configure_task_logging()
        _write_ahead(self.hot_pages)
        buffer = bytearray(MAX_REQUEST_BYTES)
        size, ancillary, flags, _ = channel.recvmsg_into([buffer], FD_SPACE)
        fds = received_fds(ancillary)
        if size == 0 and not fds:
            os._exit(0)  # the agent let it go unused (it sends nothing else)
        if len(fds) != 1 or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            sys.stderr.write("fleetflow fork server: a malformed or oversized request\n")
            os._exit(2)
        (log_fd,) = fds
        channel.close()
        request = json.loads(bytes(buffer[:size]))
        del buffer
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        uid = request["uid"]
        if uid is not None:
            become_user(int(uid))
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # a uid change cleared it
            if os.getppid() != self.pid:
                os._exit(1)
        _prctl(_PR_SET_DUMPABLE, 1)  # as exec would leave it (the server is not)
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_NAME, ctypes.c_char_p(TASK_PROCESS_NAME.encode()), 0, 0, 0)
        os.chdir(request["cwd"])
        _fresh_interpreter_state(request["args"], request["env"])
        main_then_exit(request["args"])


def received_fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors that came with a message (SCM_RIGHTS)."""
    return [
        fd
        for level, kind, data in ancillary
        if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
        for (fd,) in struct.iter_unpack("i", data[: len(data) - len(data) % _FD_BYTES])
    ]


def _fresh_interpreter_state(args: list[str], env: dict[str, str]) -> None:
    """What `python -m fleetflow.runtime ARGS` would have computed at its start, for this child
    (the working directory is the sandbox already)."""
    import fleetflow.runtime

    # os.environ writes through to the C environment (and os.environb). The server's is the
    # tasks' already: only the attempt's own variables differ (clearing and filling it anew
    # was half a millisecond).
    for name in [name for name in os.environ if name not in env]:
        del os.environ[name]
    for name, value in env.items():
        if os.environ.get(name) != value:
            os.environ[name] = value
    random.seed()  # os.fork re-seeds it as well: no two attempts share a random sequence
    tempfile.tempdir = None  # computed again from the attempt's TMPDIR, not the server's
    site.USER_BASE = None  # computed again, lazily, from the attempt's HOME
    site.USER_SITE = None
    sys.argv = [fleetflow.runtime.__file__, *args]
    if not sys.flags.safe_path:  # `-m` put the working directory first: the server's, `/`
        sys.path[0] = os.getcwd()


def _rehearse() -> list[tuple[int, int]]:
    """The pages of this process an attempt writes, learnt from a child that runs a small task
    (`REHEARSAL_SOURCE`, staged as the agent stages one) in a scratch directory: page ranges,
    [] where that cannot be learnt (said on stderr: attempts then copy them as they go).

    A fork shares every page until one of the two processes writes it; then the kernel copies
    it, a fault of a few microseconds. An attempt's process took some 600 of them between its
    request and its task's first line (the objects its path touches: reference counts, code
    objects' counters, the allocator's pools), several milliseconds in all. Each spare writes
    these pages ahead while it waits (`_write_ahead`), off the attempt's path. The rehearsal
    runs the runtime's code only, never a task's, as the server's user, before any request.
    """
    if _LIBC is None:
        return []
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            try:
                failure = _rehearsal(write_end)
            except Exception as exc:  # noqa: BLE001 - said below; the server goes on without
                failure = f"the rehearsal attempt could not run ({exc})"
            if failure:
                sys.stderr.write(
                    f"fleetflow fork server: {failure}; each attempt's process copies the "
                    "pages it writes as it goes (it starts a few milliseconds later)\n"
                )
                sys.stderr.flush()
        finally:
            os._exit(0)
    os.close(write_end)
    with open(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    runs = array.array("Q", data[: len(data) - len(data) % 16])
    return list(zip(runs[::2], runs[1::2], strict=True))


def _rehearsal(out: int) -> str:
    """In the rehearsal's child: run the rehearsal attempt, then write the page ranges it wrote
    (start, end: native 64-bit pairs) to `out`. What went wrong, or ""."""
    assert _LIBC is not None
    writable = _private_writable_ranges()  # the server's, as this fork shares them
    saved = [os.dup(fd) for fd in (1, 2)], sys.stdout, sys.stderr
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)  # the runtime's lines
    sys.stdout = sys.stderr = open(null, "w")  # noqa: SIM115 - closed with the process
    try:
        with tempfile.TemporaryDirectory(prefix="fleetflow-rehearsal-") as scratch:
            written, failure = _rehearse_in(Path(scratch), writable)
    finally:
        for fd, copy in zip((1, 2), saved[0], strict=True):
            os.dup2(copy, fd)
        sys.stdout, sys.stderr = saved[1:]
    if failure:
        return failure
    if written and _LIBC.madvise(
        ctypes.c_void_p(written[0]), ctypes.c_size_t(_PAGE), _MADV_POPULATE_WRITE
    ):
        return f"this kernel cannot write pages ahead ({os.strerror(ctypes.get_errno())})"
    runs = array.array("Q")
    for address in written:
        if runs and runs[-1] == address:
            runs[-1] = address + _PAGE
        else:
            runs.extend((address, address + _PAGE))
    with open(out, "wb") as pipe:
        pipe.write(runs.tobytes())
    return ""


def _rehearse_in(root: Path, writable: list[tuple[int, int]]) -> tuple[list[int], str]:
    """Stage and run the rehearsal attempt in `root`: the pages of `writable` its runtime
    wrote, and what went wrong, or ""."""
    import fleetflow.runtime
    from fleetflow import staging

    code, staged = root / "code", root / "staged"
    code.mkdir()
    (code / f"{REHEARSAL_MODULE}.py").write_text(REHEARSAL_SOURCE)
    for directory in (staging.OUTPUTS_DIR, staging.DOWNLOADS_DIR):
        (staged / directory).mkdir(parents=True)
    (staged / staging.INPUTS_FILE).write_text('{"x": 1}')
    result = root / "result.json"
    args = [
        *("--bundle-uri", "file:///rehearsal.tar.gz"),
        *("--inputs-uri", (root / "inputs.json").as_uri()),
        *("--outputs-uri", (root / "outputs.json").as_uri()),
        *("--module", REHEARSAL_MODULE, "--function", "rehearsal"),
        *("--result-file", str(result)),
        *("--workdir", str(code), "--code-unpacked", "--staged", str(staged)),
        *("--execution-id", "rehearsal", "--node-id", "rehearsal"),
        *("--attempt-id", "rehearsal", "--attempt-number", "1"),
    ]
    fleetflow.runtime.configure_task_logging()
    os.chdir(root)
    _fresh_interpreter_state(args, dict(os.environ))
    before = _held_alone(writable)  # the rehearsal's own set-up: not an attempt's path
    exit_code = fleetflow.runtime.main(args)
    written = sorted(_held_alone(writable) - before)[:MAX_PREFAULT_PAGES]
    if exit_code != 0:
        outcome = result.read_text().strip() if result.exists() else f"exit code {exit_code}"
        return [], f"the rehearsal attempt failed: {outcome}"
    return written, ""


def _private_writable_ranges() -> list[tuple[int, int]]:
    """This process's private, writable mappings (heap, arenas, data sections): (start, end)."""
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            span, permissions = fields[0], fields[1]
            if permissions.startswith("rw") and permissions[3] == "p":
                start, end = (int(address, 16) for address in span.split("-"))
                ranges.append((start, end))
    return ranges


def _held_alone(ranges: list[tuple[int, int]]) -> set[int]:
    """Of `ranges`, the pages this process holds alone: copied, or first written, since the
    fork."""
    held: set[int] = set()
    with open("/proc/self/pagemap", "rb", buffering=0) as pagemap:
        for start, end in ranges:
            count = (end - start) // _PAGE
            entries = array.array("Q", os.pread(pagemap.fileno(), count * 8, start // _PAGE * 8))
            held.update(
                start + index * _PAGE
                for index, entry in enumerate(entries)
                if entry & _PAGE_PRESENT and entry & _PAGE_EXCLUSIVE
            )
    return held


def _write_ahead(runs: list[tuple[int, int]]) -> None:
    """Copy these pages now (the kernel's `MADV_POPULATE_WRITE`: their contents unchanged), so
    the attempt does not fault on them. A run this process no longer maps fails and is skipped."""
    if _LIBC is None:
        return
    madvise = _LIBC.madvise
    for start, end in runs:
        madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_POPULATE_WRITE)


def main(argv: list[str] | None = None) -> int:
    """`python -m fleetflow.forkserver FD`: serve the agent on the socket at descriptor FD."""
    die_with_parent_if_asked()  # first: the agent may die while we import
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        sys.stderr.write("usage: python -m fleetflow.forkserver FD\n")
        return 2
    control = socket.socket(fileno=int(args[0]))
    _prctl(_PR_SET_DUMPABLE, 0)
    _preload()
    threads = os.listdir("/proc/self/task")
    if len(threads) != 1:  # a fork copies only the calling thread: locks held elsewhere stay held
        sys.stderr.write(f"fleetflow fork server: {len(threads)} threads after imports; refusing\n")
        return 1
    gc.collect()
    gc.freeze()  # what the children inherit stays shared: no collection touches those pages
    server = _Server(control, _rehearse())
    try:
        return server.serve()
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the agent is gone


if __name__ == "__main__":
    sys.exit(main())
