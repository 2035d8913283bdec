"""`current_context()`: what a running task attempt knows about itself, locally and remotely.

Inside a `@task` function, while a workflow runs it (in this process, or on a cluster through
`fleetflow.runtime`), `fleetflow.current_context()` returns a `TaskContext`:

    from fleetflow import current_context, task

    @task(retries=2)
    def train(epochs: int) -> float:
        ctx = current_context()
        ctx.logger.info("attempt %d of node %s", ctx.attempt_number, ctx.node_id)
        start = int(ctx.checkpoint.read() or b"0")        # the last attempt's progress
        for epoch in range(start, epochs):
            ...
            ctx.checkpoint.write(str(epoch + 1).encode())
        return 0.1

Its fields are the same wherever the task runs: the execution's id (`local-…` for a local
run), the node's id as compiled (`n0-train`), the attempt's number (1, then 2 for the first
retry…), the element's index in a map node (None in an ordinary node), a working directory of
the attempt's own (fresh and empty, removed when the attempt ends), and a `logging.Logger`
whose records go where the task's own log records go (the attempt's log on a cluster, stderr
with `fleetflow run`).

`checkpoint` keeps bytes (and, if wanted, a directory) from one attempt of a unit (a node, or
one element of a map node) to the next attempt of the same unit, so a retried task can resume.
A checkpoint is saved when `write` (or `save_directory`) returns: the unit's next attempt reads
it however this one ends, failed, preempted, killed or lost with its pod. Local runs keep them
in a temporary directory of the run, removed when it ends. On the platform, the unit's
checkpoint is copied in from the blob store before an attempt starts. In a Kubernetes pod the
task runtime itself uploads each write before it returns (`fleetflow.runtime --checkpoint-uri`,
through presigned URLs for the unit's checkpoint alone where the store is S3), so a pod
deleted or killed mid-way loses nothing it wrote. Where the agent stages its tasks' files (the
local-process executor, `data_plane_agent.staging`), a write lands on the agent's disk and the
agent uploads it once the process ended, however it ended (stopped, killed and failed
included). Where an attempt is given no checkpoint location (by an agent or control plane older
than checkpoints), reading `ctx.checkpoint` raises `CheckpointUnavailableError` rather than
losing what a task writes.

The context lives in a `contextvars.ContextVar` set around each attempt, so map elements running
in threads each see their own, and nothing outside an attempt sees one.
"""

from __future__ import annotations

import logging
import os
import sys
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from fleetflow.errors import FleetflowError

CHECKPOINT_FILE = "checkpoint.bin"
"""A unit's checkpoint bytes, in its checkpoint directory (and blob prefix, on the platform)."""
DIRECTORY_ARCHIVE = "directory.tar"
"""A unit's checkpointed directory, as an uncompressed tar archive, beside them."""
CHECKPOINT_NAMES = (CHECKPOINT_FILE, DIRECTORY_ARCHIVE)
"""Everything a checkpoint is: the only names an agent stages in and uploads."""


class NoTaskContextError(FleetflowError, RuntimeError):
    """`current_context()` was called where no task attempt is running."""


class CheckpointUnavailableError(FleetflowError, RuntimeError):
    """The attempt was given no checkpoint location (by an agent or control plane older than
    checkpoints)."""


class CheckpointSaveError(FleetflowError, RuntimeError):
    """A checkpoint was written in the attempt but could not be saved for the next attempts
    (its upload failed); what was saved before is kept."""


class Checkpoint:
    """What one unit (a node, or one element of a map node) keeps for its next attempt.

    One slot of bytes and one directory per unit; each write replaces the previous one whole
    (a reader never sees half of a write). Every attempt of the unit reads what the last write
    left, its own or an earlier attempt's. Both live as two files in `root`
    (`CHECKPOINT_NAMES`): a local run's directory for the unit, or, on the platform, the
    directory the checkpoint was staged into from the unit's blob prefix. `save`, when given,
    is called with the name and path of each file written, before the write returns (the task
    runtime in a pod uploads it there); else whoever staged `root` uploads it after the attempt.
    """

    def __init__(self, root: Path, save: Callable[[str, Path], None] | None = None) -> None:
        self._root = root
        self._save = save

    def __repr__(self) -> str:
        return f"<Checkpoint {self._root}>"

    def read(self) -> bytes | None:
        """The bytes last written for this unit, or None when none were."""
        try:
            return (self._root / CHECKPOINT_FILE).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, data: bytes) -> None:
        """Keep `data` for this unit's next attempts, replacing what was kept: saved when this
        returns, however the attempt ends afterwards.

        Raises:
            TypeError: `data` is not bytes (encode text, e.g. `json.dumps(state).encode()`).
            CheckpointSaveError: it could not be saved (the earlier checkpoint is kept).
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(
                f"checkpoint.write() takes bytes, got {type(data).__name__}; encode it first, "
                "e.g. json.dumps(state).encode()"
            )
        with self._replacing(CHECKPOINT_FILE) as f:
            f.write(data)

    @contextmanager
    def _replacing(self, name: str) -> Iterator[IO[bytes]]:
        """A file to write that replaces `name` whole once the block ends without error."""
        self._root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._root, prefix=".write-")
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
            os.replace(tmp, self._root / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if self._save is not None:
            self._save(name, self._root / name)

    def save_directory(self, source: str | os.PathLike[str]) -> None:
        """Keep a copy of the directory `source` (e.g. model weights) for the next attempts,
        replacing the directory kept before: saved when this returns.

        Raises:
            NotADirectoryError: `source` is not a directory.
            CheckpointSaveError: it could not be saved (the earlier directory is kept).
        """
        path = Path(source)
        if not path.is_dir():
            raise NotADirectoryError(f"checkpoint.save_directory(): {source} is not a directory")
        with self._replacing(DIRECTORY_ARCHIVE) as f, tarfile.open(fileobj=f, mode="w") as tar:
            for entry in sorted(path.iterdir()):
                tar.add(entry, arcname=entry.name)

    def restore_directory(self, destination: str | os.PathLike[str]) -> bool:
        """Copy the directory kept last into `destination` (created; files there already are
        overwritten); False, copying nothing, when no directory was kept.

        Raises:
            tarfile.TarError: the kept archive holds what may not be extracted (a path or link
                out of `destination`, a device file).
        """
        archive = self._root / DIRECTORY_ARCHIVE
        if not archive.is_file():
            return False
        target = Path(destination)
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, mode="r:") as tar:
            tar.extractall(target, filter="data")  # nothing outside `target`, no devices
        return True


@dataclass(frozen=True)
class TaskContext:
    """What a running task attempt knows about itself; see `current_context`.

    Attributes:
        execution_id: the execution (the workflow run); `local-<hex>` in a local run.
        node_id: the workflow node the attempt runs, as compiled (`n0-train`).
        attempt_number: 1 for the first attempt of the unit, 2 for the first retry, ...
        map_index: the element of a map node the attempt runs; None in an ordinary node.
        attempt_id: the attempt's own id (the control plane's on a cluster).
        task_name: the task's name, `<module>.<function>`.
        workdir: a fresh directory of the attempt's own, made when first asked for and
            removed when the attempt ends.
        logger: a logger whose records go to the task's log, named after the task.
        local: True when the attempt runs in-process (`fleetflow run`, calling a workflow).
    """

    execution_id: str
    node_id: str
    attempt_number: int
    map_index: int | None
    attempt_id: str
    task_name: str
    _workdir: _AttemptDirectory = field(repr=False)
    logger: logging.Logger
    local: bool
    _checkpoint: Checkpoint | None = field(default=None, repr=False)

    @property
    def workdir(self) -> Path:
        return self._workdir.path()

    @property
    def checkpoint(self) -> Checkpoint:
        """The unit's checkpoint, which its next attempt reads.

        Raises:
            CheckpointUnavailableError: the attempt was given no checkpoint location (by an
                agent or control plane older than checkpoints).
        """
        if self._checkpoint is None:
            raise CheckpointUnavailableError(
                "no checkpoint is kept for this attempt: its agent gave it no checkpoint "
                "location (its agent or control plane is older than checkpoints)"
            )
        return self._checkpoint


_CURRENT: ContextVar[TaskContext | None] = ContextVar("fleetflow_task_context", default=None)


def current_context() -> TaskContext:
    """The context of the task attempt running now, in this thread.

    Raises:
        NoTaskContextError: no task attempt is running here: in a workflow body (run once,
            to compile the graph), in plain Python, or in a task function called directly.
    """
    context = _CURRENT.get()
    if context is not None:
        return context
    compiler = sys.modules.get("fleetflow.compiler")
    compilation = compiler.active_compilation() if compiler is not None else None
    if compilation is not None:
        from fleetflow.promise import caller_location  # loaded with the compiler already

        raise NoTaskContextError(
            f"workflow '{compilation.workflow_name}' at {caller_location()}: "
            "fleetflow.current_context() was called in the workflow body, which runs once to "
            "compile the graph, before any task does: call it inside a @task function"
        )
    raise NoTaskContextError(
        "fleetflow.current_context() was called outside a running task: it is only available "
        "inside a @task function that a workflow runs (locally, with `fleetflow run`, or on the "
        "platform); a task function called directly is plain Python and has none"
    )


class _CurrentStderr(logging.StreamHandler):
    """A stream handler that writes to whatever `sys.stderr` is when a record is emitted (the
    line-labelling stand-in while map elements run, the CLI's redirection...)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


TASK_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""How a task's `logging` records read in its log, on a cluster and with `fleetflow run`."""


@contextmanager
def task_log_records_to_stderr(level: int = logging.INFO) -> Iterator[None]:
    """Inside the block, write the `logging` records of tasks (of `TaskContext.logger` and any
    other logger outside the SDK's own) at `level` and above to stderr, formatted as the task
    runtime on a cluster writes them into an attempt's log: what `fleetflow run` does, as the
    program that owns the process's logging."""
    root = logging.getLogger()
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter(TASK_LOG_FORMAT))
    saved_level = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_level)


@contextmanager
def attempt_context(
    *,
    execution_id: str,
    node_id: str,
    attempt_number: int,
    map_index: int | None,
    attempt_id: str,
    task_name: str,
    local: bool,
    checkpoint: Checkpoint | None,
) -> Iterator[TaskContext]:
    """Make the context of one attempt current for the block, with a fresh working directory
    (made when first asked for) that is removed when the block ends."""
    workdir = _AttemptDirectory()
    context = TaskContext(
        execution_id=execution_id,
        node_id=node_id,
        attempt_number=attempt_number,
        map_index=map_index,
        attempt_id=attempt_id,
        task_name=task_name,
        _workdir=workdir,
        logger=logging.getLogger(task_name),
        local=local,
        _checkpoint=checkpoint,
    )
    token = _CURRENT.set(context)
    try:
        yield context
    finally:
        _CURRENT.reset(token)
        workdir.remove()


class _AttemptDirectory:
    """An attempt's working directory, made on first use: most tasks never ask for one, and
    making and removing it was a tenth of a no-op attempt's CPU in its task process."""

    def __init__(self) -> None:
        self._made: tempfile.TemporaryDirectory[str] | None = None
        self._lock = threading.Lock()  # a task's threads may ask at once: one directory

    def path(self) -> Path:
        with self._lock:
            if self._made is None:
                self._made = tempfile.TemporaryDirectory(
                    prefix="fleetflow-attempt-", ignore_cleanup_errors=True
                )
            return Path(self._made.name)

    def remove(self) -> None:
        with self._lock:
            if self._made is not None:
                self._made.cleanup()
