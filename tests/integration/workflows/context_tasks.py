"""Tasks that report their `fleetflow.current_context()`, run locally and on the platform: a
retried node (its second attempt succeeds), a map node, and a task run alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from fleetflow import current_context, map_task, task, workflow
from fleetflow.context import CheckpointUnavailableError


@dataclass
class ContextReport:
    execution_id: str
    node_id: str
    attempt_number: int
    map_index: int | None
    attempt_id: str
    task_name: str
    workdir_was_empty: bool
    local: bool
    checkpoint: str
    """What the first attempt's checkpoint said, "none", or why there is no checkpoint."""


class Reports(NamedTuple):
    retried: ContextReport
    elements: list[ContextReport]


def _report() -> ContextReport:
    ctx = current_context()
    ctx.logger.info("context of %s attempt %d", ctx.node_id, ctx.attempt_number)
    try:
        kept = ctx.checkpoint.read()
        checkpoint = "none" if kept is None else kept.decode()
    except CheckpointUnavailableError:
        checkpoint = "unavailable"
    return ContextReport(
        execution_id=ctx.execution_id,
        node_id=ctx.node_id,
        attempt_number=ctx.attempt_number,
        map_index=ctx.map_index,
        attempt_id=ctx.attempt_id,
        task_name=ctx.task_name,
        workdir_was_empty=ctx.workdir.is_dir() and not any(ctx.workdir.iterdir()),
        local=ctx.local,
        checkpoint=checkpoint,
    )


@task(retries=1)
def fails_once(x: int) -> ContextReport:
    """Fails its first attempt (after checkpointing, where it can), reports from the second."""
    ctx = current_context()
    if ctx.attempt_number == 1:
        if ctx.local:
            ctx.checkpoint.write(b"from attempt 1")
        raise RuntimeError(f"first attempt of x={x} fails on purpose")
    return _report()


@task
def element(x: int) -> ContextReport:
    return _report()


@workflow
def context_flow(x: int, xs: list[int]) -> Reports:
    return Reports(retried=fails_once(x=x), elements=map_task(element)(x=xs))
