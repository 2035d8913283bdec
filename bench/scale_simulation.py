"""Scale on paper: a `map_task` of 100,000 elements on 50 clusters, simulated through Fleetflow's
design.

Issue 15 asks how Fleetflow would behave at a scale no test machine here can run: 100,000 map
elements dispatched to 50 remote clusters. Two questions decide it. Does each execution's
Temporal history stay under the server's hard limit of 51,200 events (a workflow that crosses
it is terminated)? And where is the bottleneck: the clusters' task slots, or the control
plane's CPU per attempt? This script answers both with a deterministic discrete-event model
(seeded, standard library only, a few seconds for 100,000 elements) of the design:

- a map node of more than `--chunk` (1,000) elements runs as child workflows of at most that
  many units each (`<execution>/<node>/chunk-<k>`); the parent holds only per-chunk state and
  runs at most ceil(concurrency / chunk) chunks at once when the node has a `--concurrency`;
- a chunk workflow starts its units with `start_attempts` local activities of at most 100 units
  (a marker event each, inside a workflow task of 3 events); every finished or LOST attempt
  comes back as one signal (1 event); signals that arrive while a workflow task runs
  (`--wft-ms`) are handled together by the next one;
- attempts are PENDING until a placement pass (at most `--placement-batch` of them, one pass at
  a time per control-plane replica) assigns them to a cluster with a free slot; the agent
  leases them by long poll (`--lease-ms`), runs each for about `--task-ms`, and reports; a
  long poll held by another replica than the pass's sees the attempts only at its next
  database recheck (`--recheck-ms`, 1 s);
- the control plane is a queueing server of `--replicas` × `--cores` cores, FIFO, that spends
  `--cp-ms-per-attempt` of CPU per attempt (split between the placement pass, the lease RPC,
  and the report with its outbox signal and share of workflow tasks);
- `--kill-cluster-at` kills one cluster: what it held is LOST once the cluster-health loop
  notices (3 missed heartbeats) and runs again elsewhere as a system retry;
- `--no-chunking` runs the node as one flat workflow, to show why that cannot fit.

Every figure it prints is the output of this model under its inputs, not a measurement: the
defaults (15 ms of control-plane CPU per attempt, 1 s tasks) are assumptions to vary. The
model leaves out the database, the network beyond fixed latencies, Temporal's own server and
the agents' CPU. Results go to `bench/results/scale-<time>.json` (git-ignored).

    python bench/scale_simulation.py                         # make bench-scale
    python bench/scale_simulation.py --replicas 4 --kill-cluster-at 60
    python bench/scale_simulation.py --variations            # the table of bench/README.md
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import platform
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# Temporal's per-execution limits, defaults of its server (common/dynamicconfig/constants.go):
HISTORY_LIMIT = 51_200  # limit.historyCount.error: the workflow is terminated at this many events
HISTORY_WARNING = 10_240  # limit.historyCount.warn
SIGNAL_LIMIT = 10_000  # history.maximumSignalsPerExecution: later signals are refused
PENDING_CHILD_LIMIT = 2_000  # limit.numPendingChildExecutions.error: more children fail to start
START_BATCH = 100  # units per `start_attempts` (control_plane/orchestration/workflows.py)
MAX_SYSTEM_RETRIES = 5  # re-dispatches of a unit lost with its cluster (same module)
WORKFLOW_TASK_EVENTS = 3  # WorkflowTaskScheduled, WorkflowTaskStarted, WorkflowTaskCompleted
HEARTBEAT_GRACE_BEATS = 3  # control_plane/settings.py: heartbeat_grace = 3 x the interval

# What a workflow's inbox receives.
UNIT_DONE, UNIT_LOST, CHILD_STARTED, CHILD_DONE = range(4)
# An attempt's state, as the model needs it.
PENDING, ASSIGNED, RUNNING, REPORTING, DOOMED, FINISHED = range(6)


@dataclass(frozen=True)
class Model:
    """The inputs of one simulated run (the command line's options)."""

    elements: int = 100_000
    clusters: int = 50
    slots: int = 32
    chunk: int = 1000
    chunking: bool = True
    concurrency: int | None = None
    wft_ms: float = 5.0
    lease_ms: float = 20.0
    task_ms: float = 1000.0
    task_jitter: float = 0.5
    cp_ms_per_attempt: float = 15.0
    cp_split: tuple[float, float, float] = (0.2, 0.2, 0.6)
    placement_batch: int = 500
    pass_ms: float = 0.0
    recheck_ms: float = 1000.0
    replicas: int = 1
    cores: int = 2
    kill_cluster_at: float | None = None
    heartbeat_s: float = 5.0
    seed: int = 15

    @property
    def chunked(self) -> bool:
        return self.chunking and self.elements > self.chunk

    @property
    def chunk_count(self) -> int:
        return math.ceil(self.elements / self.chunk) if self.chunked else 1

    @property
    def chunks_at_once(self) -> int:
        if self.concurrency is None:
            return self.chunk_count
        return min(self.chunk_count, math.ceil(self.concurrency / self.chunk))

    @property
    def per_chunk_concurrency(self) -> int:
        if self.concurrency is None:
            return self.chunk if self.chunked else self.elements
        return max(1, self.concurrency // self.chunks_at_once)

    def cp_seconds(self, part: int) -> float:
        """CPU seconds per attempt of one part: 0 placement, 1 lease, 2 report."""
        return self.cp_ms_per_attempt * self.cp_split[part] / sum(self.cp_split) / 1000

    def replicas_to_keep_up(self) -> int:
        """The fewest replicas whose CPU and placement passes keep up with the clusters (the
        clusters' capacity falls as replicas are added, with the cross-replica recheck)."""
        for replicas in range(1, 100_000):
            capacities = replace(self, replicas=replicas).capacities()
            if min(capacities["control_plane"], capacities["placement"]) >= capacities["clusters"]:
                return replicas
        raise ValueError("no number of replicas keeps up")

    def capacities(self) -> dict[str, float]:
        """Attempts per second each resource could sustain on its own. A slot is held for the
        task, the lease, and on average half a recheck when another replica placed it."""
        cross_replica = (self.replicas - 1) / self.replicas
        slot_seconds = (self.task_ms + self.lease_ms + cross_replica * self.recheck_ms / 2) / 1000
        return {
            "clusters": self.clusters * self.slots / slot_seconds,
            "control_plane": self.replicas * self.cores / (self.cp_ms_per_attempt / 1000),
            "placement": self.replicas / self.cp_seconds(0),
        }


class History:
    """A workflow's event count, by kind, and when it crossed Temporal's thresholds."""

    __slots__ = ("name", "counts", "events", "warning_at", "limit_at", "refused_at", "state_units")

    def __init__(self, name: str, state_units: int) -> None:
        self.name = name
        self.counts = {"workflow_tasks": 0, "markers": 0, "signals": 0, "child_events": 0}
        self.events = 0
        self.warning_at: float | None = None
        self.limit_at: float | None = None
        self.refused_at: float | None = None  # when the first signal over SIGNAL_LIMIT came
        self.state_units = state_units  # the memory proxy: units of state the workflow holds

    def add(self, count: int, kind: str | None, now: float) -> None:
        self.events += count
        if kind is not None:
            self.counts[kind] += count
        if self.warning_at is None and self.events >= HISTORY_WARNING:
            self.warning_at = now
        if self.limit_at is None and self.events >= HISTORY_LIMIT:
            self.limit_at = now
        if self.refused_at is None and self.counts["signals"] > SIGNAL_LIMIT:
            self.refused_at = now

    def report(self) -> dict[str, Any]:
        return {
            "events": self.events,
            **self.counts,
            "other": self.events - sum(self.counts.values()),
            "state_units": self.state_units,
            "fraction_of_limit": round(self.events / HISTORY_LIMIT, 4),
            "over_warning": self.events >= HISTORY_WARNING,
            "over_limit": self.events >= HISTORY_LIMIT,
            "over_signal_limit": self.counts["signals"] > SIGNAL_LIMIT,
            "warning_crossed_at_s": self.warning_at,
            "limit_crossed_at_s": self.limit_at,
            "first_signal_refused_at_s": self.refused_at,
        }


class Workflow:
    """One Temporal workflow: an inbox of events, handled one workflow task at a time."""

    def __init__(self, sim: Simulation, name: str, state_units: int) -> None:
        self.sim = sim
        self.history = History(name, state_units)
        self.inbox: list[tuple[int, int]] = []
        self.busy = False
        self.started = False
        self.closed = False

    def handle(self, batch: list[tuple[int, int]]) -> None:
        raise NotImplementedError


class UnitWorkflow(Workflow):
    """A workflow that starts attempts for units and collects their signals: a chunk child, or
    with `--no-chunking` the execution itself (then it also begins and finishes it)."""

    def __init__(
        self,
        sim: Simulation,
        name: str,
        units: range,
        limit: int,
        parent: ParentWorkflow | None,
        key: int,
    ) -> None:
        super().__init__(sim, name, len(units))
        self.units = units
        self.limit = limit
        self.parent = parent
        self.key = key
        self.next_unit = 0
        self.in_flight = 0
        self.settled = 0
        self.losses: dict[int, int] = {}

    def handle(self, batch: list[tuple[int, int]]) -> None:
        history, now = self.history, self.sim.now
        if not self.started:
            self.started = True
            if self.parent is None:
                history.add(2, "markers", now)  # begin_execution, expand_map
        starts: list[int] = []
        for kind, unit in batch:
            if kind == UNIT_DONE:
                self.in_flight -= 1
                self.settled += 1
            else:  # UNIT_LOST: a system retry, unless the unit ran out of them
                self.losses[unit] = self.losses.get(unit, 0) + 1
                if self.losses[unit] <= MAX_SYSTEM_RETRIES:
                    starts.append(unit)
                else:
                    self.in_flight -= 1
                    self.settled += 1
                    self.sim.failed_units += 1
        fresh = min(self.limit - self.in_flight, len(self.units) - self.next_unit)
        if fresh > 0:
            first = self.units.start + self.next_unit
            starts.extend(range(first, first + fresh))
            self.next_unit += fresh
            self.in_flight += fresh
        if starts:
            history.add(math.ceil(len(starts) / START_BATCH), "markers", now)  # start_attempts
            self.sim.create_attempts(self, starts)
        if self.settled == len(self.units):
            # complete_chunk; or complete_node and finish for the execution itself
            history.add(1 if self.parent else 2, "markers", now)
            history.add(1, None, now)  # WorkflowExecutionCompleted
            self.closed = True
            if self.parent is not None:
                self.sim.deliver(self.parent, (CHILD_DONE, self.key), "child_events")
            else:
                self.sim.finish()


class ParentWorkflow(Workflow):
    """The execution's workflow with a chunked map node: per-chunk state only."""

    def __init__(self, sim: Simulation, model: Model) -> None:
        super().__init__(sim, "parent", model.chunk_count)
        self.model = model
        self.next_chunk = 0
        self.running = 0
        self.done = 0

    def handle(self, batch: list[tuple[int, int]]) -> None:
        history, now = self.history, self.sim.now
        if not self.started:
            self.started = True
            history.add(2, "markers", now)  # begin_execution, expand_map
        for kind, _ in batch:
            if kind == CHILD_DONE:
                self.running -= 1
                self.done += 1
        while self.running < self.model.chunks_at_once and self.next_chunk < self.model.chunk_count:
            history.add(1, "child_events", now)  # StartChildWorkflowExecutionInitiated
            self.sim.start_chunk(self, self.next_chunk)
            self.next_chunk += 1
            self.running += 1
        if self.done == self.model.chunk_count:
            history.add(2, "markers", now)  # complete_node, finish
            history.add(1, None, now)  # WorkflowExecutionCompleted
            self.closed = True
            self.sim.finish()


class Attempt:
    __slots__ = ("workflow", "unit", "cluster", "state")

    def __init__(self, workflow: UnitWorkflow, unit: int) -> None:
        self.workflow = workflow
        self.unit = unit
        self.cluster: Cluster | None = None
        self.state = PENDING


class Cluster:
    __slots__ = ("index", "free", "alive", "online", "held")

    def __init__(self, index: int, slots: int) -> None:
        self.index = index
        self.free = slots  # slots free as the control plane sees them (placement's view)
        self.alive = True  # its agent runs
        self.online = True  # the control plane still places on it
        # Attempts assigned to it and not yet settled, in assignment order (a dict: ordered).
        self.held: dict[Attempt, None] = {}


# Control-plane jobs.
PASS, LEASE, REPORT, LOSE = range(4)


class Simulation:
    """The event loop and the shared state: attempts, clusters, the control plane's cores."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.rng = random.Random(model.seed)
        self.now = 0.0
        self._events: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._order = itertools.count()
        self.ended_at: float | None = None
        self.workflows: list[Workflow] = []
        self.clusters = [Cluster(index, model.slots) for index in range(model.clusters)]
        self.free_total = model.clusters * model.slots
        self.pending: deque[Attempt] = deque()
        # Control plane: a FIFO queue of jobs served by replicas x cores cores.
        self.cores = model.replicas * model.cores
        self.cores_busy = 0
        self.jobs: deque[tuple[int, Any]] = deque()
        self.passes_in_flight = 0  # at most one placement pass per replica
        self.passes_queued = 0
        self.passing = [False] * model.replicas  # which replicas have a pass in flight
        self.cross_replica_leases = 0
        self.cpu_busy_s = 0.0
        self.task_fixed_s = model.task_ms * (1 - model.task_jitter) / 1000
        self.task_jitter_rate = (
            1000 / (model.task_ms * model.task_jitter) if model.task_jitter > 0 else 0.0
        )
        # Counters and peaks.
        self.attempts = 0
        self.lost = 0
        self.failed_units = 0
        self.running = 0
        self.peak_pending = 0
        self.peak_running = 0
        self.peak_held = 0
        self.peak_backlog = 0
        self.placement_passes = 0

    # ------------------------------------------------------------------------ event loop

    def at(self, when: float, action: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._events, (when, next(self._order), action, args))

    def run(self) -> None:
        model = self.model
        if model.kill_cluster_at is not None:
            self.at(model.kill_cluster_at, self._kill_cluster, self.clusters[0])
        if model.chunked:
            root: Workflow = ParentWorkflow(self, model)
        else:
            units = range(model.elements)
            root = UnitWorkflow(self, "flat", units, model.per_chunk_concurrency, None, 0)
        self._start_workflow(root)
        events = self._events
        while events and self.ended_at is None:
            self.now, _, action, args = heapq.heappop(events)
            action(*args)

    def finish(self) -> None:
        self.ended_at = self.now

    # ------------------------------------------------------------------------ workflows

    def _start_workflow(self, workflow: Workflow) -> None:
        self.workflows.append(workflow)
        workflow.history.add(1, None, self.now)  # WorkflowExecutionStarted
        self._begin_workflow_task(workflow)

    def start_chunk(self, parent: ParentWorkflow, key: int) -> None:
        model = self.model
        units = range(key * model.chunk, min(model.elements, (key + 1) * model.chunk))
        chunk = UnitWorkflow(self, f"chunk-{key}", units, model.per_chunk_concurrency, parent, key)
        self._start_workflow(chunk)
        self.deliver(parent, (CHILD_STARTED, key), "child_events")

    def deliver(self, workflow: Workflow, message: tuple[int, int], kind: str) -> None:
        """An event in `workflow`'s history (a signal, a child's start or end); handled by the
        running workflow task's successor, or by a new one at once."""
        if workflow.closed:
            return
        workflow.history.add(1, kind, self.now)
        workflow.inbox.append(message)
        if not workflow.busy:
            self._begin_workflow_task(workflow)

    def _begin_workflow_task(self, workflow: Workflow) -> None:
        workflow.busy = True
        batch, workflow.inbox = workflow.inbox, []
        self.at(self.now + self.model.wft_ms / 1000, self._end_workflow_task, workflow, batch)

    def _end_workflow_task(self, workflow: Workflow, batch: list[tuple[int, int]]) -> None:
        workflow.history.add(WORKFLOW_TASK_EVENTS, "workflow_tasks", self.now)
        workflow.handle(batch)
        workflow.busy = False
        if workflow.inbox and not workflow.closed:
            self._begin_workflow_task(workflow)

    # ------------------------------------------------------------------------ attempts

    def create_attempts(self, workflow: UnitWorkflow, units: list[int]) -> None:
        self.pending.extend(Attempt(workflow, unit) for unit in units)
        self.attempts += len(units)
        self.peak_pending = max(self.peak_pending, len(self.pending))
        self._maybe_place()

    def _maybe_place(self) -> None:
        batch = self.model.placement_batch
        while (
            self.passes_in_flight < self.model.replicas
            and len(self.pending) > self.passes_queued * batch
            and self.free_total > self.passes_queued * batch
        ):
            # The pass runs in the replica woken by what made it possible (a report, new
            # attempts): any replica, as the model has it, among those not already placing.
            replica = self.rng.choice([r for r, busy in enumerate(self.passing) if not busy])
            self.passing[replica] = True
            self.passes_in_flight += 1
            self.passes_queued += 1
            self._submit(PASS, replica)

    def _task_seconds(self) -> float:
        if self.task_jitter_rate == 0:
            return self.task_fixed_s
        return self.task_fixed_s + self.rng.expovariate(self.task_jitter_rate)

    # ------------------------------------------------------------------------ control plane

    def _submit(self, job: int, payload: Any) -> None:
        self.jobs.append((job, payload))
        self.peak_backlog = max(self.peak_backlog, len(self.jobs))
        self._serve()

    def _serve(self) -> None:
        while self.cores_busy < self.cores and self.jobs:
            job, payload = self.jobs.popleft()
            seconds, payload = self._begin_job(job, payload)
            self.cores_busy += 1
            self.cpu_busy_s += seconds
            self.at(self.now + seconds, self._end_job, job, payload)

    def _begin_job(self, job: int, payload: Any) -> tuple[float, Any]:
        model = self.model
        if job == PASS:
            self.passes_queued -= 1
            placed = self._place()
            return model.pass_ms / 1000 + len(placed) * model.cp_seconds(0), (payload, placed)
        if job == LEASE:
            return len(payload[1]) * model.cp_seconds(1), payload
        if job == REPORT:
            return model.cp_seconds(2), payload
        return len(payload) * model.cp_seconds(2), payload  # LOSE: the marking and its signals

    def _end_job(self, job: int, payload: Any) -> None:
        self.cores_busy -= 1
        if job == PASS:
            self._placed(*payload)
        elif job == LEASE:
            cluster, attempts = payload
            if cluster.alive:  # a dead agent answers no long poll
                self.at(self.now + self.model.lease_ms / 1000, self._leased, attempts)
        elif job == REPORT:
            self._reported(payload)
        else:
            self._lost(payload)
        self._serve()

    def _place(self) -> list[Attempt]:
        """A placement pass: the oldest PENDING attempts (at most a batch; rows another pass
        holds are skipped), each on the online cluster with the most free slots."""
        count = min(self.model.placement_batch, len(self.pending), self.free_total)
        self.placement_passes += 1
        if count <= 0:
            return []
        free = [(-c.free, c.index) for c in self.clusters if c.online and c.free > 0]
        heapq.heapify(free)
        placed = []
        for _ in range(count):
            negative_free, index = heapq.heappop(free)
            cluster = self.clusters[index]
            attempt = self.pending.popleft()
            attempt.cluster = cluster
            attempt.state = ASSIGNED if cluster.alive else DOOMED
            cluster.free -= 1
            cluster.held[attempt] = None
            if negative_free < -1:
                heapq.heappush(free, (negative_free + 1, index))
            placed.append(attempt)
        self.free_total -= count
        self.peak_held = max(
            self.peak_held, self.model.clusters * self.model.slots - self.free_total
        )
        return placed

    def _placed(self, replica: int, placed: list[Attempt]) -> None:
        """A pass committed: it wakes the long polls held in its own replica at once; one
        held by another replica finds the attempts at its next database recheck."""
        self.passes_in_flight -= 1
        self.passing[replica] = False
        by_cluster: dict[int, list[Attempt]] = {}
        for attempt in placed:
            if attempt.state == ASSIGNED:
                assert attempt.cluster is not None
                by_cluster.setdefault(attempt.cluster.index, []).append(attempt)
        recheck_s = self.model.recheck_ms / 1000
        for index, attempts in by_cluster.items():
            lease = (self.clusters[index], attempts)
            if index % self.model.replicas == replica or recheck_s == 0:
                self._submit(LEASE, lease)
            else:
                self.cross_replica_leases += 1
                self.at(self.now + self.rng.uniform(0, recheck_s), self._submit, LEASE, lease)
        self._maybe_place()

    def _leased(self, attempts: list[Attempt]) -> None:
        for attempt in attempts:
            if attempt.state == ASSIGNED:
                attempt.state = RUNNING
                self.running += 1
                self.at(self.now + self._task_seconds(), self._task_ended, attempt)
        self.peak_running = max(self.peak_running, self.running)

    def _task_ended(self, attempt: Attempt) -> None:
        if attempt.state != RUNNING:  # its cluster died under it
            return
        attempt.state = REPORTING
        self.running -= 1
        self._submit(REPORT, attempt)

    def _reported(self, attempt: Attempt) -> None:
        attempt.state = FINISHED
        cluster = attempt.cluster
        assert cluster is not None
        del cluster.held[attempt]
        if cluster.online:
            cluster.free += 1
            self.free_total += 1
        self.deliver(attempt.workflow, (UNIT_DONE, attempt.unit), "signals")
        self._maybe_place()

    # ------------------------------------------------------------------------ failure

    def _kill_cluster(self, cluster: Cluster) -> None:
        """The cluster's agent dies: what it was assigned or running never reports."""
        cluster.alive = False
        for attempt in cluster.held:
            if attempt.state == RUNNING:
                self.running -= 1
            if attempt.state in (ASSIGNED, RUNNING):
                attempt.state = DOOMED
        # The cluster-health loop runs every heartbeat interval and judges a cluster silent
        # once the grace (3 intervals) has passed since its last heartbeat: the round after.
        beat = self.model.heartbeat_s
        last_heartbeat = math.floor(self.now / beat) * beat
        noticed = last_heartbeat + (HEARTBEAT_GRACE_BEATS + 1) * beat
        self.at(noticed, self._notice_silent_cluster, cluster)

    def _notice_silent_cluster(self, cluster: Cluster) -> None:
        cluster.online = False
        self.free_total -= cluster.free
        cluster.free = 0
        doomed = [attempt for attempt in cluster.held if attempt.state == DOOMED]
        if doomed:
            self._submit(LOSE, doomed)

    def _lost(self, doomed: list[Attempt]) -> None:
        for attempt in doomed:
            assert attempt.cluster is not None
            del attempt.cluster.held[attempt]
            attempt.state = FINISHED
            self.lost += 1
            self.deliver(attempt.workflow, (UNIT_LOST, attempt.unit), "signals")

    # ------------------------------------------------------------------------ results

    def results(self) -> dict[str, Any]:
        model = self.model
        if self.ended_at is None:
            raise RuntimeError("the simulation ended before the execution finished")
        wall = self.ended_at
        histories = [w.history for w in self.workflows]
        root = histories[0]
        children = histories[1:]
        largest = max(children, key=lambda h: h.events) if children else None
        # The chunk that re-dispatched the most units lost with the killed cluster, if any.
        losing = [w for w in self.workflows[1:] if isinstance(w, UnitWorkflow) and w.losses]
        most_lost = max(losing, key=lambda w: (len(w.losses), w.history.events), default=None)
        capacities = model.capacities()
        bottleneck = min(capacities, key=lambda name: capacities[name])
        replicas_needed = model.replicas_to_keep_up()
        at_that = replace(model, replicas=replicas_needed).capacities()["clusters"]
        cores_needed = at_that * model.cp_ms_per_attempt / 1000
        return {
            "model": {**asdict(model), "cp_split": list(model.cp_split)},
            "chunks": {
                "chunked": model.chunked,
                "count": model.chunk_count if model.chunked else 0,
                "at_once": model.chunks_at_once if model.chunked else 0,
                "concurrency_per_chunk": model.per_chunk_concurrency,
                "over_pending_child_limit": model.chunked
                and model.chunks_at_once > PENDING_CHILD_LIMIT,
            },
            "wall_s": round(wall, 3),
            "throughput_tasks_per_s": round(model.elements / wall, 2),
            "attempts": self.attempts,
            "lost": self.lost,
            "system_retries": self.attempts - model.elements,
            "failed_units": self.failed_units,
            "history": {
                "limit": HISTORY_LIMIT,
                "warning": HISTORY_WARNING,
                "root": root.report(),
                "largest_child": largest.report() if largest else None,
                "largest_child_name": largest.name if largest else None,
                "child_with_most_lost": most_lost.history.report() if most_lost else None,
                "child_with_most_lost_name": most_lost.history.name if most_lost else None,
                "child_with_most_lost_units": len(most_lost.losses) if most_lost else 0,
                "children": len(children),
                "signal_limit": SIGNAL_LIMIT,
                "over_limit": any(h.events >= HISTORY_LIMIT for h in histories),
                "over_signal_limit": any(h.counts["signals"] > SIGNAL_LIMIT for h in histories),
                "over_warning": any(h.events >= HISTORY_WARNING for h in histories),
            },
            "capacity_tasks_per_s": {name: round(value, 1) for name, value in capacities.items()},
            "bottleneck": bottleneck,
            "control_plane": {
                "cores": self.cores,
                "cpu_busy_s": round(self.cpu_busy_s, 1),
                "utilisation": round(self.cpu_busy_s / (wall * self.cores), 3),
                "cores_needed_to_keep_up_with_clusters": round(cores_needed, 1),
                "replicas_needed_to_keep_up_with_clusters": replicas_needed,
                "placement_passes": self.placement_passes,
                "cross_replica_leases": self.cross_replica_leases,
                "peak_backlog_jobs": self.peak_backlog,
            },
            "peaks": {
                "pending": self.peak_pending,
                "running": self.peak_running,
                "slots_held": self.peak_held,
            },
            "largest_workflow_state_units": max(h.state_units for h in histories),
        }


def simulate(model: Model) -> dict[str, Any]:
    """Run the model to the end of the execution; its figures as a JSON-ready dict."""
    started = time.perf_counter()
    simulation = Simulation(model)
    simulation.run()
    results = simulation.results()
    results["simulated_in_s"] = round(time.perf_counter() - started, 2)
    return results


# ---------------------------------------------------------------------------------- output


def _status(history: dict[str, Any]) -> str:
    problems = []
    if history["over_signal_limit"]:
        at = history["first_signal_refused_at_s"]
        problems.append(f"signal {SIGNAL_LIMIT + 1:,} refused at {at:,.1f} s")
    if history["over_limit"]:
        at = history["limit_crossed_at_s"]
        problems.append(f"{HISTORY_LIMIT:,} events at {at:,.1f} s: terminated")
    if problems:
        return "OVER THE LIMITS (" + "; ".join(problems) + ")"
    if history["over_warning"]:
        return "over the warning, under the limits"
    return "ok"


def _rows(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"  {label:<{width}}  {value}" for label, value in rows)


def render(results: dict[str, Any]) -> str:
    """The figures of one run as a plain-text table."""
    model, chunks, history = results["model"], results["chunks"], results["history"]
    capacity, cp, peaks = (
        results["capacity_tasks_per_s"],
        results["control_plane"],
        results["peaks"],
    )
    if chunks["chunked"]:
        shape = (
            f"{chunks['count']:,} chunk workflows of <= {model['chunk']:,} units "
            f"({chunks['at_once']:,} at once)"
        )
    elif model["chunking"]:
        shape = f"one workflow (at most --chunk {model['chunk']:,} elements: no chunks)"
    else:
        shape = "one flat workflow (--no-chunking)"
    if chunks["over_pending_child_limit"]:
        shape += f" OVER the {PENDING_CHILD_LIMIT:,} pending children Temporal allows"
    if model["concurrency"] is not None:
        shape += (
            f", concurrency {model['concurrency']:,} "
            f"({chunks['concurrency_per_chunk']:,} per workflow)"
        )
    split = model["cp_split"]
    split_ms = [model["cp_ms_per_attempt"] * part / sum(split) for part in split]
    kill = model["kill_cluster_at"]
    lines = [
        f"Scale simulation (a model, not a measurement): {model['elements']:,} elements, "
        f"{model['clusters']} clusters x {model['slots']} slots, {shape}",
        f"control plane: {model['replicas']} replica(s) x {model['cores']} cores, "
        f"{model['cp_ms_per_attempt']:g} ms CPU per attempt (placement {split_ms[0]:g}, "
        f"lease {split_ms[1]:g}, report {split_ms[2]:g}); tasks {model['task_ms']:g} ms "
        f"(jitter {model['task_jitter']:g}); seed {model['seed']}"
        + (f"; cluster 0 killed at {kill:g} s" if kill is not None else ""),
        "",
    ]
    rows = [
        ("wall time (simulated)", f"{results['wall_s']:,.1f} s"),
        ("throughput", f"{results['throughput_tasks_per_s']:,.1f} tasks/s"),
        (
            "capacity: clusters / control plane / placement",
            f"{capacity['clusters']:,.0f} / {capacity['control_plane']:,.0f} / "
            f"{capacity['placement']:,.0f} tasks/s -> bottleneck: "
            + results["bottleneck"].replace("_", " "),
        ),
        (
            "control-plane CPU",
            f"{cp['cpu_busy_s']:,.0f} core-s busy, {cp['utilisation']:.0%} of {cp['cores']} cores",
        ),
        (
            "replicas needed to keep up with the clusters",
            f"{cp['replicas_needed_to_keep_up_with_clusters']} of {model['cores']} cores "
            f"({cp['cores_needed_to_keep_up_with_clusters']:,.1f} cores busy)",
        ),
        ("peak PENDING attempts", f"{peaks['pending']:,}"),
        ("peak attempts running on agents", f"{peaks['running']:,}"),
        ("peak slots held (assigned or running)", f"{peaks['slots_held']:,}"),
        ("peak control-plane backlog", f"{cp['peak_backlog_jobs']:,} jobs"),
        ("largest workflow state", f"{results['largest_workflow_state_units']:,} units"),
        (
            "attempts (LOST, system retries)",
            f"{results['attempts']:,} ({results['lost']:,}, {results['system_retries']:,})",
        ),
    ]
    lines.append(_rows(rows))
    lines += [
        "",
        f"Temporal history (warning at {HISTORY_WARNING:,} events, hard limit {HISTORY_LIMIT:,}; "
        f"at most {SIGNAL_LIMIT:,} signals):",
    ]
    table = [("workflow", "events", "of limit", "wf tasks", "markers", "signals", "child ev")]
    root_name = "parent" if chunks["chunked"] else "execution" if model["chunking"] else "flat"
    named = [(root_name, history["root"])]
    if history["largest_child"]:
        named.append((f"largest chunk ({history['largest_child_name']})", history["largest_child"]))
    if history["child_with_most_lost"]:
        named.append(
            (
                f"{history['child_with_most_lost_name']}: {history['child_with_most_lost_units']}"
                " unit(s) LOST",
                history["child_with_most_lost"],
            )
        )
    for name, h in named:
        table.append(
            (
                name,
                f"{h['events']:,}",
                f"{h['fraction_of_limit']:.1%}",
                f"{h['workflow_tasks']:,}",
                f"{h['markers']:,}",
                f"{h['signals']:,}",
                f"{h['child_events']:,}",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for number, row in enumerate(table):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        status = "" if number == 0 else "  " + _status(named[number - 1][1])
        lines.append("  " + "  ".join(cells) + status)
    return "\n".join(lines)


VARIATIONS: list[tuple[str, dict[str, Any]]] = [
    ("default", {}),
    ("--replicas 4", {"replicas": 4}),
    ("--replicas 9", {"replicas": 9}),
    ("--replicas 12", {"replicas": 12}),
    ("--replicas 12 --recheck-ms 0", {"replicas": 12, "recheck_ms": 0.0}),
    ("--concurrency 5000", {"concurrency": 5000}),
    ("--kill-cluster-at 60", {"kill_cluster_at": 60.0}),
    ("--replicas 9 --kill-cluster-at 30", {"replicas": 9, "kill_cluster_at": 30.0}),
    ("--no-chunking", {"chunking": False}),
]


def render_variations(runs: list[tuple[str, dict[str, Any]]]) -> str:
    """One line per variation, as a Markdown table (bench/README.md shows it)."""
    head = (
        "| variation | wall | tasks/s | bottleneck | parent events | largest child events "
        "| peak PENDING | peak running | LOST | control-plane cores (busy) |"
    )
    lines = [head, "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for label, r in runs:
        root, child = r["history"]["root"], r["history"]["largest_child"]
        root_text = f"{root['events']:,}" + (
            " **over the limits**" if root["over_limit"] or root["over_signal_limit"] else ""
        )
        child_text = f"{child['events']:,}" if child else "—"
        lines.append(
            f"| {label} | {r['wall_s']:,.0f} s | {r['throughput_tasks_per_s']:,.0f} "
            f"| {r['bottleneck'].replace('_', ' ')} | {root_text} | {child_text} "
            f"| {r['peaks']['pending']:,} | {r['peaks']['running']:,} | {r['lost']:,} "
            f"| {r['control_plane']['cores']} ({r['control_plane']['utilisation']:.0%}) |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- CLI


def _split(text: str) -> tuple[float, float, float]:
    """`--cp-split`: three weights, placement,lease,report (their sum need not be 1)."""
    try:
        placement, lease, report = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("three weights: placement,lease,report") from None
    if min(placement, lease, report) <= 0:
        raise argparse.ArgumentTypeError("each weight is positive")
    return placement, lease, report


def model_from(args: argparse.Namespace) -> Model:
    return Model(
        elements=args.elements,
        clusters=args.clusters,
        slots=args.slots,
        chunk=args.chunk,
        chunking=not args.no_chunking,
        concurrency=args.concurrency,
        wft_ms=args.wft_ms,
        lease_ms=args.lease_ms,
        task_ms=args.task_ms,
        task_jitter=args.task_jitter,
        cp_ms_per_attempt=args.cp_ms_per_attempt,
        cp_split=args.cp_split,
        placement_batch=args.placement_batch,
        pass_ms=args.pass_ms,
        recheck_ms=args.recheck_ms,
        replicas=args.replicas,
        cores=args.cores,
        kill_cluster_at=args.kill_cluster_at,
        heartbeat_s=args.heartbeat_s,
        seed=args.seed,
    )


def parser() -> argparse.ArgumentParser:
    d = Model()
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--elements", type=int, default=d.elements, help="map elements (units)")
    p.add_argument("--clusters", type=int, default=d.clusters, help="clusters, one agent each")
    p.add_argument("--slots", type=int, default=d.slots, help="task slots per cluster")
    p.add_argument("--chunk", type=int, default=d.chunk, help="units per chunk workflow")
    p.add_argument(
        "--no-chunking", action="store_true", help="run the map node as one flat workflow"
    )
    p.add_argument(
        "--concurrency", type=int, default=None, help="the node's concurrency (None: unlimited)"
    )
    p.add_argument("--wft-ms", type=float, default=d.wft_ms, help="one workflow task's duration")
    p.add_argument("--lease-ms", type=float, default=d.lease_ms, help="lease long-poll latency")
    p.add_argument("--task-ms", type=float, default=d.task_ms, help="mean task duration")
    p.add_argument(
        "--task-jitter",
        type=float,
        default=d.task_jitter,
        help="share of --task-ms that is exponential (mean stays --task-ms; 0: fixed)",
    )
    p.add_argument(
        "--cp-ms-per-attempt",
        type=float,
        default=d.cp_ms_per_attempt,
        help="control-plane CPU per attempt (placement, lease RPC, report, signal, wf tasks)",
    )
    p.add_argument(
        "--cp-split",
        type=_split,
        default=d.cp_split,
        help="weights of that CPU: placement,lease,report",
    )
    p.add_argument(
        "--placement-batch", type=int, default=d.placement_batch, help="attempts per pass"
    )
    p.add_argument(
        "--pass-ms",
        type=float,
        default=d.pass_ms,
        help="fixed control-plane CPU per placement pass, on top of the per-attempt share",
    )
    p.add_argument(
        "--recheck-ms",
        type=float,
        default=d.recheck_ms,
        help="how often a long poll rechecks the database for attempts another replica placed "
        "(control_plane/agent_api/service.py: _RECHECK_SECONDS; 0: cross-replica wake-ups)",
    )
    p.add_argument("--replicas", type=int, default=d.replicas, help="control-plane replicas")
    p.add_argument("--cores", type=int, default=d.cores, help="cores per replica")
    p.add_argument(
        "--kill-cluster-at", type=float, default=None, help="kill cluster 0 at this second"
    )
    p.add_argument(
        "--heartbeat-s", type=float, default=d.heartbeat_s, help="agent heartbeat interval"
    )
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (task durations)")
    p.add_argument(
        "--variations",
        action="store_true",
        help="run the default and the variations of bench/README.md; print them as a table",
    )
    p.add_argument("--json", type=Path, help="results file (default: bench/results/scale-…)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    model = model_from(args)
    for name in ("elements", "clusters", "slots", "chunk", "placement_batch", "replicas", "cores"):
        if getattr(model, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be at least 1")
    if model.concurrency is not None and model.concurrency < 1:
        raise SystemExit("--concurrency must be at least 1")
    if min(model.cp_ms_per_attempt, model.task_ms, model.heartbeat_s) <= 0:
        raise SystemExit("--cp-ms-per-attempt, --task-ms and --heartbeat-s must be positive")
    if min(model.wft_ms, model.lease_ms, model.pass_ms, model.recheck_ms) < 0:
        raise SystemExit("--wft-ms, --lease-ms, --pass-ms and --recheck-ms cannot be negative")
    if not 0 <= model.task_jitter <= 1:
        raise SystemExit("--task-jitter must be within 0..1")
    if model.kill_cluster_at is not None and model.clusters < 2:
        raise SystemExit("--kill-cluster-at needs at least 2 clusters")

    document: dict[str, Any]
    if args.variations:
        runs = []
        for label, change in VARIATIONS:
            results = simulate(replace(model, **change))
            runs.append((label, results))
            print(f"{label}: simulated in {results['simulated_in_s']:.1f} s", file=sys.stderr)
        print(render(runs[0][1]))
        print()
        print(render_variations(runs))
        document = {"variations": dict(runs)}
    else:
        results = simulate(model)
        print(render(results))
        document = results
    document["python"] = platform.python_version()
    out = args.json or RESULTS / f"scale-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
