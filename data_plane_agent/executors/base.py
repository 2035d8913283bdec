"""The contract between the agent loop and the executors (local process, Kubernetes pod)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from data_plane_agent.attempts import AttemptEvent, TaskAssignment

MAX_LOG_BYTES = 1 << 20
"""The most of an attempt's output kept for `fleetflow executions logs`: its end."""


def runtime_command(
    python: str, assignment: TaskAssignment, *, result_file: str, workdir: str
) -> list[str]:
    """The command that runs one attempt, wherever it runs: `python -m fleetflow.runtime`."""
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


class Executor(Protocol):
    """Runs attempts and tells the agent, through `next_event`, how each one goes.

    For every launched attempt an executor emits exactly one terminal event (SUCCEEDED, FAILED
    or CANCELLED), usually after a RUNNING event. None of its coroutines may block the event
    loop.
    """

    name: str
    """The executor kind the agent registers with, e.g. "local-process"."""

    async def launch(self, assignment: TaskAssignment) -> None:
        """Start the attempt. Failures to start are reported as a FAILED event, not raised."""
        ...

    async def next_event(self) -> AttemptEvent:
        """Wait for the next state change of any attempt."""
        ...

    async def kill(self, attempt_id: str, reason: str) -> None:
        """Stop a running attempt; it then ends CANCELLED with `reason`. Unknown ids are ignored."""
        ...

    def running(self) -> list[str]:
        """Ids of the attempts launched and not yet ended."""
        ...

    async def read_log(self, attempt_id: str) -> str | None:
        """The attempt's output so far, at most its last `MAX_LOG_BYTES`; None when there is
        none to read (unknown attempt, or the cluster serves no log). Never raises."""
        ...

    async def shutdown(self, reason: str) -> None:
        """Kill every running attempt (each ends CANCELLED with `reason`)."""
        ...


@runtime_checkable
class ClusterExecutor(Protocol):
    """What an executor running attempts on a cluster (Kubernetes) adds to `Executor`.

    The agent uses these when its executor has them; the local-process executor has none, and
    the agent then reports the machine's CPU and memory as before.
    """

    attempts_survive_agent: bool
    """Attempts keep running when the agent stops (the next agent adopts them)."""

    async def start(self) -> list[TaskAssignment]:
        """Begin observing the cluster; returns the attempts adopted from a previous agent."""
        ...

    def capacity(self) -> Capacity | None:
        """The cluster's capacity and what its attempts use now (None: not known yet)."""
        ...

    def pending_reasons(self) -> dict[str, str]:
        """Attempt id -> why it has not started yet (e.g. no node has the GPUs free)."""
        ...
