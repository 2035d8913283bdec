"""A failed Temporal worker is replaced instead of ending the control plane (supervisor.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from control_plane.orchestration.supervisor import WorkerSupervisor


class ScriptedWorker:
    """Fails at once when `fails`, else runs until shut down, like temporalio's Worker."""

    def __init__(self, fails: bool) -> None:
        self.fails = fails
        self.running = False
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        if self.fails:
            raise RuntimeError("Workflow worker failed: Poll failure: transport error")
        self.running = True
        await self._stopped.wait()
        self.running = False

    async def shutdown(self) -> None:  # returns at once for a failed worker, as temporalio's
        self._stopped.set()


async def test_failed_workers_are_replaced_until_one_runs_and_shutdown_stops_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    made: list[ScriptedWorker] = []

    def make() -> ScriptedWorker:
        made.append(ScriptedWorker(fails=len(made) < 2))
        return made[-1]

    supervisor = WorkerSupervisor(make, initial_backoff=0.01, max_backoff=0.02)
    with caplog.at_level(logging.ERROR, logger="control_plane.orchestration.supervisor"):
        task = asyncio.create_task(supervisor.run())
        while not (made and made[-1].running):
            assert not task.done(), task
            await asyncio.sleep(0.005)
    assert len(made) == 3 and supervisor.restarts == 2
    failures = [r.getMessage() for r in caplog.records]
    assert len(failures) == 2
    assert "the Temporal worker failed (RuntimeError: Workflow worker failed" in failures[0]

    await supervisor.shutdown()
    await asyncio.wait_for(task, timeout=5)
    assert not made[-1].running and len(made) == 3  # none started after the shutdown


async def test_shutdown_during_the_backoff_starts_no_new_worker() -> None:
    made: list[ScriptedWorker] = []

    def make() -> ScriptedWorker:
        made.append(ScriptedWorker(fails=True))
        return made[-1]

    supervisor = WorkerSupervisor(make, initial_backoff=3600)  # waits an hour unless stopped
    task = asyncio.create_task(supervisor.run())
    while supervisor.restarts == 0:
        await asyncio.sleep(0.005)
    await supervisor.shutdown()
    await asyncio.wait_for(task, timeout=5)
    assert len(made) == 1


async def test_shutdown_before_the_first_worker_starts_none() -> None:
    made: list[ScriptedWorker] = []

    def make() -> ScriptedWorker:
        made.append(ScriptedWorker(fails=False))
        return made[-1]

    supervisor = WorkerSupervisor(make)
    await supervisor.shutdown()
    await asyncio.wait_for(supervisor.run(), timeout=5)
    assert made == []


class Recovery:
    """An `on_replaced` that fails its first `failures` calls, then succeeds."""

    def __init__(self, failures: int = 0, blocks: bool = False) -> None:
        self.failures = failures
        self.blocks = blocks
        self.calls = 0
        self.succeeded = 0
        self.cancelled = False

    async def __call__(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError("Temporal is still away")
        if self.blocks:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        self.succeeded += 1


async def test_after_a_replacement_the_recovery_is_retried_until_it_succeeds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    made: list[ScriptedWorker] = []

    def make() -> ScriptedWorker:
        made.append(ScriptedWorker(fails=len(made) < 1))
        return made[-1]

    recovery = Recovery(failures=2)
    supervisor = WorkerSupervisor(
        make, on_replaced=recovery, initial_backoff=0.01, max_backoff=0.02
    )
    with caplog.at_level(logging.ERROR, logger="control_plane.orchestration.supervisor"):
        task = asyncio.create_task(supervisor.run())
        while recovery.succeeded == 0:
            assert not task.done(), task
            await asyncio.sleep(0.005)
    await supervisor.shutdown()
    await asyncio.wait_for(task, timeout=5)
    assert len(made) == 2 and recovery.calls == 3  # none for the first worker
    said = [r.getMessage() for r in caplog.records]
    assert sum("could not take back the replaced worker's workflows" in m for m in said) == 2


async def test_the_first_worker_needs_no_recovery() -> None:
    made: list[ScriptedWorker] = []

    def make() -> ScriptedWorker:
        made.append(ScriptedWorker(fails=False))
        return made[-1]

    recovery = Recovery()
    supervisor = WorkerSupervisor(make, on_replaced=recovery)
    task = asyncio.create_task(supervisor.run())
    while not (made and made[0].running):
        await asyncio.sleep(0.005)
    await supervisor.shutdown()
    await asyncio.wait_for(task, timeout=5)
    assert recovery.calls == 0


async def test_shutdown_stops_a_recovery_in_progress() -> None:
    made: list[ScriptedWorker] = []

    def make() -> ScriptedWorker:
        made.append(ScriptedWorker(fails=len(made) < 1))
        return made[-1]

    recovery = Recovery(blocks=True)
    supervisor = WorkerSupervisor(make, on_replaced=recovery, initial_backoff=0.01)
    task = asyncio.create_task(supervisor.run())
    while recovery.calls == 0:
        await asyncio.sleep(0.005)
    await supervisor.shutdown()
    await asyncio.wait_for(task, timeout=5)
    assert recovery.cancelled and recovery.succeeded == 0
