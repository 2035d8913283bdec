"""Gangs on the local-process executor: one attempt of a `@task(replicas=N)` is N worker
processes on this machine, started together and ended together.

Every worker is an ordinary task-runtime process (forked by the warm runtime, or exec'd) with
the rendezvous environment `torch.distributed` reads: `MASTER_ADDR` (loopback), a free
`MASTER_PORT`, `WORLD_SIZE`, `RANK`, `LOCAL_RANK` (= `RANK`: all on this machine) and
`NODE_RANK` (0). Rank 0 runs in the attempt's own sandbox, so the executor reads its result
file, collects its outputs and keeps its checkpoint exactly as for a single worker; the other
ranks run in sandboxes of their own (`<sandbox>.rank<k>`), whose outputs are never read: the
task's result is rank 0's. Each rank other than 0 writes its output to `log.rank<k>.txt` in the
attempt's directory; the attempt's log is rank 0's followed by the others', each line prefixed
`[rank k]`.

All or none: a worker that cannot be started stops those started before it, and the launch
fails. A worker that exits non-zero (or is killed) stops the others (SIGTERM, then SIGKILL after
the grace period), and the attempt fails naming that rank; the control plane then retries the
group as one attempt. Stopping the attempt (cancel, timeout) signals every worker's process
group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Protocol

MASTER_ADDR = "127.0.0.1"
_RANK_LOG = re.compile(r"^log\.rank(\d+)\.txt$")


class WorkerProcess(Protocol):
    """One worker's process (what `local_process.TaskProcess` is)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


def free_port(host: str = MASTER_ADDR) -> int:
    """A TCP port free on `host` now, for rank 0 to listen on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def rank_environment(rank: int, world_size: int, master_port: int) -> dict[str, str]:
    """The rendezvous environment of one worker of a gang on this machine."""
    return {
        "MASTER_ADDR": MASTER_ADDR,
        "MASTER_PORT": str(master_port),
        "WORLD_SIZE": str(world_size),
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "LOCAL_WORLD_SIZE": str(world_size),
        "NODE_RANK": "0",
    }


def rank_sandbox(sandbox: Path, rank: int) -> Path:
    """The sandbox of a worker of rank `rank` > 0 (rank 0 has the attempt's)."""
    return sandbox.with_name(f"{sandbox.name}.rank{rank}")


def rank_sandboxes(sandbox: Path) -> list[Path]:
    """The sandboxes of the ranks > 0 of the attempt whose sandbox is `sandbox`."""
    if not sandbox.parent.is_dir():
        return []
    prefix = f"{sandbox.name}.rank"
    return [
        path
        for path in sandbox.parent.iterdir()
        if path.name.startswith(prefix) and path.name[len(prefix) :].isdigit()
    ]


def rank_log(directory: Path, rank: int) -> Path:
    return directory / f"log.rank{rank}.txt"


def rank_logs(directory: Path) -> list[tuple[int, Path]]:
    """(rank, log file) of the ranks > 0 that wrote one in the attempt's `directory`."""
    found = []
    with contextlib.suppress(OSError):
        for path in directory.iterdir():
            match = _RANK_LOG.match(path.name)
            if match:
                found.append((int(match[1]), path))
    return sorted(found)


def combined_log(rank0: str, ranks: Sequence[tuple[int, str]]) -> str:
    """Rank 0's log, then each other rank's with its lines prefixed `[rank k] `."""
    parts = [rank0 if not rank0 or rank0.endswith("\n") else rank0 + "\n"]
    for rank, text in ranks:
        parts.extend(f"[rank {rank}] {line}\n" for line in text.splitlines())
    return "".join(parts)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


class GangProcess:
    """The worker processes of one attempt, watched as one: it runs while any worker runs,
    and the first worker to exit non-zero stops the others.

    `pid` and `returncode` are rank 0's (its process group is the attempt's own, its result
    the task's); `process_groups` are every worker's.
    """

    def __init__(
        self, workers: Sequence[WorkerProcess], sandboxes: Sequence[Path], kill_grace: float
    ) -> None:
        self._workers = list(workers)
        self._sandboxes = list(sandboxes)
        self._kill_grace = kill_grace
        self._failed_rank: int | None = None
        self._ended: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self._workers[0].pid

    @property
    def process_groups(self) -> list[int]:
        return [worker.pid for worker in self._workers]

    @property
    def returncode(self) -> int | None:
        if any(worker.returncode is None for worker in self._workers):
            return None
        return self._workers[0].returncode

    @property
    def failed_worker(self) -> tuple[int, Path, int] | None:
        """(rank, sandbox, exit code) of the first worker other than rank 0 that failed and
        so ended the gang; None when none did (rank 0's own result then tells)."""
        rank = self._failed_rank
        if not rank:
            return None
        return rank, self._sandboxes[rank], self._workers[rank].returncode or 0

    @property
    def lost(self) -> str | None:
        """Why a worker's end is unknown (the warm runtime that forked it died), or None."""
        return next((why for w in self._workers if (why := getattr(w, "lost", None))), None)

    def signal(self, signum: signal.Signals) -> None:
        """Signal the process group of every worker still running."""
        for worker in self._workers:
            if worker.returncode is None:
                _signal_group(worker.pid, signum)

    async def wait(self) -> int:
        """Until every worker has ended; rank 0's return code. Cancelling a waiter does not
        cancel the watch (nor other waiters)."""
        if self._ended is None:
            self._ended = asyncio.ensure_future(self._watch())
        await asyncio.shield(self._ended)
        code = self._workers[0].returncode
        assert code is not None
        return code

    async def _watch(self) -> None:
        waits = {
            asyncio.ensure_future(worker.wait()): rank for rank, worker in enumerate(self._workers)
        }
        pending = set(waits)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            failed = sorted(waits[d] for d in done if self._workers[waits[d]].returncode != 0)
            if failed and self._failed_rank is None:
                self._failed_rank = failed[0]
                break
        if not pending:
            return
        # One worker failed: the gang cannot go on without it.
        self.signal(signal.SIGTERM)
        _, pending = await asyncio.wait(pending, timeout=self._kill_grace)
        if pending:
            self.signal(signal.SIGKILL)
            await asyncio.wait(pending)


async def start_gang(
    replicas: int,
    sandbox: Path,
    directory: Path,
    rank0_log: IO[bytes],
    *,
    prepare: Callable[[Path], None],
    start: Callable[[Path, IO[bytes], Mapping[str, str]], Awaitable[WorkerProcess]],
    kill_grace: float,
) -> GangProcess:
    """Start the `replicas` workers of one attempt, all or none.

    Args:
        sandbox: the attempt's sandbox (prepared already): rank 0's.
        directory: the attempt's directory, for the other ranks' logs.
        rank0_log: where rank 0 writes (the attempt's log).
        prepare: makes a fresh sandbox for another rank, staged like the attempt's.
        start: starts one worker in a sandbox, writing to a log, with extra environment.

    Raises:
        Whatever `prepare` or `start` raised, once the workers started are gone.
    """
    port = free_port()
    workers: list[WorkerProcess] = []
    sandboxes: list[Path] = [sandbox]
    try:
        workers.append(await start(sandbox, rank0_log, rank_environment(0, replicas, port)))
        for rank in range(1, replicas):
            own = rank_sandbox(sandbox, rank)
            sandboxes.append(own)
            await asyncio.to_thread(prepare, own)
            with open(rank_log(directory, rank), "ab") as log:
                workers.append(await start(own, log, rank_environment(rank, replicas, port)))
    except BaseException:
        for worker in workers:
            _signal_group(worker.pid, signal.SIGKILL)
        for worker in workers:
            with contextlib.suppress(Exception):
                await worker.wait()
        for own in sandboxes[1:]:
            await asyncio.to_thread(shutil.rmtree, own, True)
        raise
    return GangProcess(workers, sandboxes, kill_grace)
