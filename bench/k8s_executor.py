"""One agent's Kubernetes executor against a real API server with 100 kwok nodes.

Measures:

- **throughput**: attempts launched as pods and observed to completion per second, with at
  most `--in-flight` attempts at once (the agent's `max_parallel`); each pod is scheduled by
  kube-scheduler, started and completed by kwok (0.3 s + 1.5 s simulated run time);
- **memory**: the resident set size of this process (which is what an agent process holds)
  while its executor tracks `--tracked` running pods (kwok stage `hold_in_kwok`: running until
  deleted), next to its size before they were launched.

Nodes have 16 GPUs each (100 nodes: 1,600), so that 1,000 one-GPU pods fit at once.

    .venv/bin/python bench/k8s_executor.py [--attempts 500] [--tracked 1000] [--json FILE]

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
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data_plane_agent.attempts import AttemptResources, TaskAssignment  # noqa: E402
from data_plane_agent.executors.kubernetes import KubernetesExecutor  # noqa: E402
from data_plane_agent.settings import KubernetesSettings  # noqa: E402
from fleetflow.states import AttemptState  # noqa: E402
from tests.k8s.cluster import (  # noqa: E402
    AGENT_MANIFESTS,
    NodePool,
    load_documents,
    start_cluster,
)
from tests.tiers import load_script  # noqa: E402

NAMESPACE = "fleetflow-default"


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


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


async def throughput(executor: KubernetesExecutor, attempts: int, in_flight: int) -> dict[str, Any]:
    slots = asyncio.Semaphore(in_flight)
    done = 0
    finished = asyncio.Event()
    states: dict[str, int] = {}

    async def pump() -> None:
        nonlocal done
        while done < attempts:
            event = await executor.next_event()
            if event.state.terminal:
                states[event.state.value] = states.get(event.state.value, 0) + 1
                done += 1
                slots.release()
        finished.set()

    pumping = asyncio.create_task(pump())
    started = time.perf_counter()
    for index in range(attempts):
        await slots.acquire()
        await executor.launch(assignment(index, "train", gpu=1))
    await finished.wait()
    elapsed = time.perf_counter() - started
    await pumping
    return {
        "attempts": attempts,
        "in_flight": in_flight,
        "seconds": round(elapsed, 2),
        "pods_per_second": round(attempts / elapsed, 2),
        "outcomes": states,
    }


async def tracking(executor: KubernetesExecutor, tracked: int, base: int) -> dict[str, Any]:
    before = rss_bytes()
    running = 0
    launches = [assignment(base + i, "hold_in_kwok", gpu=1) for i in range(tracked)]
    started = time.perf_counter()
    for chunk in range(0, tracked, 50):
        await asyncio.gather(*(executor.launch(a) for a in launches[chunk : chunk + 50]))
    while running < tracked:
        event = await executor.next_event()
        if event.state is AttemptState.RUNNING:
            running += 1
        elif event.state.terminal:
            raise RuntimeError(f"a held pod ended: {event}")
    elapsed = time.perf_counter() - started
    await asyncio.sleep(3)  # let a resync or two pass with all of them tracked
    after = rss_bytes()
    return {
        "tracked_pods": tracked,
        "seconds_to_all_running": round(elapsed, 2),
        "rss_before_mib": round(before / 2**20, 1),
        "rss_tracking_mib": round(after / 2**20, 1),
        "rss_growth_kib_per_pod": round((after - before) / tracked / 1024, 1),
    }


async def run(args: argparse.Namespace, kubeconfig: Path, work_dir: Path) -> dict[str, Any]:
    settings = KubernetesSettings(
        kubeconfig=kubeconfig,
        namespaces={"default": NAMESPACE},
        cleanup="keep",
        resync_seconds=2,
    )
    results: dict[str, Any] = {"rss_at_start_mib": round(rss_bytes() / 2**20, 1)}
    executor = KubernetesExecutor(settings, work_dir)
    await executor.start()
    results["throughput"] = await asyncio.wait_for(
        throughput(executor, args.attempts, args.in_flight), timeout=600
    )
    results["memory"] = await asyncio.wait_for(
        tracking(executor, args.tracked, base=args.attempts), timeout=600
    )
    await executor.shutdown("bench over")
    return results


def main() -> int:
    logging.basicConfig(
        level=logging.INFO if os.environ.get("BENCH_VERBOSE") else logging.WARNING,
        stream=sys.stderr,
    )
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--attempts", type=int, default=500)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--tracked", type=int, default=1000)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    # A SIGTERM (e.g. `timeout`) still runs the `finally` below: no cluster left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    binaries = load_script("infra/k8s/provision.py").provision()
    with tempfile.TemporaryDirectory(prefix="fleetflow-k8s-bench-") as tmp:
        home = Path(tmp)
        cluster = start_cluster("bench", home / "cluster", binaries)
        try:
            names = cluster.add_nodes([NodePool("h100", args.nodes, "NVIDIA-H100", 16, cpu="96")])
            cluster.apply(
                load_documents(AGENT_MANIFESTS / "namespaces.yaml", AGENT_MANIFESTS / "rbac.yaml")
            )
            cluster.core().create_namespaced_service_account(
                NAMESPACE, {"metadata": {"name": "default"}}
            )
            cluster.wait_nodes_ready(names, timeout=120)
            kubeconfig = cluster.service_account_kubeconfig(
                "fleetflow-system", "fleetflow-agent", home / "agent.kubeconfig"
            )
            results = asyncio.run(run(args, kubeconfig, home / "agent"))
        finally:
            cluster.stop()
    results["nodes"] = args.nodes
    results["machine"] = f"{platform.machine()}, {platform.python_version()}"
    text = json.dumps(results, indent=2)
    sys.stdout.write(text + "\n")
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
