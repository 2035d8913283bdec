"""Fixtures of the Kubernetes tier: two real clusters with kwok GPU nodes, a Fleetflow stack,
and an agent with the Kubernetes executor per cluster.

The binaries come from `infra/k8s/provision.py` (its cache, which `make servers` fills, or
`$KUBEBUILDER_ASSETS`). When they are missing the tier skips loudly, or fails with
`FLEETFLOW_REQUIRE_K8S=1` (CI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from control_plane import processes
from control_plane.bootstrap import bootstrap_local_cluster
from control_plane.db.session import make_engine, make_session_factory
from tests.integration.stack import Stack, TemporalServer, start_stack, start_temporal
from tests.k8s.cluster import (
    AGENT_MANIFESTS,
    KubeCluster,
    NodePool,
    load_documents,
    start_cluster,
)
from tests.tiers import load_script, tier_unavailable

TENANT_NAMESPACE = "fleetflow-default"
AGENT_NAMESPACE = "fleetflow-system"
AGENT_ACCOUNT = "fleetflow-agent"
CLUSTER_A = "gpu-a"  # 2 nodes x 8 NVIDIA-A100
CLUSTER_B = "gpu-b"  # 4 nodes x 4 NVIDIA-H100


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "k8s: needs the Kubernetes test tier (kube-apiserver, etcd, scheduler, kwok)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.k8s)


@pytest.fixture(scope="session")
def k8s_binaries() -> dict[str, Path]:
    """The tier's binaries, as `make servers` built them (a test never builds: minutes)."""
    found = load_script("infra/k8s/provision.py").locate()
    missing = [name for name, path in found.items() if path is None]
    if missing:
        tier_unavailable(
            f"KUBERNETES TESTS SKIPPED - {', '.join(missing)} not built: run `make servers` "
            "once (or set KUBEBUILDER_ASSETS)",
            "FLEETFLOW_REQUIRE_K8S",
        )
    return {name: path for name, path in found.items() if path is not None}


def _prepare(cluster: KubeCluster, pools: list[NodePool]) -> None:
    """Nodes, the namespaces and the agent's RBAC (the manifests in infra/k8s/agent), and the
    service account task pods run as (no controller-manager creates `default` here)."""
    names = cluster.add_nodes(pools)
    cluster.apply(
        load_documents(AGENT_MANIFESTS / "namespaces.yaml", AGENT_MANIFESTS / "rbac.yaml")
    )
    core = cluster.core()
    for namespace in (TENANT_NAMESPACE, AGENT_NAMESPACE, "other-tenant"):
        if namespace == "other-tenant":
            core.create_namespace({"metadata": {"name": namespace}})
        core.create_namespaced_service_account(namespace, {"metadata": {"name": "default"}})
    cluster.wait_nodes_ready(names)


@pytest.fixture(scope="session")
def kube_clusters(
    k8s_binaries: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, KubeCluster]]:
    clusters: dict[str, KubeCluster] = {}
    try:
        clusters[CLUSTER_A] = start_cluster(
            CLUSTER_A, tmp_path_factory.mktemp("kube-a"), k8s_binaries
        )
        clusters[CLUSTER_B] = start_cluster(
            CLUSTER_B, tmp_path_factory.mktemp("kube-b"), k8s_binaries
        )
        _prepare(clusters[CLUSTER_A], [NodePool("a100", 2, "NVIDIA-A100", 8)])
        _prepare(clusters[CLUSTER_B], [NodePool("h100", 4, "NVIDIA-H100", 4)])
        yield clusters
    finally:
        pids = [pid for c in clusters.values() for pid in c.pids()]
        for cluster in clusters.values():
            cluster.stop()
        leftovers = [pid for pid in pids if _alive(pid)]
        assert not leftovers, f"cluster processes left behind: {leftovers}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for good once reaped; `processes.stop` waits, so this is a real leak.
    return True


@dataclass
class K8sAgent:
    cluster: str
    token: str
    kubeconfig: Path
    work_dir: Path
    process: subprocess.Popen[bytes] | None = None


class K8sStack:
    """A Fleetflow stack whose clusters are the kube clusters, each with a Kubernetes agent."""

    def __init__(self, stack: Stack, clusters: dict[str, KubeCluster]) -> None:
        self.stack = stack
        self.clusters = clusters
        self.agents: dict[str, K8sAgent] = {}

    def add_agent(self, name: str) -> K8sAgent:
        engine = make_engine(self.stack.database_url)
        token = bootstrap_local_cluster(
            make_session_factory(engine), tenant="default", cluster=name, labels={}
        )
        engine.dispose()
        cluster = self.clusters[name]
        agent = K8sAgent(
            cluster=name,
            token=token,
            kubeconfig=cluster.service_account_kubeconfig(
                AGENT_NAMESPACE, AGENT_ACCOUNT, cluster.home / "agent.kubeconfig"
            ),
            work_dir=self.stack.home / f"agent-{name}",
        )
        self.agents[name] = agent
        self.start_agent(name)
        return agent

    def start_agent(self, name: str) -> subprocess.Popen[bytes]:
        agent = self.agents[name]
        argv = [sys.executable, "-m", "data_plane_agent", "run"]
        argv += ["--control-plane", self.stack.grpc_address, "--work-dir", str(agent.work_dir)]
        agent.process = processes.spawn(
            argv,
            log_file=self.stack.home / f"agent-{name}.log",
            env={
                **self.stack.env,
                "FLEETFLOW_AGENT_TOKEN": agent.token,
                "FLEETFLOW_AGENT_EXECUTOR": "kubernetes",
                "FLEETFLOW_AGENT_K8S_KUBECONFIG": str(agent.kubeconfig),
                "FLEETFLOW_AGENT_K8S_AGENT_NAME": name,
                "FLEETFLOW_AGENT_K8S_NAMESPACES": json.dumps({"default": TENANT_NAMESPACE}),
                "FLEETFLOW_AGENT_K8S_CLEANUP": "keep",
                "FLEETFLOW_AGENT_K8S_RESYNC_SECONDS": "1",
                # An image that cannot be pulled fails its attempt after 3 s, not 120 s.
                "FLEETFLOW_AGENT_K8S_IMAGE_PULL_GRACE_SECONDS": "3",
                "FLEETFLOW_AGENT_MAX_PARALLEL": "16",
                "FLEETFLOW_AGENT_LEASE_WAIT_SECONDS": "2",
            },
        )
        self.stack.children[f"agent-{name}"] = agent.process
        return agent.process

    def kill_agent(self, name: str) -> None:
        """SIGKILL: no shutdown of any kind."""
        process = self.stack.children.pop(f"agent-{name}")
        processes.stop(process, grace=0)

    def logs(self) -> str:
        return self.stack.logs() + "\n" + "\n".join(c.logs() for c in self.clusters.values())


@pytest.fixture(scope="session")
def k8s_temporal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalServer]:
    server = start_temporal(tmp_path_factory.mktemp("k8s-temporal"))
    yield server
    processes.stop(server.process)


@pytest.fixture(scope="session")
def k8s_stack(
    kube_clusters: dict[str, KubeCluster],
    k8s_temporal: TemporalServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[K8sStack]:
    home = tmp_path_factory.mktemp("k8s-stack")
    # Heartbeats every 5 s (grace 15 s), not the integration stacks' 1 s: an agent killed and
    # started again on a loaded machine must be back before its cluster counts as silent, or
    # its pods' attempts are judged lost and dispatched again (failover is tested elsewhere).
    stack = start_stack(
        home,
        f"sqlite:///{home / 'fleetflow.db'}",
        k8s_temporal,
        extra_env={"FLEETFLOW_GRPC_HEARTBEAT_INTERVAL_SECONDS": "5"},
    )
    # Only the Kubernetes clusters run work here: the stack's local agent goes.
    processes.stop(stack.children.pop("agent"))
    running = K8sStack(stack, kube_clusters)
    try:
        for name in kube_clusters:
            running.add_agent(name)
        yield running
    finally:
        stack.stop()
