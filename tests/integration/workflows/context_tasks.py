"""Tasks that report their `fleetflow.current_context()`, run locally and on the platform: a
retried node (its second attempt succeeds, reading the first one's checkpoint), a map node, a
task run alone, and a hostile task that plants a link as its checkpoint."""

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
    """Fails its first attempt after checkpointing; reports from the second."""
    ctx = current_context()
    if ctx.attempt_number == 1:
        ctx.checkpoint.write(b"from attempt 1")
        raise RuntimeError(f"first attempt of x={x} fails on purpose")
    return _report()


@task
def element(x: int) -> ContextReport:
    return _report()


@task(retries=1)
def plants_a_link(secret: str) -> str:
    """Hostile: its first attempt makes its checkpoint a link to a file only the agent may read
    (reaching into the staged checkpoint directory); the second reports what it was given."""
    ctx = current_context()
    if ctx.attempt_number == 1:
        kept = ctx.checkpoint._root  # noqa: SLF001 - what a hostile task would do
        (kept / "checkpoint.bin").symlink_to(secret)
        raise RuntimeError("planted a link as the checkpoint")
    given = ctx.checkpoint.read()
    return "none" if given is None else given.decode(errors="replace")


@workflow
def hostile_checkpoint(secret: str) -> str:
    return plants_a_link(secret=secret)


@workflow
def context_flow(x: int, xs: list[int]) -> Reports:
    return Reports(retried=fails_once(x=x), elements=map_task(element)(x=xs))
