"""The benchmark's DAGs as bare Temporal workflows over no-op activities: the lower bound.

No database, no placement, no process per task: a workflow that schedules activities on an
in-process worker, through the same Temporal server the Fleetflow stack uses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow

ACTIVITY_TIMEOUT = timedelta(seconds=60)


@dataclass
class StampInput:
    path: str


@dataclass
class DagInput:
    size: int
    x: int = 0


@activity.defn
def stamp(args: StampInput) -> float:
    """Write the wall-clock time at which the activity body starts to `args.path`."""
    now = time.time()
    with open(args.path, "w") as f:
        f.write(repr(now))
    return now


@activity.defn
def add_one(x: int) -> int:
    return x + 1


@workflow.defn
class SingleWorkflow:
    @workflow.run
    async def run(self, args: StampInput) -> float:
        return await workflow.execute_activity(stamp, args, start_to_close_timeout=ACTIVITY_TIMEOUT)


@workflow.defn
class ChainWorkflow:
    @workflow.run
    async def run(self, args: DagInput) -> int:
        x = args.x
        for _ in range(args.size):
            x = await workflow.execute_activity(add_one, x, start_to_close_timeout=ACTIVITY_TIMEOUT)
        return x


@workflow.defn
class FanWorkflow:
    @workflow.run
    async def run(self, args: DagInput) -> int:
        results = await asyncio.gather(
            *(
                workflow.execute_activity(add_one, args.x, start_to_close_timeout=ACTIVITY_TIMEOUT)
                for _ in range(args.size)
            )
        )
        return results[-1]


WORKFLOWS = [SingleWorkflow, ChainWorkflow, FanWorkflow]
ACTIVITIES: list[Callable[..., Any]] = [stamp, add_one]
