"""One agent's Kubernetes executor against a real API server with 100 kwok nodes, next to a bare
`kubernetes` client loop creating the same pods against the same API server.

Measures:

- **throughput**: pods created and observed to completion per second, with at most
  `--in-flight` at once (the agent's `max_parallel`), by two sides in turn:
  - *executor*: `KubernetesExecutor.launch` for each attempt, completions read from
    `next_event` (what the agent does);
  - *bare client* (the peer): `CoreV1Api.create_namespaced_pod` of the same manifest in a plain
    loop, completions read by one watch of the same label selector in a thread, each event
    decoded as JSON (`_preload_content=False`: the cheapest the client offers).

  Each pod is scheduled by kube-scheduler, started and completed by kwok (0.3 s + 1.5 s
  simulated run time). The sides alternate over `--rounds` rounds (peer first in even rounds,
  executor first in odd ones), all pods deleted between runs; the figures are medians and the
  ratio is executor / bare client.
- **memory**: the resident set size of an agent-like process (it imports the agent's CLI, as
  `fleetflow-agent` does, and runs the executor) while its executor tracks `--tracked` running
  pods (kwok stage `hold_in_kwok`: running until deleted), next to its size before they were
  launched.

Each run is a fresh subprocess of this script (`--role`), so that neither side pays for the
other's imports, heap or threads, and the memory figure is that of a process holding no more than
an agent. Nodes have 16 GPUs each (100 nodes: 1,600), so that 1,000 one-GPU pods fit at once.

    .venv/bin/python bench/k8s_executor.py [--attempts 500] [--rounds 3] [--tracked 1000]
                                           [--json FILE]

Needs the binaries of the Kubernetes test tier (`python infra/k8s/provision.py`). Starts and
stops its own cluster on loopback ports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Only what every role needs: the parent's cluster helpers and the agent's modules are imported
# by the roles that use them, so that each subprocess holds what its side holds.
from data_plane_agent.attempts import AttemptResources, TaskAssignment  # noqa: E402
from data_plane_agent.settings import KubernetesSettings  # noqa: E402

NAMESPACE = "fleetflow-default"
ROLES = ("executor", "peer", "tracking")


def rss_bytes() -> int:
    return _status_field("VmRSS")


def _status_field(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1]) * 1024
    return 0


def mib(number_of_bytes: int) -> float:
    return round(number_of_bytes / 2**20, 1)


def bench_settings(kubeconfig: Path) -> KubernetesSettings:
    return KubernetesSettings(
        kubeconfig=kubeconfig,
        namespaces={"default": NAMESPACE},
        cleanup="keep",
        resync_seconds=2,
    )


def assignment(index: int, function: str, gpu: int) -> TaskAssignment:
    return TaskAssignment(
        attempt_id=f"att-{index:08d}",
        fencing_token=1,
        execution_id=f"exe-{index // 100:06d}",
        node_id="n1-bench",
        tenant="default",
        task_module="bench",
        task_function=function,
        bundle_uri="file:///bench/bundle.zip",
        inputs_uri="file:///bench/inputs.json",
        outputs_uri="file:///bench/outputs.json",
        resources=AttemptResources(
            cpu=0.1, memory_bytes=64 * 2**20, gpu=gpu, gpu_type="H100" if gpu else ""
        ),
        timeout_seconds=600,
    )


# ------------------------------------------------------------------------- executor side


async def executor_throughput(args: argparse.Namespace) -> dict[str, Any]:
    from data_plane_agent.executors.kubernetes import KubernetesExecutor

    executor = KubernetesExecutor(bench_settings(args.kubeconfig), args.work_dir)
    await executor.start()
    slots = asyncio.Semaphore(args.in_flight)
    done = 0
    finished = asyncio.Event()
    states: dict[str, int] = {}

    async def pump() -> None:
        nonlocal done
        while done < args.attempts:
            event = await executor.next_event()
            if event.state.terminal:
                states[event.state.value] = states.get(event.state.value, 0) + 1
                done += 1
                slots.release()
        finished.set()

    pumping = asyncio.create_task(pump())
    cpu_started = time.process_time()
    started = time.perf_counter()
    for index in range(args.base, args.base + args.attempts):
        await slots.acquire()
        await executor.launch(assignment(index, "train", gpu=1))
    await asyncio.wait_for(finished.wait(), timeout=600)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    await pumping
    await executor.shutdown("bench over")
    return _throughput_result(args, elapsed, cpu, states)


async def executor_tracking(args: argparse.Namespace) -> dict[str, Any]:
    # What `fleetflow-agent run` imports besides the executor.
    import data_plane_agent.cli  # noqa: F401
    from data_plane_agent.executors.kubernetes import KubernetesExecutor
    from fleetflow.states import AttemptState

    executor = KubernetesExecutor(bench_settings(args.kubeconfig), args.work_dir)
    await executor.start()
    before = rss_bytes()
    running = 0
    launches = [assignment(args.base + i, "hold_in_kwok", gpu=1) for i in range(args.tracked)]
    started = time.perf_counter()
    for chunk in range(0, args.tracked, 50):
        await asyncio.gather(*(executor.launch(a) for a in launches[chunk : chunk + 50]))
    while running < args.tracked:
        event = await asyncio.wait_for(executor.next_event(), timeout=600)
        if event.state is AttemptState.RUNNING:
            running += 1
        elif event.state.terminal:
            raise RuntimeError(f"a held pod ended: {event}")
    elapsed = time.perf_counter() - started
    await asyncio.sleep(5)  # let a resync or two pass with all of them tracked
    after = rss_bytes()
    await executor.shutdown("bench over")
    return {
        "tracked_pods": args.tracked,
        "seconds_to_all_running": round(elapsed, 2),
        "rss_before_mib": mib(before),
        "rss_tracking_mib": mib(after),
        "rss_peak_mib": mib(_status_field("VmHWM")),
        "rss_growth_kib_per_pod": round((after - before) / args.tracked / 1024, 1),
    }


# ----------------------------------------------------------------------------- bare client


def peer_throughput(args: argparse.Namespace) -> dict[str, Any]:
    """The same pods through a plain loop over the official client: one thread creates them,
    one watch (of the same selector, raw JSON) counts them done."""
    from kubernetes import client, config
    from kubernetes.watch.watch import iter_resp_lines

    from data_plane_agent.executors import kubernetes_pods as pods

    settings = bench_settings(args.kubeconfig)
    core = client.CoreV1Api(config.new_client_from_config(config_file=str(args.kubeconfig)))
    selector = pods.selector(settings)
    listed = core.list_namespaced_pod(NAMESPACE, label_selector=selector, _preload_content=False)
    resource_version = json.loads(listed.data)["metadata"]["resourceVersion"]
    slots = threading.Semaphore(args.in_flight)
    finished: set[str] = set()
    states: dict[str, int] = {}
    all_done = threading.Event()

    def watch() -> None:
        nonlocal resource_version
        while not all_done.is_set():
            response = core.list_namespaced_pod(
                NAMESPACE,
                label_selector=selector,
                watch=True,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=60,
                _preload_content=False,
            )
            try:
                for line in iter_resp_lines(response):
                    obj = json.loads(line)["object"]
                    resource_version = obj["metadata"]["resourceVersion"]
                    phase = (obj.get("status") or {}).get("phase")
                    name = obj["metadata"].get("name")
                    if phase in ("Succeeded", "Failed") and name not in finished:
                        finished.add(name)
                        state = "SUCCEEDED" if phase == "Succeeded" else "FAILED"
                        states[state] = states.get(state, 0) + 1
                        slots.release()
                        if len(finished) == args.attempts:
                            all_done.set()
                            return
            finally:
                response.release_conn()

    watcher = threading.Thread(target=watch, name="peer-watch", daemon=True)
    watcher.start()
    cpu_started = time.process_time()
    started = time.perf_counter()
    for index in range(args.base, args.base + args.attempts):
        slots.acquire()
        manifest = pods.pod_manifest(assignment(index, "train", gpu=1), settings)
        response = core.create_namespaced_pod(NAMESPACE, manifest, _preload_content=False)
        response.drain_conn()  # unread, its connection would not go back to the pool
        response.release_conn()
    if not all_done.wait(timeout=600):
        raise RuntimeError(f"only {len(finished)} of {args.attempts} pods completed")
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    return _throughput_result(args, elapsed, cpu, states)


def _throughput_result(
    args: argparse.Namespace, elapsed: float, cpu: float, states: dict[str, int]
) -> dict[str, Any]:
    return {
        "attempts": args.attempts,
        "in_flight": args.in_flight,
        "seconds": round(elapsed, 2),
        "pods_per_second": round(args.attempts / elapsed, 2),
        "cpu_ms_per_pod": round(cpu * 1000 / args.attempts, 2),
        "outcomes": states,
    }


def run_role(args: argparse.Namespace) -> dict[str, Any]:
    if args.role == "peer":
        return peer_throughput(args)
    if args.role == "executor":
        return asyncio.run(executor_throughput(args))
    return asyncio.run(executor_tracking(args))


# ---------------------------------------------------------------------------------- parent


def spawn_role(role: str, args: argparse.Namespace, kubeconfig: Path, work_dir: Path, base: int):
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        f"--role={role}",
        f"--kubeconfig={kubeconfig}",
        f"--work-dir={work_dir}",
        f"--base={base}",
        f"--attempts={args.attempts}",
        f"--in-flight={args.in_flight}",
        f"--tracked={args.tracked}",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{role} run failed ({completed.returncode}):\n{completed.stderr}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def delete_all_pods(core: Any) -> None:
    """Every pod of the namespace gone at once (grace 0), before the next run starts."""
    from tests.polling import wait_until

    core.delete_collection_namespaced_pod(NAMESPACE, grace_period_seconds=0)
    wait_until(
        lambda: not core.list_namespaced_pod(NAMESPACE, limit=1).items,
        timeout=120,
        interval=0.5,
        message="the bench's pods to be deleted",
    )


def measure(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    from tests.k8s.cluster import AGENT_MANIFESTS, NodePool, load_documents, start_cluster
    from tests.tiers import load_script

    binaries = load_script("infra/k8s/provision.py").provision()
    cluster = start_cluster("bench", home / "cluster", binaries)
    try:
        names = cluster.add_nodes([NodePool("h100", args.nodes, "NVIDIA-H100", 16, cpu="96")])
        cluster.apply(
            load_documents(AGENT_MANIFESTS / "namespaces.yaml", AGENT_MANIFESTS / "rbac.yaml")
        )
        admin = cluster.core()
        admin.create_namespaced_service_account(NAMESPACE, {"metadata": {"name": "default"}})
        cluster.wait_nodes_ready(names, timeout=120)
        kubeconfig = cluster.service_account_kubeconfig(
            "fleetflow-system", "fleetflow-agent", home / "agent.kubeconfig"
        )
        runs: dict[str, list[dict[str, Any]]] = {"executor": [], "peer": []}
        base = 0
        for round_index in range(args.rounds):
            order = ("peer", "executor") if round_index % 2 == 0 else ("executor", "peer")
            for role in order:
                work_dir = home / f"{role}-{round_index}"
                runs[role].append(spawn_role(role, args, kubeconfig, work_dir, base))
                base += args.attempts
                delete_all_pods(admin)
        memory = spawn_role("tracking", args, kubeconfig, home / "tracking", base)
        delete_all_pods(admin)
    finally:
        cluster.stop()
    executor_rate = statistics.median(r["pods_per_second"] for r in runs["executor"])
    peer_rate = statistics.median(r["pods_per_second"] for r in runs["peer"])
    return {
        "throughput": {
            "executor_pods_per_second": round(executor_rate, 2),
            "bare_client_pods_per_second": round(peer_rate, 2),
            "ratio": round(executor_rate / peer_rate, 2),
            "executor_runs": runs["executor"],
            "bare_client_runs": runs["peer"],
        },
        "memory": memory,
    }


def main() -> int:
    logging.basicConfig(
        level=logging.INFO if os.environ.get("BENCH_VERBOSE") else logging.WARNING,
        stream=sys.stderr,
    )
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--attempts", type=int, default=500, help="pods per throughput run")
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side")
    parser.add_argument("--tracked", type=int, default=1000)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--role", choices=ROLES, help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--base", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        sys.stdout.write(json.dumps(run_role(args)) + "\n")
        return 0
    # A SIGTERM (e.g. `timeout`) still runs the `finally` below: no cluster left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="fleetflow-k8s-bench-") as tmp:
        results = measure(args, Path(tmp))
    results["nodes"] = args.nodes
    results["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}"
    text = json.dumps(results, indent=2)
    sys.stdout.write(text + "\n")
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
