"""Resuming training from a checkpoint: `current_context()` tells a task which attempt it is,
and `checkpoint` keeps bytes for the next attempt of the same node (or map element).

The first attempt of `train` stops half-way, as a preempted node would; its retry resumes from
the epoch it had saved instead of starting over. Locally and remotely alike:

    fleetflow run examples/checkpointing.py resumable_training --epochs 6
    fleetflow run --remote examples/checkpointing.py resumable_training --epochs 6
"""

from __future__ import annotations

import json

from fleetflow import current_context, map_task, task, workflow


class Preempted(RuntimeError):
    """Stands in for a node taken away in the middle of training."""


@task(retries=1)
def train(epochs: int, learning_rate: float) -> str:
    ctx = current_context()
    saved = ctx.checkpoint.read()
    state = json.loads(saved) if saved else {"epoch": 0, "weight": 0.0}
    resumed_at = state["epoch"]
    for epoch in range(state["epoch"], epochs):
        state = {"epoch": epoch + 1, "weight": round(state["weight"] + learning_rate, 6)}
        ctx.checkpoint.write(json.dumps(state).encode())
        ctx.logger.info("epoch %d done, weight %s", epoch + 1, state["weight"])
        if ctx.attempt_number == 1 and epoch + 1 == epochs // 2:
            raise Preempted(f"stopped after epoch {epoch + 1}")
    return (
        f"lr={learning_rate} weight={state['weight']} attempt={ctx.attempt_number} "
        f"resumed_at={resumed_at}"
    )


@task
def pick(runs: list[str]) -> str:
    return " | ".join(runs)


@workflow
def resumable_training(epochs: int = 6) -> str:
    runs = map_task(train)(epochs=epochs, learning_rate=[0.1, 0.25])
    return pick(runs=runs)
