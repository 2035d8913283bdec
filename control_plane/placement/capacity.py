"""What a cluster has free for placement: its agent's last report, less what was handed to it
since.

An agent heartbeats its capacity (allocatable and in use: CPU, memory, GPUs per type; see
`agent.proto` `Capacity`). Between two heartbeats the control plane assigns and leases more
work there, which the report cannot show yet; counting it here is what keeps a burst of
placements from overcommitting a cluster.

A figure an agent does not report (0, the protobuf default) is not a limit, and a cluster whose
agent reported nothing at all has unknown capacity: placement knows nothing to refuse it by.
GPUs count as soon as anything was reported: an agent that reports CPU but no GPUs (the
local-process agent) has none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from fleetflow import ir


@dataclass(frozen=True)
class Usage:
    """What one active attempt holds on its cluster."""

    cpu: float = 0.0
    memory_bytes: int = 0
    gpu: int = 0
    # The GPU type placement chose for it (None: no GPUs, or not known).
    gpu_type: str | None = None

    @classmethod
    def of(cls, resources: ir.Resources, gpu_type: str | None) -> Usage:
        return cls(
            cpu=resources.cpu,
            memory_bytes=resources.memory_bytes,
            gpu=resources.gpu,
            gpu_type=gpu_type if resources.gpu > 0 else None,
        )


# CPU is a float of cores, added and taken away attempt by attempt: 2 - 19 × 0.1 leaves
# 0.0999…, which must still hold a task of 0.1 CPU (a cluster of 2 CPUs runs 20 of them, not
# 19). Kubernetes counts millicores; a margin far below one absorbs the rounding.
CPU_EPSILON = 1e-9


def cpu_fits(requested: float, free: float | None) -> bool:
    """Whether `requested` CPU fits in `free` (None: not reported, so nothing limits it)."""
    return free is None or requested <= free + CPU_EPSILON


@dataclass(frozen=True)
class FreeCapacity:
    """Free capacity of one cluster now; `None` where the agent did not report the figure."""

    cpu: float | None = None
    memory_bytes: int | None = None
    # Free GPUs by type, for every type the cluster has; None when nothing was reported.
    gpus: Mapping[str, int] | None = field(default=None)

    @property
    def unknown(self) -> bool:
        """Nothing was reported: no figure limits placement."""
        return self.cpu is None and self.memory_bytes is None and self.gpus is None

    def minus(self, usage: Usage) -> FreeCapacity:
        """What is left after placing `usage` here (never below zero)."""
        gpus = self.gpus
        used = usage.gpu_type
        if gpus is not None and usage.gpu and used is not None and used in gpus:
            gpus = {**gpus, used: max(gpus[used] - usage.gpu, 0)}
        memory = self.memory_bytes
        return replace(
            self,
            cpu=None if self.cpu is None else max(self.cpu - usage.cpu, 0.0),
            memory_bytes=None if memory is None else max(memory - usage.memory_bytes, 0),
            gpus=gpus,
        )

    def plus(self, usage: Usage, ceiling: FreeCapacity) -> FreeCapacity:
        """What is free once an attempt holding `usage` here is gone (never above `ceiling`,
        the cluster with nothing in use)."""

        def up(value: float | None, amount: float, top: float | None) -> float | None:
            if value is None:
                return None
            return min(value + amount, top) if top is not None else value + amount

        gpus = self.gpus
        used = usage.gpu_type
        if gpus is not None and usage.gpu and used is not None and used in gpus:
            top = (ceiling.gpus or {}).get(used)
            gpus = {**gpus, used: int(up(gpus[used], usage.gpu, top) or 0)}
        memory = up(self.memory_bytes, usage.memory_bytes, ceiling.memory_bytes)
        return replace(
            self,
            cpu=up(self.cpu, usage.cpu, ceiling.cpu),
            memory_bytes=None if memory is None else int(memory),
            gpus=gpus,
        )


def _number(reported: Mapping[str, Any], key: str) -> float:
    value = reported.get(key) or 0
    return float(value) if isinstance(value, int | float) else 0.0


def free_capacity(
    reported: Mapping[str, Any],
    unreflected: Iterable[Usage] = (),
    freed: Iterable[Usage] = (),
) -> FreeCapacity:
    """Free capacity from an agent's last report (`Cluster.capacity`), less `unreflected`: the
    attempts assigned or leased there that the report does not include yet, plus `freed`: the
    attempts the report counts as in use that have finished since (so the next task starts
    without waiting for the next heartbeat)."""
    if reported.get("draining"):  # its agent is shutting down: nothing more goes there
        return FreeCapacity(cpu=0.0, memory_bytes=0, gpus={})
    cpu_allocatable = _number(reported, "cpu_allocatable")
    memory_allocatable = _number(reported, "memory_bytes_allocatable")
    gpus: dict[str, int] = {}
    for entry in reported.get("gpus") or ():
        gpu_type = str(entry.get("gpu_type") or "")
        allocatable = int(entry.get("allocatable") or 0)
        if gpu_type and allocatable > 0:
            unused = allocatable - int(entry.get("in_use") or 0)
            gpus[gpu_type] = gpus.get(gpu_type, 0) + max(unused, 0)
    if cpu_allocatable <= 0 and memory_allocatable <= 0 and not gpus:
        return FreeCapacity()
    free = FreeCapacity(
        cpu=max(cpu_allocatable - _number(reported, "cpu_in_use"), 0.0)
        if cpu_allocatable > 0
        else None,
        memory_bytes=max(int(memory_allocatable - _number(reported, "memory_bytes_in_use")), 0)
        if memory_allocatable > 0
        else None,
        gpus=gpus,
    )
    freed = list(freed)
    if freed:
        idle = {
            **reported,
            "cpu_in_use": 0,
            "memory_bytes_in_use": 0,
            "gpus": [{**g, "in_use": 0} for g in reported.get("gpus") or ()],
        }
        ceiling = free_capacity(idle)
        for usage in freed:
            free = free.plus(usage, ceiling)
    for usage in unreflected:
        free = free.minus(usage)
    return free
