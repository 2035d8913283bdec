"""The worker processes of a gang on the local-process executor (`executors.gang`), with real
processes: started all or none, watched as one, stopped together when one fails."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import pytest

from data_plane_agent.executors.gang import (
    GangProcess,
    WorkerProcess,
    combined_log,
    rank_environment,
    rank_logs,
    rank_sandbox,
    rank_sandboxes,
    start_gang,
)


async def spawn(code: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-c", code, start_new_session=True)


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def test_rank_environment_is_what_torch_distributed_reads() -> None:
    assert rank_environment(2, 4, 29500) == {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500",
        "WORLD_SIZE": "4",
        "RANK": "2",
        "LOCAL_RANK": "2",
        "LOCAL_WORLD_SIZE": "4",
        "NODE_RANK": "0",
    }


async def test_a_failing_worker_stops_the_others_and_is_named() -> None:
    workers = [
        await spawn("import time; time.sleep(60)"),
        await spawn("import time; time.sleep(60)"),
        await spawn("import time; time.sleep(0.2); raise SystemExit(3)"),
    ]
    sandboxes = [Path("/s"), Path("/s.rank1"), Path("/s.rank2")]
    gang = GangProcess(workers, sandboxes, kill_grace=5.0)
    assert gang.returncode is None
    code = await asyncio.wait_for(gang.wait(), 30)
    assert code == -signal.SIGTERM
    assert gang.failed_worker == (2, Path("/s.rank2"), 3)
    assert all(gone(w.pid) for w in workers)


async def test_a_gang_whose_workers_all_succeed_returns_rank_zeros_code() -> None:
    workers = [await spawn("pass") for _ in range(3)]
    gang = GangProcess(workers, [Path("/s")] * 3, kill_grace=5.0)
    assert await asyncio.wait_for(gang.wait(), 30) == 0
    assert gang.failed_worker is None
    assert gang.returncode == 0


async def test_a_waiter_cancelled_by_a_timeout_does_not_stop_the_watch() -> None:
    workers = [await spawn("import time; time.sleep(0.5)") for _ in range(2)]
    gang = GangProcess(workers, [Path("/s")] * 2, kill_grace=5.0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(gang.wait(), 0.05)
    assert await asyncio.wait_for(gang.wait(), 30) == 0


async def test_workers_start_all_or_none(tmp_path: Path) -> None:
    sandbox = tmp_path / "at-1"
    sandbox.mkdir()
    started: list[WorkerProcess] = []
    environments: list[Mapping[str, str]] = []

    def prepare(own: Path) -> None:
        own.mkdir()

    async def start(own: Path, log: IO[bytes], env: Mapping[str, str]) -> WorkerProcess:
        if env["RANK"] == "2":
            raise OSError("no more processes")
        environments.append(env)
        started.append(await spawn("import time; time.sleep(60)"))
        return started[-1]

    with open(tmp_path / "log.txt", "ab") as log, pytest.raises(OSError, match="no more"):
        await start_gang(3, sandbox, tmp_path, log, prepare=prepare, start=start, kill_grace=1.0)
    assert len(started) == 2
    assert all(gone(w.pid) for w in started)  # the ones started are stopped
    assert rank_sandboxes(sandbox) == []  # and their sandboxes gone
    assert [e["RANK"] for e in environments] == ["0", "1"]
    assert {e["MASTER_PORT"] for e in environments} != {""}
    assert len({e["MASTER_PORT"] for e in environments}) == 1


async def test_a_gang_starts_with_a_sandbox_and_log_per_rank(tmp_path: Path) -> None:
    sandbox = tmp_path / "sandboxes" / "at-1"
    sandbox.mkdir(parents=True)
    directory = tmp_path / "attempt"
    directory.mkdir()

    async def start(own: Path, log: IO[bytes], env: Mapping[str, str]) -> WorkerProcess:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            f"print('hello from', {env['RANK']!r})",
            stdout=log,
            start_new_session=True,
        )

    with open(directory / "log.txt", "ab") as log:
        gang = await start_gang(
            3, sandbox, directory, log, prepare=Path.mkdir, start=start, kill_grace=1.0
        )
    assert await asyncio.wait_for(gang.wait(), 30) == 0
    assert len(gang.process_groups) == 3
    assert sorted(rank_sandboxes(sandbox)) == [rank_sandbox(sandbox, 1), rank_sandbox(sandbox, 2)]
    ranks = rank_logs(directory)
    assert [rank for rank, _ in ranks] == [1, 2]
    text = combined_log((directory / "log.txt").read_text(), [(r, p.read_text()) for r, p in ranks])
    assert text == "hello from 0\n[rank 1] hello from 1\n[rank 2] hello from 2\n"
    assert os.path.isdir(sandbox)


async def test_a_worker_lost_with_the_warm_runtime_makes_the_gang_lost() -> None:
    class Lost:
        def __init__(self, pid: int) -> None:
            self.pid, self.returncode, self.lost = pid, -9, "the warm task runtime died"

        async def wait(self) -> int:
            return -9

    survivor = await spawn("import time; time.sleep(60)")
    gang = GangProcess([survivor, Lost(2**22 + 7)], [Path("/s"), Path("/s.rank1")], 5.0)
    await asyncio.wait_for(gang.wait(), 30)
    assert gang.lost == "the warm task runtime died"
    assert gone(survivor.pid)
