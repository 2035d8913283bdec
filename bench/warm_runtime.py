"""Per-attempt cost of the local-process executor: warm task runtime (fork server) vs exec.

Issue 15: an attempt's process used to be a new `python -m fleetflow.runtime` (as another user
when the agent is root, through a second, small interpreter that switches uid), paying an
interpreter start and the runtime's imports every time. The warm runtime forks it from a process
that has both behind it. This script measures both, in one run, with the real executor:

- **attempt**: `LocalProcessExecutor.launch` of a no-op task until its terminal event: what an
  agent spends per attempt on this machine (staging its sandbox, starting the process, the
  runtime unpacking the bundle, importing and calling the task, writing its result, the exit
  seen, the result read, the sandbox removed). Split into launch -> RUNNING (sandbox and process
  start) and RUNNING -> terminal (the process's life and the exit's detection, the outcome).
- **process**: one task process alone, launched and seen to exit, doing as little as the
  runtime can (`python -m fleetflow.runtime --help`): through the fork server's `spawn`, or
  `asyncio.create_subprocess_exec` as the executor execs it (`as_user` when root). The
  issue's target is this one: <= 20 ms.

Both paths alternate attempt by attempt, after `--warmup` untimed ones each (the fork server is
started and warm before any timing), so load on the machine hits both alike. Figures: p50 and
p99 in milliseconds.

    python bench/warm_runtime.py [--attempts 30] [--warmup 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "sdk")]

from data_plane_agent.attempts import TaskAssignment  # noqa: E402
from data_plane_agent.executors.local_process import (  # noqa: E402
    LocalProcessExecutor,
    task_environment,
)
from data_plane_agent.executors.warm_runtime import ForkServer  # noqa: E402
from data_plane_agent.sandbox import as_user, resolve_isolation  # noqa: E402
from fleetflow.bundle import build_bundle  # noqa: E402
from fleetflow.child_processes import parent_env  # noqa: E402
from fleetflow.states import AttemptState  # noqa: E402
from fleetflow.storage import LocalBlobStore  # noqa: E402

NOOP_TASKS = '''
class _Task:
    """A no-op task, in the shape the runtime expects of a @fleetflow.task."""

    fn = staticmethod(lambda: None)
    input_types = {}
    output_type = None


noop = _Task()
'''
PATHS = ("warm", "exec")


class Attempts:
    """No-op attempts of one bundle in a `file://` blob store."""

    def __init__(self, root: Path) -> None:
        code = root / "code"
        code.mkdir(parents=True)
        (code / "noop_tasks.py").write_text(NOOP_TASKS)
        self.store = LocalBlobStore(root / "blobs")
        digest, data = build_bundle(code)
        self.bundle_uri = self.store.put(f"bundles/{digest}.tar.gz", data)
        self.inputs_uri = self.store.put("inputs.json", b"{}")
        self.count = 0

    def next(self) -> TaskAssignment:
        self.count += 1
        attempt_id = f"at-{self.count}"
        return TaskAssignment(
            attempt_id=attempt_id,
            fencing_token=1,
            execution_id="ex-bench",
            node_id="n0",
            tenant="default",
            task_module="noop_tasks",
            task_function="noop",
            bundle_uri=self.bundle_uri,
            inputs_uri=self.inputs_uri,
            outputs_uri=self.store.uri(f"{attempt_id}/outputs.json"),
        )


async def time_attempt(
    executor: LocalProcessExecutor, assignment: TaskAssignment
) -> dict[str, float]:
    """Seconds from launch to RUNNING and to the terminal event of one attempt."""
    started = time.perf_counter()
    await executor.launch(assignment)
    running = await executor.next_event()
    assert running.state is AttemptState.RUNNING, running
    running_at = time.perf_counter()
    done = await executor.next_event()
    ended_at = time.perf_counter()
    assert done.state is AttemptState.SUCCEEDED, (done.message, done.traceback)
    return {
        "attempt": ended_at - started,
        "launch_to_running": running_at - started,
        "running_to_exit_seen": ended_at - running_at,
    }


class ProcessTimers:
    """One task process alone, `fleetflow.runtime --help` (as a task user when root), from its
    start until its exit was seen: forked by a fork server of its own, or exec'd as the
    executor execs it."""

    def __init__(self, work: Path) -> None:
        isolation = resolve_isolation(work / "isolation")
        self._users = isolation.users
        self._uid = self._users.acquire() if self._users is not None else None
        self._python = isolation.interpreter.executable
        self._env = {
            **task_environment(os.environ),
            **isolation.interpreter.env(),
            "PYTHONUNBUFFERED": "1",
        }
        self._cwd = work
        self._log = work / "process.log"
        self._server: ForkServer | None = None

    async def start(self) -> None:
        self._server = await ForkServer.start(self._python, {**self._env, **parent_env()})

    async def forked(self) -> float:
        assert self._server is not None
        with open(self._log, "ab") as log:
            started = time.perf_counter()
            task = await self._server.spawn(
                ["--help"], env=self._env, cwd=self._cwd, uid=self._uid, log_fd=log.fileno()
            )
            code = await task.wait()
        assert code == 0, code
        return time.perf_counter() - started

    async def exec_d(self) -> float:
        with open(self._log, "ab") as log:
            started = time.perf_counter()
            process = await asyncio.create_subprocess_exec(
                *as_user(self._uid, [self._python, "-m", "fleetflow.runtime", "--help"]),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                cwd=self._cwd,
                env={**self._env, **parent_env()},
                start_new_session=True,
            )
            code = await process.wait()
        assert code == 0, code
        return time.perf_counter() - started

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()
        if self._users is not None and self._uid is not None:
            self._users.release(self._uid)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summarise(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": statistics.median(samples) * 1000,
        "p99_ms": percentile(samples, 0.99) * 1000,
        "n": len(samples),
    }


async def bench(attempts: int, warmup: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fleetflow-bench-warm-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # task users pass through to their sandboxes and this script's cwd
        source = Attempts(work / "attempts")
        executors = {
            path: LocalProcessExecutor(work / f"agent-{path}", warm_runtime=path == "warm")
            for path in PATHS
        }
        try:
            for executor in executors.values():
                await executor.start()
            while executors["warm"].warm_runtime_pid is None:
                await asyncio.sleep(0.05)  # pacing: the fork server imports the runtime
            samples: dict[str, dict[str, list[float]]] = {path: {} for path in PATHS}
            for round_number in range(warmup + attempts):
                for path in PATHS:
                    timed = await time_attempt(executors[path], source.next())
                    if round_number >= warmup:
                        for name, seconds in timed.items():
                            samples[path].setdefault(name, []).append(seconds)
            timers = ProcessTimers(work)
            try:
                await timers.start()
                start_one = {"warm": timers.forked, "exec": timers.exec_d}
                for round_number in range(warmup + attempts):
                    for path in PATHS:
                        seconds = await start_one[path]()
                        if round_number >= warmup:
                            samples[path].setdefault("process", []).append(seconds)
            finally:
                await timers.close()
        finally:
            for executor in executors.values():
                await executor.shutdown("benchmark over")
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "root": os.geteuid() == 0,
            "load": os.getloadavg(),
        },
        "figures": {
            path: {name: summarise(values) for name, values in samples[path].items()}
            for path in PATHS
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", type=int, default=30, help="timed attempts per path")
    parser.add_argument("--warmup", type=int, default=3, help="untimed attempts per path first")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    result = asyncio.run(bench(args.attempts, args.warmup))
    machine = result["machine"]
    print(  # noqa: T201 - the report
        f"{machine['cpus']} CPUs, Python {machine['python']}, root: {machine['root']}, "
        f"load {machine['load'][0]:.1f}; {args.attempts} timed per path, p50 / p99 in ms"
    )
    print(f"{'figure':<24}{'warm p50':>10}{'warm p99':>10}{'exec p50':>10}{'exec p99':>10}")  # noqa: T201
    figures = result["figures"]
    for name in ("process", "attempt", "launch_to_running", "running_to_exit_seen"):
        warm, exec_d = figures["warm"][name], figures["exec"][name]
        print(  # noqa: T201
            f"{name:<24}{warm['p50_ms']:>10.1f}{warm['p99_ms']:>10.1f}"
            f"{exec_d['p50_ms']:>10.1f}{exec_d['p99_ms']:>10.1f}"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
