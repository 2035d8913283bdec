"""The contract between the agent loop and the executors (local process, Kubernetes pod)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from data_plane_agent.attempts import AttemptEvent, TaskAssignment

MAX_LOG_BYTES = 1 << 20
"""The most of an attempt's output kept for `fleetflow executions logs`: its end."""


def runtime_command(
    python: str, assignment: TaskAssignment, *, result_file: str, workdir: str
) -> list[str]:
    """The command that runs one attempt, wherever it runs: `python -m fleetflow.runtime`,
    told the attempt's identity (for the task's `fleetflow.current_context()`)."""
    identity = [
        "--execution-id",
        assignment.execution_id,
        "--node-id",
        assignment.node_id,
        "--attempt-id",
        assignment.attempt_id,
        "--attempt-number",
        str(assignment.attempt_number),
    ]
    if assignment.map_index is not None:
        identity += ["--map-index", str(assignment.map_index)]
    return [
        python,
        "-m",
        "fleetflow.runtime",
        "--bundle-uri",
        assignment.bundle_uri,
        "--inputs-uri",
        assignment.inputs_uri,
        "--outputs-uri",
        assignment.outputs_uri,
        "--module",
        assignment.task_module,
        "--function",
        assignment.task_function,
        "--result-file",
        result_file,
        "--workdir",
        workdir,
        *identity,
    ]


class ExecutorStartError(RuntimeError):
    """The executor cannot reach what it runs attempts on (e.g. the Kubernetes API)."""


@dataclass(frozen=True)
class GpuCapacity:
    gpu_type: str
    allocatable: int
    in_use: int


@dataclass(frozen=True)
class Capacity:
    """What an executor's cluster offers and what its attempts hold, for heartbeats."""

    cpu_allocatable: float = 0.0
    cpu_in_use: float = 0.0
    memory_bytes_allocatable: int = 0
    memory_bytes_in_use: int = 0
    gpus: list[GpuCapacity] = field(default_factory=list)
    counted_attempt_ids: frozenset[str] | None = None
    """The attempts whose resources the in-use figures count; None: not said (placement then
    guesses from the times of leases and heartbeats, which a lease answered while the
    heartbeat was on its way defeats)."""


def machine_capacity(
    held: Sequence[TaskAssignment], simulated_gpus: Mapping[str, int] | None = None
) -> Capacity:
    """This machine's CPUs and memory, less what `held` attempts asked for; GPUs only as
    `simulated_gpus` claims them (type -> count)."""
    gpus_in_use: dict[str, int] = {}
    for a in held:
        if a.resources.gpu and a.resources.gpu_type:
            gpus_in_use[a.resources.gpu_type] = (
                gpus_in_use.get(a.resources.gpu_type, 0) + a.resources.gpu * a.replicas
            )
    return Capacity(
        cpu_allocatable=float(os.cpu_count() or 1),
        cpu_in_use=sum(a.resources.cpu * a.replicas for a in held),
        memory_bytes_allocatable=machine_memory_bytes(),
        memory_bytes_in_use=sum(a.resources.memory_bytes * a.replicas for a in held),
        gpus=[
            GpuCapacity(gpu_type=gpu_type, allocatable=count, in_use=gpus_in_use.get(gpu_type, 0))
            for gpu_type, count in sorted((simulated_gpus or {}).items())
        ],
        counted_attempt_ids=frozenset(a.attempt_id for a in held),
    )


def machine_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


class Executor(Protocol):
    """Runs attempts and tells the agent, through `next_event`, how each one goes.

    For every launched attempt an executor emits exactly one terminal event (SUCCEEDED, FAILED
    or CANCELLED; LOST when the executor's own machinery, not the task, ended it, so that it
    runs again without using a retry), usually after a RUNNING event. None of its coroutines
    may block the event loop.
    """

    name: str
    """The executor kind the agent registers with, e.g. "local-process"."""

    attempts_survive_agent: bool
    """Attempts keep running when the agent stops (the next agent adopts them)."""

    async def start(self) -> list[TaskAssignment]:
        """Begin observing what attempts run on; returns the attempts adopted from a previous
        agent (none where attempts die with their agent)."""
        ...

    async def launch(self, assignment: TaskAssignment) -> None:
        """Start the attempt. Failures to start are reported as a FAILED event, not raised."""
        ...

    async def next_event(self) -> AttemptEvent:
        """Wait for the next state change of any attempt."""
        ...

    async def kill(
        self, attempt_id: str, reason: str, *, grace_seconds: float | None = None
    ) -> None:
        """Stop a running attempt: SIGTERM (a pod's deletion), then the kill after
        `grace_seconds` (None: the executor's own kill grace); it then ends CANCELLED with
        `reason`. Unknown ids are ignored."""
        ...

    def running(self) -> list[str]:
        """Ids of the attempts launched and not yet ended."""
        ...

    def capacity(self, held: Sequence[TaskAssignment]) -> Capacity:
        """What the executor's machine or cluster offers and what its attempts use now, for
        heartbeats. `held`: the attempts the agent holds (leased, not yet ended, launched or
        still launching), for an executor that counts their requests rather than observing."""
        ...

    def pending_reasons(self) -> dict[str, str]:
        """Attempt id -> why it has not started yet (e.g. no node has the GPUs free)."""
        ...

    async def read_log(self, attempt_id: str) -> str | None:
        """The attempt's output so far, at most its last `MAX_LOG_BYTES`; None when there is
        none to read (unknown attempt, or the cluster serves no log). Never raises."""
        ...

    async def shutdown(self, reason: str) -> None:
        """Stop observing; kill every running attempt (each ends CANCELLED with `reason`)
        unless `attempts_survive_agent`."""
        ...
