"""The local-process executor: each attempt is a `python -m fleetflow.runtime` child process.

It is the executor of `fleetflow dev up` and of clusters without Kubernetes. By default an
attempt's process is forked by the warm task runtime (`warm_runtime`: a fork server that has
imported the runtime already, so an attempt starts in milliseconds instead of the interpreter's
start and imports); while that cannot run, or with `warm_runtime=False`, it is a new `python -m
fleetflow.runtime` process. Both are watched alike (`TaskProcess`). Every attempt gets
`<work_dir>/attempts/<attempt_id>/log.txt` (the process's stdout and stderr), the agent's, and a
sandbox directory of its own while it runs (`sandbox`: as a user of its own when it can), holding a
copy of its code (`code/`, from the agent's `BundleCache`: unpacked once per bundle, and each
bundle's next copy made ahead beside the sandboxes), what the agent staged for it (`staged/`:
inputs, input files, its unit's checkpoint; `data_plane_agent.staging`), its result file, and its
`HOME` and `TMPDIR`. The task never touches the blob store: the agent copies its inputs in and
uploads its outputs (and its checkpoint, whatever the outcome) after it ended, then deletes the
sandbox (or, once no process of the task's uid is left, empties it and keeps its directories for
a later attempt: `sandbox_skeletons`). The child runs in its own session, hence its own
process group, so stopping an attempt also stops whatever the task spawned (and every process
left under the attempt's uid is killed). No `FLEETFLOW_*` setting of the agent's (its token,
the blob store's credentials) nor AWS credentials are passed on to task code.

Finished attempts' directories are deleted by an `AttemptDirRetention` policy (older than its
keep time, or oldest first while all attempt directories together exceed its size cap), swept
when an attempt finishes and periodically; a running or launching attempt's is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable, Collection, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from data_plane_agent.attempts import AttemptEvent, TaskAssignment
from data_plane_agent.bundle_cache import BundleCache, is_shared
from data_plane_agent.executors.base import (
    MAX_LOG_BYTES,
    Capacity,
    ExecutorStartError,
    machine_capacity,
    runtime_command,
)
from data_plane_agent.executors.gang import (
    GangProcess,
    combined_log,
    rank_logs,
    rank_sandboxes,
    start_gang,
)
from data_plane_agent.executors.sandbox_skeletons import SandboxSkeletons
from data_plane_agent.executors.warm_runtime import (
    ForkedTask,
    ForkServer,
    WarmRuntime,
    WarmRuntimeError,
)
from data_plane_agent.sandbox import (
    TaskIsolation,
    as_user,
    kill_processes_of,
    read_regular_file,
    resolve_isolation,
)
from data_plane_agent.settings import AgentSettings
from data_plane_agent.staging import (
    CHECKPOINT_DIR,
    StagingError,
    collect_outputs,
    keep_checkpoint,
    stage_checkpoint,
    stage_code,
    stage_in,
)
from fleetflow.child_processes import parent_env
from fleetflow.errors import FleetflowError
from fleetflow.staging import DOWNLOADS_DIR, OUTPUTS_DIR
from fleetflow.states import AttemptState

logger = logging.getLogger(__name__)

LOG_FILE = "log.txt"
RESULT_FILE = "result.json"
CODE_DIR = "code"
STAGED_DIR = "staged"
TMP_DIR = "tmp"
SPARE_CODE_DIR = ".code-spares"
"""Beside the sandboxes: code copies made ahead (`BundleCache.prepare_spare`); no attempt id
names it (ids never start with a dot)."""
SKELETONS_DIR = ".skeletons"
"""Beside the sandboxes too: finished sandboxes' directories kept for the next attempts
(`sandbox_skeletons`)."""
_LOG_TAIL_BYTES = 4096
_MAX_RESULT_BYTES = 1 << 20
_PASSED_FLEETFLOW_ENV = frozenset({"FLEETFLOW_DEBUG"})
_CREDENTIAL_ENV = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"})
_LOST_TASK_END_SECONDS = 5.0
"""How long a task whose fork server died (and which was SIGKILLed) may take to be gone."""


def task_environment(base: Mapping[str, str]) -> dict[str, str]:
    """What of the agent's environment a task gets: not the agent's settings nor the blob
    store's credentials (`FLEETFLOW_*`, AWS keys), nor the agent's import path."""
    return {
        name: value
        for name, value in base.items()
        if not (name.startswith("FLEETFLOW_") and name not in _PASSED_FLEETFLOW_ENV)
        and name not in _CREDENTIAL_ENV
        and name != "PYTHONPATH"
    }


@dataclass(frozen=True)
class AttemptDirRetention:
    """How long finished attempts' directories are kept, and how much disk they may take.

    Args:
        keep_seconds: A finished attempt's directory is deleted this long after it was last
            written (its log, its result). 0 deletes them as soon as they finish.
        max_total_bytes: Cap on all attempt directories together (running ones count, but
            are never deleted); above it finished ones go, oldest first. 0: no cap.
        sweep_interval_seconds: Between periodic sweeps (besides one after every attempt).
    """

    keep_seconds: float = 24 * 3600
    max_total_bytes: int = 5 * 1024**3
    sweep_interval_seconds: float = 600.0


def isolation_from_settings(settings: AgentSettings) -> TaskIsolation:
    """The task isolation `FLEETFLOW_AGENT_TASK_*` and `SANDBOX_DIR` ask for, checked."""
    return resolve_isolation(
        settings.work_dir,
        task_uids=settings.task_uids,
        task_python=settings.task_python,
        sandbox_dir=settings.sandbox_dir,
    )


def retention_from_settings(settings: AgentSettings) -> AttemptDirRetention:
    """The retention policy `FLEETFLOW_AGENT_ATTEMPT_DIRS_*` (and their CLI flags) ask for."""
    return AttemptDirRetention(
        keep_seconds=settings.attempt_dirs_keep_hours * 3600,
        max_total_bytes=int(settings.attempt_dirs_max_gib * 1024**3),
    )


class TaskProcess(Protocol):
    """An attempt's process as the executor watches it, however it was started: an
    `asyncio.subprocess.Process` (exec'd) or a `warm_runtime.ForkedTask` (forked). Its pid is
    also its process group's; `returncode` is None while it runs, then its exit code, or minus
    the signal that killed it."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


@dataclass
class _LocalAttempt:
    assignment: TaskAssignment
    directory: Path
    sandbox: Path
    uid: int | None
    process: TaskProcess
    watcher: asyncio.Task[None] | None = None
    stop_reason: str | None = None
    timed_out: bool = False
    # The look for its uid's processes after its end found none left: the uid is given up
    # swept, and its next holder need not look again.
    swept: bool = False


class LocalProcessExecutor:
    """Runs each attempt as a child process of the agent.

    Args:
        work_dir: The agent's work directory; attempts live under `work_dir/attempts/`.
        isolation: Which users tasks run as, with which Python, in which sandbox directory
            (default: `resolve_isolation`'s for `work_dir`: a uid of their own when the agent
            is root).
        kill_grace_seconds: Time between SIGTERM and SIGKILL when stopping an attempt.
        env: Environment for task processes (default: the agent's, minus its settings and
            credentials).
        retention: When finished attempts' directories are deleted (default: kept 24 hours,
            5 GiB in all).
        clock: Wall-clock time in seconds, compared with directories' modification times.
        simulated_gpus: GPUs this machine claims by type (type -> count), though it hands none
            to tasks: to try GPU placement and quotas on a machine without GPUs.
        warm_runtime: Fork attempts' processes from the warm task runtime (`warm_runtime`);
            False: always start `python -m fleetflow.runtime` anew.
    """

    name = "local-process"
    attempts_survive_agent = False
    """Tasks are the agent's children and die with it (a parent-death signal)."""

    def __init__(
        self,
        work_dir: Path,
        *,
        isolation: TaskIsolation | None = None,
        kill_grace_seconds: float = 5.0,
        env: Mapping[str, str] | None = None,
        retention: AttemptDirRetention | None = None,
        clock: Callable[[], float] = time.time,
        simulated_gpus: Mapping[str, int] | None = None,
        warm_runtime: bool = True,
    ) -> None:
        self._simulated_gpus = dict(simulated_gpus or {})
        self._attempts_dir = Path(work_dir) / "attempts"
        self._isolation = isolation or resolve_isolation(Path(work_dir))
        self._kill_grace_seconds = kill_grace_seconds
        self._env = task_environment(os.environ if env is None else env)
        self._env.update(self._isolation.interpreter.env(), PYTHONUNBUFFERED="1")
        self._attempts: dict[str, _LocalAttempt] = {}
        self._launching: set[str] = set()
        self._events: asyncio.Queue[AttemptEvent] = asyncio.Queue()
        self._retention = retention or AttemptDirRetention()
        self._clock = clock
        self._bundles = BundleCache(
            Path(work_dir) / "bundles", spares=self._isolation.sandbox_root / SPARE_CODE_DIR
        )
        self._skeletons = SandboxSkeletons(
            self._isolation.sandbox_root / SKELETONS_DIR,
            (
                TMP_DIR,
                STAGED_DIR,
                *(f"{STAGED_DIR}/{d}" for d in (DOWNLOADS_DIR, OUTPUTS_DIR, CHECKPOINT_DIR)),
            ),
        )
        # Held by a sweep and by a launch preparing its directory, so a sweep never deletes a
        # directory an attempt is being (re)started in.
        self._dirs_lock = asyncio.Lock()
        self._measured_dirs = MeasuredDirs()  # finished: (last write, bytes)
        self._sweeper: asyncio.Task[None] | None = None
        self._shut_down = False
        self._sweeps: set[asyncio.Task[list[str]]] = set()
        # Every attempt's watcher until it has cleaned up after its attempt, which it does
        # after reporting the end: shutting down waits for them, so nothing is left behind.
        self._watchers: set[asyncio.Task[None]] = set()
        # The fork server has the tasks' environment (no attempt's own variables) and dies
        # with the agent. Its HOME holds no user site-packages a task would not see.
        self._warm = (
            WarmRuntime(
                self._isolation.interpreter.executable,
                {**self._env, "HOME": str(self._isolation.sandbox_root), **parent_env()},
            )
            if warm_runtime
            else None
        )

    async def start(self) -> list[TaskAssignment]:
        """Warm the task runtime up; nothing to observe and nothing to adopt: a previous
        agent's tasks died with it."""
        if self._warm is not None:
            self._warm.warm_up()
        return []

    @property
    def warm_runtime(self) -> ForkServer | None:
        """The warm task runtime's fork server, while one runs."""
        return self._warm.running if self._warm is not None else None

    @property
    def sandbox_skeletons(self) -> SandboxSkeletons:
        """Finished sandboxes' directories kept for the next attempts (tests look)."""
        return self._skeletons

    @property
    def warm_runtime_pid(self) -> int | None:
        """The pid of the warm task runtime's fork server, while one runs."""
        server = self.warm_runtime
        return server.pid if server is not None else None

    def capacity(self, held: Sequence[TaskAssignment]) -> Capacity:
        """This machine's CPUs and memory, less what the `held` attempts asked for, and the
        simulated GPUs."""
        return machine_capacity(held, self._simulated_gpus)

    def pending_reasons(self) -> dict[str, str]:
        """None: an attempt that could not start has failed."""
        return {}

    async def read_log(self, attempt_id: str) -> str | None:
        try:
            path = self.attempt_dir(attempt_id) / LOG_FILE
        except FleetflowError:
            return None
        if not path.is_file():
            return None
        return await asyncio.to_thread(_attempt_log, path)

    def attempt_dir(self, attempt_id: str) -> Path:
        """The directory of one attempt (its log, result file and unpacked code)."""
        if not attempt_id or attempt_id.startswith(".") or "/" in attempt_id or "\0" in attempt_id:
            raise FleetflowError(f"attempt id {attempt_id!r} cannot name a directory")
        return self._attempts_dir / attempt_id

    def running(self) -> list[str]:
        return list(self._attempts)

    async def next_event(self) -> AttemptEvent:
        self._start_sweeper()  # the agent waits here from its start: sweeps begin with it
        return await self._events.get()

    async def sweep_attempt_dirs(
        self, *, spare: str | None = None, spare_measured: tuple[float, int] | None = None
    ) -> list[str]:
        """Apply the retention policy now; the ids of the attempts whose directories went.

        Args:
            spare: An attempt that just finished: kept this time, so that the agent can still
                read its log for the last upload; a later sweep applies the policy to it.
            spare_measured: Its directory's (last write, bytes), measured already: when,
                with it, no directory may go, the sweep ends here, without a thread.
        """
        async with self._dirs_lock:
            if spare is not None and spare_measured is not None:
                self._measured_dirs[spare] = spare_measured
                if self._none_may_go(self._clock()):
                    return []
            protected = set(self._attempts) | self._launching | ({spare} if spare else set())
            return await asyncio.to_thread(self._sweep, protected, spare)

    def _none_may_go(self, now: float) -> bool:
        """Whether, as far as the directories measured so far say, none has expired and
        together they are within the cap."""
        oldest = self._measured_dirs.oldest_write(default=now)
        total = self._measured_dirs.total_bytes
        cap = self._retention.max_total_bytes
        return now - oldest < self._retention.keep_seconds and not (cap and total > cap)

    def _sweep(self, protected: set[str], spare: str | None) -> list[str]:
        """The sweep after an attempt (`spare`) lists the directories only when one of them
        may go: the oldest finished one has expired, or they take more than the cap, as far
        as the directories measured so far say. With thousands kept (a large map), listing
        and ordering them after every attempt was most of the agent's CPU; the periodic sweep
        still lists them all."""
        now = self._clock()
        spared: tuple[float, int] | None = None
        if spare is not None:
            spared = _measure(self._attempts_dir / spare)
            if spared is not None:
                self._measured_dirs[spare] = spared
            if self._none_may_go(now):
                return []
        deleted = sweep_finished_attempt_dirs(
            self._attempts_dir,
            protected,
            self._retention,
            now=now,
            measured=self._measured_dirs,
        )
        if spare is not None and spared is not None:  # finished: it counts from now on
            self._measured_dirs[spare] = spared
        return deleted

    def _start_sweeper(self) -> None:
        if self._shut_down:
            return
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep_periodically(), name="attempt-dirs")

    async def _sweep_periodically(self) -> None:
        while True:
            try:
                await self.sweep_attempt_dirs()
            except Exception:  # a failed sweep must not end the loop
                logger.exception("could not clean up finished attempts' directories")
            await asyncio.sleep(self._retention.sweep_interval_seconds)  # pacing

    def _sweep_soon(self, finished: str, measured: tuple[float, int] | None) -> None:
        task = asyncio.create_task(
            self.sweep_attempt_dirs(spare=finished, spare_measured=measured),
            name="attempt-dirs-on-finish",
        )
        self._sweeps.add(task)
        task.add_done_callback(self._sweep_done)

    def _sweep_done(self, task: asyncio.Task[list[str]]) -> None:
        self._sweeps.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("could not clean up finished attempts' directories: %s", task.exception())

    def _emit(self, event: AttemptEvent) -> None:
        self._events.put_nowait(event)

    def sandbox_dir(self, attempt_id: str) -> Path:
        """The sandbox of one running attempt (see the module docstring)."""
        self.attempt_dir(attempt_id)  # the same checks on the id
        return self._isolation.sandbox_root / attempt_id

    def _command(self, assignment: TaskAssignment, sandbox: Path) -> list[str]:
        return [
            *runtime_command(
                self._isolation.interpreter.executable,
                assignment,
                result_file=str(sandbox / RESULT_FILE),
                workdir=str(sandbox / CODE_DIR),
            ),
            "--code-unpacked",
            "--staged",
            str(sandbox / STAGED_DIR),
            *(
                ["--checkpoint-dir", str(sandbox / STAGED_DIR / CHECKPOINT_DIR)]
                if assignment.checkpoint_uri
                else []
            ),
        ]

    def _task_env(self, assignment: TaskAssignment, sandbox: Path) -> dict[str, str]:
        """The task process's environment: the agent's (less its settings and credentials),
        the attempt's ids, and the task's secrets, set on this process only."""
        references = [secret.name for secret in assignment.secrets if secret.is_reference]
        if references:
            raise ExecutorStartError(
                f"the task's secret(s) {', '.join(map(repr, references))} are references to "
                "Kubernetes Secrets, which only the Kubernetes executor can mount; store a "
                "value instead (`fleetflow secrets create NAME --from-literal ...`)"
            )
        return {
            **self._env,
            "HOME": str(sandbox),
            "TMPDIR": str(sandbox / TMP_DIR),
            "FLEETFLOW_ATTEMPT_ID": assignment.attempt_id,
            "FLEETFLOW_EXECUTION_ID": assignment.execution_id,
            **{secret.env_var: secret.value for secret in assignment.secrets},
        }

    async def _start_process(
        self,
        assignment: TaskAssignment,
        sandbox: Path,
        uid: int | None,
        log_file: IO[bytes],
        extra_env: Mapping[str, str] | None = None,
    ) -> TaskProcess:
        """The attempt's process (or one worker's of a gang, with its rendezvous `extra_env`),
        forked by the warm runtime when it runs, else exec'd."""
        command = self._command(assignment, sandbox)
        env = {**self._task_env(assignment, sandbox), **(extra_env or {})}
        server = await self._warm.server() if self._warm is not None else None
        if server is not None:
            try:
                return await server.spawn(
                    command[3:],  # what follows `python -m fleetflow.runtime`
                    env=env,
                    cwd=sandbox,
                    uid=uid,
                    log_fd=log_file.fileno(),
                )
            except WarmRuntimeError as exc:
                logger.warning(
                    "attempt %s: the warm task runtime could not fork it (%s); starting it anew",
                    assignment.attempt_id,
                    exc,
                )
                if uid is not None:  # a child forked as the server died: gone before we start
                    await asyncio.to_thread(kill_processes_of, uid)
        return await asyncio.create_subprocess_exec(
            *as_user(uid, command),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
            cwd=sandbox,
            # A task never outlives its agent: no orphans if it is killed. (A forked one dies
            # with the fork server, which dies with the agent.)
            env={**env, **parent_env()},
            start_new_session=True,
        )

    async def _start_processes(
        self,
        assignment: TaskAssignment,
        directory: Path,
        sandbox: Path,
        uid: int | None,
        log_file: IO[bytes],
    ) -> TaskProcess:
        """The attempt's process; for a gang (`replicas` > 1), all its workers, all or none
        (`executors.gang`)."""
        if assignment.replicas <= 1:
            return await self._start_process(assignment, sandbox, uid, log_file)

        async def start(own: Path, log: IO[bytes], env: Mapping[str, str]) -> TaskProcess:
            return await self._start_process(assignment, own, uid, log, env)

        return await start_gang(
            assignment.replicas,
            sandbox,
            directory,
            log_file,
            prepare=lambda own: _prepare_sandbox(
                own, assignment, uid, self._bundles, self._skeletons
            ),
            start=start,
            kill_grace=self._kill_grace_seconds,
        )

    async def launch(self, assignment: TaskAssignment) -> None:
        attempt_id = assignment.attempt_id
        if attempt_id in self._attempts or attempt_id in self._launching:
            logger.warning("attempt %s: already running here, not launching it again", attempt_id)
            return
        self._launching.add(attempt_id)
        self._start_sweeper()
        uid: int | None = None
        sandbox: Path | None = None
        try:
            try:
                directory = self.attempt_dir(attempt_id)
                sandbox = self.sandbox_dir(attempt_id)
                # Files, and perhaps a look at every process: in one thread hop, not on the
                # event loop. The attempt's directory under the sweep's lock, on the loop: a
                # directory, a file and a line, as cheap as a log line (a second thread hop
                # cost more than they do).
                uid = await asyncio.to_thread(self._take_uid_and_stage, sandbox, assignment)
                async with self._dirs_lock:
                    log_file = _prepare_attempt_dir(directory, assignment)
                try:
                    process = await self._start_processes(
                        assignment, directory, sandbox, uid, log_file
                    )
                finally:
                    log_file.close()
            except (OSError, ValueError, FleetflowError, ExecutorStartError) as exc:
                logger.error("attempt %s: could not start the task process: %s", attempt_id, exc)
                await asyncio.to_thread(self._clean_up, sandbox, uid)
                message = (
                    str(exc)
                    if isinstance(exc, StagingError)
                    else f"could not start task process: {exc}"
                )
                self._emit(AttemptEvent(attempt_id, AttemptState.FAILED, message))
                return
            attempt = _LocalAttempt(
                assignment=assignment,
                directory=directory,
                sandbox=sandbox,
                uid=uid,
                process=process,
            )
            self._attempts[attempt_id] = attempt
        finally:
            self._launching.discard(attempt_id)
        logger.info(
            "attempt %s: started %s.%s as pid %d%s, %s (log %s)",
            attempt_id,
            assignment.task_module,
            assignment.task_function,
            process.pid,
            f", uid {uid}" if uid is not None else "",
            "forked by the warm runtime" if isinstance(process, ForkedTask) else "exec'd",
            directory / LOG_FILE,
        )
        self._emit(AttemptEvent(attempt_id, AttemptState.RUNNING))
        attempt.watcher = asyncio.create_task(self._watch(attempt), name=f"watch-{attempt_id}")
        self._watchers.add(attempt.watcher)
        attempt.watcher.add_done_callback(self._watchers.discard)

    def _take_uid_and_stage(self, sandbox: Path, assignment: TaskAssignment) -> int | None:
        """The attempt's uid (None: tasks run as the agent's user) and its sandbox, staged;
        nothing of either left held when it fails."""
        users = self._isolation.users
        uid = users.acquire() if users is not None else None
        try:
            self._attempts_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            _prepare_sandbox(sandbox, assignment, uid, self._bundles, self._skeletons)
        except BaseException:
            self._clean_up(sandbox, uid)
            raise
        return uid

    def _clean_up(self, sandbox: Path | None, uid: int | None, *, swept: bool = False) -> None:
        """After an attempt of which no process is left (killed, or none started): its
        sandbox gone (its skeleton kept when the sweep saw no process of its user left), its
        uid free (`swept`: as `TaskUsers.release` takes it)."""
        if sandbox is not None:
            for own in rank_sandboxes(sandbox):  # a gang's other ranks'
                shutil.rmtree(own, ignore_errors=True)
            if uid is not None and swept:
                self._skeletons.recycle(sandbox)
            else:
                shutil.rmtree(sandbox, ignore_errors=True)
        if uid is not None and self._isolation.users is not None:
            self._isolation.users.release(uid, swept=swept)

    async def _watch(self, attempt: _LocalAttempt) -> None:
        attempt_id = attempt.assignment.attempt_id
        process = attempt.process
        timeout = attempt.assignment.timeout_seconds
        try:
            try:
                if timeout > 0:
                    await asyncio.wait_for(process.wait(), timeout)
                else:
                    await process.wait()
            except TimeoutError:
                if attempt.stop_reason is None:
                    attempt.timed_out = True
                    logger.warning(
                        "attempt %s: timed out after %ds, killing it", attempt_id, timeout
                    )
                    await self._terminate(process)
                else:  # being killed already; wait for it to finish dying
                    await process.wait()
            finally:
                # Whatever the task left running goes with it, however the wait ended: its
                # process group now, every process of its user in `_end`.
                _signal_process(process, signal.SIGKILL)
            event = await asyncio.to_thread(self._end, attempt)  # one thread hop for it all
        except Exception as exc:  # an event must come out whatever happens here
            logger.exception("attempt %s: could not determine how it ended", attempt_id)
            event = AttemptEvent(
                attempt_id, AttemptState.FAILED, f"agent could not determine the outcome: {exc}"
            )
        except BaseException:  # cancelled: no event, and nothing of it left behind
            self._attempts.pop(attempt_id, None)
            await asyncio.to_thread(self._kill_leftovers_and_clean_up, attempt)
            raise
        self._attempts.pop(attempt_id, None)
        logger.info(
            "attempt %s: %s%s",
            attempt_id,
            event.state.value,
            f" ({event.message})" if event.message else "",
        )
        self._emit(event)
        # Its end goes out first: the sandbox and the uid go after it, off the path to the
        # next attempt (nothing of this one runs any more, and its outputs were read).
        measured = await asyncio.to_thread(self._finish, attempt)
        self._sweep_soon(attempt_id, measured)

    def _end(self, attempt: _LocalAttempt) -> AttemptEvent:
        """After its process ended (in a thread): every process left of its user killed
        (before its outputs are read: nothing may change them, and before its sandbox and
        uid are given up), its checkpoint kept, and how it ended."""
        process = attempt.process
        self._kill_leftovers(attempt)
        if isinstance(process, ForkedTask) and process.lost is not None:
            # No one reaps it for us now: see it gone before its outcome is read.
            _wait_until_gone(process.pid, _LOST_TASK_END_SECONDS)
        # Kept before the end is told, a retry reads it; also when the control plane stopped
        # the attempt: a preempted attempt runs again and resumes from it.
        keep_checkpoint(attempt.assignment, attempt.sandbox / STAGED_DIR, attempt.uid)
        return self._outcome(attempt)

    def _kill_leftovers(self, attempt: _LocalAttempt) -> None:
        """Every process left of the attempt's user killed (`swept` once none is left)."""
        if attempt.uid is not None:
            attempt.swept = kill_processes_of(attempt.uid)

    def _kill_leftovers_and_clean_up(self, attempt: _LocalAttempt) -> None:
        """A watch cancelled: no process of the attempt left, nor its sandbox, nor its uid."""
        self._kill_leftovers(attempt)
        self._clean_up(attempt.sandbox, attempt.uid, swept=attempt.swept)

    def _finish(self, attempt: _LocalAttempt) -> tuple[float, int] | None:
        """Its sandbox and uid given up, its bundle's next copy made ahead; (last write,
        bytes) of its directory, now finished, for the retention policy (None: it has none)."""
        self._clean_up(attempt.sandbox, attempt.uid, swept=attempt.swept)
        self._bundles.prepare_spare(attempt.assignment.bundle_uri)
        return _measure(attempt.directory)

    def _outcome(self, attempt: _LocalAttempt) -> AttemptEvent:
        attempt_id = attempt.assignment.attempt_id
        if attempt.stop_reason is not None:
            return AttemptEvent(attempt_id, AttemptState.CANCELLED, attempt.stop_reason)
        if attempt.timed_out:
            tail = _failure_tail(attempt.directory / LOG_FILE)
            message = f"timed out after {attempt.assignment.timeout_seconds}s"
            return AttemptEvent(attempt_id, AttemptState.FAILED, message, tail)
        gang = attempt.process if isinstance(attempt.process, GangProcess) else None
        if gang is not None and gang.lost is not None:
            # Killed with the warm runtime, not by anything of the task's: it runs again.
            return AttemptEvent(attempt_id, AttemptState.LOST, gang.lost)
        failed = gang.failed_worker if gang is not None else None
        if failed is not None:  # a gang's other worker failed, and the others were stopped
            rank, sandbox, code = failed
            result = _read_result(sandbox / RESULT_FILE, attempt.uid)
            message = str((result or {}).get("message") or _exit_message(code))
            return AttemptEvent(
                attempt_id,
                AttemptState.FAILED,
                f"worker of rank {rank} failed: {message}",
                str((result or {}).get("traceback") or ""),
            )
        returncode = attempt.process.returncode
        assert returncode is not None
        result = _read_result(attempt.sandbox / RESULT_FILE, attempt.uid)
        if result is None and isinstance(attempt.process, ForkedTask) and attempt.process.lost:
            # Killed with the warm runtime, not by anything of the task's: it runs again.
            return AttemptEvent(attempt_id, AttemptState.LOST, attempt.process.lost)
        if result is None:
            tail = _failure_tail(attempt.directory / LOG_FILE)
            return AttemptEvent(attempt_id, AttemptState.FAILED, _exit_message(returncode), tail)
        status = result.get("status")
        if status == AttemptState.SUCCEEDED.value:
            try:
                collect_outputs(attempt.assignment, attempt.sandbox / STAGED_DIR, attempt.uid)
            except StagingError as exc:
                return AttemptEvent(attempt_id, AttemptState.FAILED, str(exc))
            return AttemptEvent(attempt_id, AttemptState.SUCCEEDED)
        if status == AttemptState.FAILED.value:
            return AttemptEvent(
                attempt_id,
                AttemptState.FAILED,
                str(result.get("message") or _exit_message(returncode)),
                str(result.get("traceback") or ""),
            )
        return AttemptEvent(
            attempt_id,
            AttemptState.FAILED,
            f"task process wrote an unreadable result file ({_exit_message(returncode)})",
        )

    async def _terminate(self, process: TaskProcess, grace_seconds: float | None = None) -> None:
        """SIGTERM the attempt's process group, then SIGKILL it after the grace period
        (`grace_seconds`, else the executor's)."""
        grace = self._kill_grace_seconds if grace_seconds is None else grace_seconds
        if process.returncode is None:
            _signal_process(process, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), grace)
        _signal_process(process, signal.SIGKILL)
        await process.wait()

    async def kill(
        self, attempt_id: str, reason: str, *, grace_seconds: float | None = None
    ) -> None:
        attempt = self._attempts.get(attempt_id)
        if attempt is None:
            logger.info("attempt %s: not running here, nothing to stop", attempt_id)
            return
        if attempt.stop_reason is None and not attempt.timed_out:
            attempt.stop_reason = reason
        logger.info("attempt %s: stopping it (%s)", attempt_id, reason)
        await self._terminate(attempt.process, grace_seconds)
        if attempt.watcher is not None:
            await asyncio.wait({attempt.watcher})

    async def shutdown(self, reason: str) -> None:
        self._shut_down = True
        await asyncio.gather(*(self.kill(attempt_id, reason) for attempt_id in self.running()))
        # Attempts that ended but are still cleaning up (sandbox, uid): let them finish.
        await asyncio.gather(*self._watchers, return_exceptions=True)
        if self._warm is not None:
            await self._warm.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        await asyncio.gather(*self._sweeps, return_exceptions=True)
        await asyncio.to_thread(self._bundles.drop_spares)
        await asyncio.to_thread(self._skeletons.drop)
        with contextlib.suppress(OSError):  # nothing left in it: do not leave it behind
            self._isolation.sandbox_root.rmdir()


class MeasuredDirs(MutableMapping[str, tuple[float, int]]):
    """Finished attempts' directories by id: (last write, bytes), with their total bytes and
    oldest write kept as they change. Asked after every attempt whether a sweep could delete
    anything; summing thousands of entries each time made a large map O(n) per attempt."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, int]] = {}
        self._writes: list[tuple[float, str]] = []  # a heap; entries changed since are stale
        self.total_bytes = 0

    def __getitem__(self, attempt_id: str) -> tuple[float, int]:
        return self._entries[attempt_id]

    def __setitem__(self, attempt_id: str, measured: tuple[float, int]) -> None:
        old = self._entries.get(attempt_id)
        self.total_bytes += measured[1] - (old[1] if old is not None else 0)
        self._entries[attempt_id] = measured
        if len(self._writes) > 2 * len(self._entries) + 64:  # mostly stale: rebuilt
            self._writes = [(written, key) for key, (written, _) in self._entries.items()]
            heapq.heapify(self._writes)
        else:
            heapq.heappush(self._writes, (measured[0], attempt_id))

    def __delitem__(self, attempt_id: str) -> None:
        self.total_bytes -= self._entries.pop(attempt_id)[1]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def oldest_write(self, *, default: float) -> float:
        """The earliest last write among the directories (`default` when there is none)."""
        writes = self._writes
        while writes:
            written, attempt_id = writes[0]
            entry = self._entries.get(attempt_id)
            if entry is not None and entry[0] == written:
                return written
            heapq.heappop(writes)  # deleted or measured again since
        return default


def sweep_finished_attempt_dirs(
    attempts_dir: Path,
    running: Collection[str],
    retention: AttemptDirRetention,
    *,
    now: float,
    measured: MutableMapping[str, tuple[float, int]] | None = None,
) -> list[str]:
    """Delete finished attempts' directories under `attempts_dir` as `retention` says.

    Every directory not named in `running` is a finished attempt's (the local-process
    executor's attempts do not outlive their agent). Its age is measured from its last write.
    `measured` remembers a finished directory's (last write, bytes) from one sweep to the next:
    nothing writes there any more, and the executor sweeps after every attempt, so walking
    thousands of finished directories each time would cost a large map O(n) per attempt.

    Returns:
        The attempt ids whose directories were deleted, oldest first.
    """
    try:
        with os.scandir(attempts_dir) as found:
            entries = [Path(entry.path) for entry in found if entry.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []
    known = measured if measured is not None else {}
    for gone in set(known) - {directory.name for directory in entries}:
        del known[gone]
    total = 0
    finished: list[tuple[float, Path, int]] = []  # (last written, directory, bytes)
    for directory in entries:
        if directory.name in running:
            known.pop(directory.name, None)  # being (re)started: measured afresh once finished
            total += _tree_bytes(directory)
            continue
        if directory.name not in known:
            known[directory.name] = (_last_written(directory), _tree_bytes(directory))
        last_written, size = known[directory.name]
        total += size
        finished.append((last_written, directory, size))
    finished.sort(key=lambda item: (item[0], item[1].name))
    cap = retention.max_total_bytes
    deleted: list[str] = []
    for last_written, directory, size in finished:
        expired = now - last_written >= retention.keep_seconds
        over_cap = cap > 0 and total > cap
        if not (expired or over_cap):
            continue
        shutil.rmtree(directory, ignore_errors=True)
        if directory.exists():
            logger.warning("could not delete finished attempt directory %s", directory)
            continue
        total -= size
        known.pop(directory.name, None)
        deleted.append(directory.name)
        logger.info(
            "deleted the directory of finished attempt %s (%s)",
            directory.name,
            "kept long enough" if expired else "attempt directories over their size cap",
        )
    return deleted


def _measure(directory: Path) -> tuple[float, int] | None:
    """(last write, bytes) of an attempt's directory; None when there is none."""
    if not directory.is_dir():
        return None
    return _last_written(directory), _tree_bytes(directory)


def _last_written(directory: Path) -> float:
    """The newest modification time of the directory and the files directly in it."""
    latest = 0.0
    with contextlib.suppress(OSError):
        latest = directory.stat().st_mtime
        for child in directory.iterdir():
            with contextlib.suppress(OSError):
                latest = max(latest, child.lstat().st_mtime)
    return latest


def _tree_bytes(directory: Path) -> int:
    """Bytes the files under `directory` take (links not followed; vanishing files skipped)."""
    total = 0
    for dirpath, _dirnames, filenames in os.walk(directory):
        for name in filenames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _prepare_sandbox(
    sandbox: Path,
    assignment: TaskAssignment,
    uid: int | None,
    bundles: BundleCache,
    skeletons: SandboxSkeletons,
) -> None:
    """A fresh sandbox (or a kept skeleton of one) holding its code and what the agent staged,
    all of it the task user's but the modules its code shares with the bundle cache
    (`bundle_cache.is_shared`)."""
    shutil.rmtree(sandbox, ignore_errors=True)  # an earlier run's: never judged by its result
    if uid is not None and skeletons.take(sandbox):
        if not assignment.checkpoint_uri:  # as `stage_checkpoint` leaves a sandbox without
            (sandbox / STAGED_DIR / CHECKPOINT_DIR).rmdir()
    else:
        sandbox.mkdir(mode=0o700)
        (sandbox / TMP_DIR).mkdir()
    stage_code(assignment, sandbox / CODE_DIR, bundles)
    stage_in(assignment, sandbox / STAGED_DIR)
    stage_checkpoint(assignment, sandbox / STAGED_DIR)
    if uid is not None:
        code = str(sandbox / CODE_DIR)
        for parent, dirs, files in os.walk(sandbox):
            in_code = parent == code or parent.startswith(code + os.sep)
            owned = [n for n in files if not (in_code and is_shared(n))]
            for name in (parent, *(os.path.join(parent, n) for n in (*dirs, *owned))):
                os.chown(name, uid, uid, follow_symlinks=False)


def _prepare_attempt_dir(directory: Path, assignment: TaskAssignment) -> IO[bytes]:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    log_file = open(directory / LOG_FILE, "ab")  # noqa: SIM115 - handed to the child process
    log_file.write(
        f"fleetflow agent: attempt {assignment.attempt_id} of execution "
        f"{assignment.execution_id}, node {assignment.node_id}\n".encode()
    )
    log_file.flush()
    return log_file


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _signal_process(process: TaskProcess, signum: signal.Signals) -> None:
    """Signal the attempt's process group; every worker's, for a gang."""
    groups = process.process_groups if isinstance(process, GangProcess) else [process.pid]
    for pgid in groups:
        _signal_group(pgid, signum)


def _wait_until_gone(pid: int, timeout: float) -> None:
    """Until `pid` is no process any more (or a zombie), at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return
        time.sleep(0.01)  # pacing: a killed process ends within milliseconds


def _exit_message(returncode: int) -> str:
    message = f"task process exited with code {returncode}"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            message += f" ({signal.Signals(-returncode).name})"
    return message


def _read_result(path: Path, owner: int | None) -> dict[str, Any] | None:
    """The result file the runtime wrote; None when there is none, {} when it is not one the
    task's runtime could have written (not JSON, a link, someone else's file)."""
    if not path.exists() and not path.is_symlink():
        return None
    data = read_regular_file(path, owner, _MAX_RESULT_BYTES)
    if data is None:
        return {}
    try:
        result = json.loads(data)
    except ValueError:
        return {}
    return result if isinstance(result, dict) else {}


def _log_tail(path: Path, max_bytes: int = _LOG_TAIL_BYTES) -> str:
    """The end of the attempt's log, whole lines, as the task process wrote it."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    if size > max_bytes and "\n" in text:
        text = text.split("\n", 1)[1]  # drop the partial first line
    return text


def _attempt_log(path: Path) -> str:
    """The end of the attempt's log; a gang's is rank 0's, then each other rank's (its
    lines prefixed `[rank k]`), each its share of `MAX_LOG_BYTES`."""
    ranks = rank_logs(path.parent)
    if not ranks:
        return _log_tail(path, MAX_LOG_BYTES)
    share = MAX_LOG_BYTES // (len(ranks) + 1)
    return combined_log(
        _log_tail(path, share), [(rank, _log_tail(log, share)) for rank, log in ranks]
    )


def _failure_tail(path: Path) -> str:
    """The last lines of the attempt's log, for a failure without a traceback. Without the
    log's path: where the agent keeps its files is no business of the task's author."""
    text = _log_tail(path)
    return f"last lines of the task's log:\n{text}" if text else ""
