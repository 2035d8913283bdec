"""Real Kubernetes control planes for tests: etcd, kube-apiserver, kube-scheduler and kwok, each
a subprocess on loopback ports, with kwok simulating GPU nodes and their pods.

One `KubeCluster` is one independent cluster (its own etcd). The API server serves TLS with a
certificate made at start, authenticates the test admin by a client certificate
(`system:masters`) and service accounts by tokens it signs, and authorises with RBAC, so the
agent's Role is enforced for real. kwok runs the stages in `infra/k8s/kwok/stages.yaml` on the
nodes annotated `kwok.x-k8s.io/node=fake`, and serves as their kubelet on a loopback port (the
nodes' InternalIP and kubelet port), so that the API server serves pod logs: every pod of
`LOGGED_NAMESPACE` logs `POD_LOG_LINES` (kwok's ClusterLogs, from `<home>/pod.log`).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.dynamic import DynamicClient

from control_plane import processes
from tests.pki import _ca, _leaf, _openssl
from tests.polling import wait_until

REPO = Path(__file__).resolve().parents[2]
STAGES = REPO / "infra" / "k8s" / "kwok" / "stages.yaml"
AGENT_MANIFESTS = REPO / "infra" / "k8s" / "agent"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
LOGGED_NAMESPACE = "fleetflow-default"  # tests/k8s/conftest.py's TENANT_NAMESPACE
POD_LOG_LINES = ["kwok says the task started", "kwok says the task ended"]
"""What the API server answers for the log of any pod of `LOGGED_NAMESPACE` on a kwok node."""


@dataclass(frozen=True)
class NodePool:
    """`count` kwok nodes with `gpus` GPUs of `product` each."""

    prefix: str
    count: int
    product: str
    gpus: int
    cpu: str = "64"
    memory: str = "512Gi"


# ---------------------------------------------------------------------------------- PKI


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path
    sa_pub: Path


def make_pki(directory: Path) -> Pki:
    """A CA, the API server's serving certificate, the test admin's client certificate
    (`system:masters`) and the service account signing key pair (openssl, as tests/pki.py)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca("ca", "/CN=fleetflow-test-kube-ca", directory)
    server = _leaf(
        "server",
        "/CN=kube-apiserver",
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n",
        ca,
        directory,
    )
    admin = _leaf(
        "admin",
        "/O=system:masters/CN=fleetflow-test-admin",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=clientAuth\n",
        ca,
        directory,
    )
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=directory)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)
    return Pki(
        ca=ca[0],
        server_cert=server,
        server_key=directory / "server.key",
        admin_cert=admin,
        admin_key=directory / "admin.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
    )


def kubeconfig(
    path: Path,
    server: str,
    ca: Path,
    *,
    cert: Path | None = None,
    key: Path | None = None,
    token: str | None = None,
    name: str = "test",
) -> Path:
    user: dict[str, Any] = {}
    if token is not None:
        user["token"] = token
    if cert is not None and key is not None:
        user["client-certificate"] = str(cert)
        user["client-key"] = str(key)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": name, "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


# ------------------------------------------------------------------------------ cluster

# Every request about a Secret, by whom (the tests prove what the agent never reads).
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  resources:
  - group: ""
    resources: ["secrets"]
- level: None
"""
AUDIT_LOG = "audit.jsonl"


@dataclass
class KubeCluster:
    name: str
    home: Path
    server: str
    pki: Pki
    admin_kubeconfig: Path
    kubelet_port: int = 0  # kwok's kubelet server, every node's
    children: dict[str, Any] = field(default_factory=dict)

    def api(self, kubeconfig_path: Path | None = None) -> k8s.ApiClient:
        """An API client (the admin's unless another kubeconfig is given)."""
        return k8s_config.new_client_from_config(
            config_file=str(kubeconfig_path or self.admin_kubeconfig)
        )

    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api())

    def secret_requests(self) -> list[dict[str, Any]]:
        """The audit log's events about Secrets so far (`verb`, `user.username`,
        `objectRef`), as the API server recorded them."""
        path = self.home / AUDIT_LOG
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def pids(self) -> list[int]:
        return [p.pid for p in self.children.values()]

    def logs(self) -> str:
        parts = []
        for path in sorted(self.home.glob("*.log")):
            parts.append(f"--- {self.name}/{path.stem} ---\n{path.read_text()[-4000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        for name in ("kwok", "kube-scheduler", "kube-apiserver", "etcd"):
            process = self.children.pop(name, None)
            if process is not None:
                processes.stop(process, grace=5)

    def service_account_kubeconfig(self, namespace: str, account: str, path: Path) -> Path:
        """A kubeconfig holding a token of the service account (TokenRequest, 1 hour)."""
        response = self.core().create_namespaced_service_account_token(
            account, namespace, {"spec": {"expirationSeconds": 3600}}
        )
        return kubeconfig(path, self.server, self.pki.ca, token=response.status.token)

    def add_nodes(self, pools: Iterable[NodePool]) -> list[str]:
        core = self.core()
        names = []
        for pool in pools:
            for index in range(pool.count):
                name = f"{pool.prefix}-{index}"
                resources = {
                    "cpu": pool.cpu,
                    "memory": pool.memory,
                    "pods": "110",
                    "nvidia.com/gpu": str(pool.gpus),
                }
                core.create_node(
                    {
                        "apiVersion": "v1",
                        "kind": "Node",
                        "metadata": {
                            "name": name,
                            "annotations": {"kwok.x-k8s.io/node": "fake"},
                            "labels": {
                                "type": "kwok",
                                "kubernetes.io/hostname": name,
                                "kubernetes.io/os": "linux",
                                "nvidia.com/gpu.product": pool.product,
                                "nvidia.com/gpu.count": str(pool.gpus),
                            },
                        },
                        "spec": {"taints": [GPU_TAINT]},
                        "status": {
                            "allocatable": resources,
                            "capacity": resources,
                            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.kubelet_port}},
                        },
                    }
                )
                names.append(name)
        return names

    def wait_nodes_ready(self, names: Iterable[str], timeout: float = 60) -> None:
        core = self.core()
        wanted = set(names)
        wait_until(
            lambda: {
                n.metadata.name
                for n in core.list_node().items
                if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or ())
            },
            timeout=timeout,
            interval=0.2,
            message=f"nodes {sorted(wanted)} to be ready",
            until=wanted.issubset,
            details=self.logs,
        )

    def apply(self, documents: Iterable[Mapping[str, Any]], *, dry_run: bool = False) -> None:
        """Server-side apply of each object (dry run: validated and admitted, not persisted)."""
        dynamic = DynamicClient(self.api())
        for document in documents:
            resource = dynamic.resources.get(
                api_version=document["apiVersion"], kind=document["kind"]
            )
            kwargs: dict[str, Any] = {
                "body": dict(document),
                "field_manager": "fleetflow-tests",
                "force_conflicts": True,
            }
            if resource.namespaced:
                kwargs["namespace"] = document.get("metadata", {}).get("namespace") or "default"
            if dry_run:
                kwargs["dry_run"] = "All"
            dynamic.server_side_apply(resource, **kwargs)


def load_documents(*paths: Path) -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in paths:
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return documents


def _wait_ready(cluster: KubeCluster, timeout: float = 90) -> None:
    process = cluster.children["kube-apiserver"]
    context = ssl.create_default_context(cafile=str(cluster.pki.ca))
    context.load_cert_chain(str(cluster.pki.admin_cert), str(cluster.pki.admin_key))
    with httpx.Client(verify=context, timeout=2) as http:

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"kube-apiserver exited:\n{cluster.logs()}")
            try:
                return http.get(f"{cluster.server}/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(
            ready,
            timeout=timeout,
            interval=0.2,
            message="kube-apiserver to be ready",
            details=cluster.logs,
        )


def _kwok_config(home: Path) -> Path:
    """The stages, and the log (CRI format) of every pod of `LOGGED_NAMESPACE`."""
    log = home / "pod.log"
    log.write_text(
        "".join(
            f"2026-01-01T00:00:0{i}.000000000Z stdout F {line}\n"
            for i, line in enumerate(POD_LOG_LINES)
        )
    )
    logs = {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "ClusterLogs",
        "metadata": {"name": "every-pod"},
        "spec": {
            "selector": {"matchNamespaces": [LOGGED_NAMESPACE]},
            "logs": [{"containers": ["task"], "logsFile": str(log)}],
        },
    }
    config = home / "kwok.yaml"
    config.write_text(STAGES.read_text() + "\n---\n" + yaml.safe_dump(logs))
    return config


def start_cluster(name: str, home: Path, binaries: Mapping[str, Path]) -> KubeCluster:
    """Start one cluster (no nodes yet). Stop it with `KubeCluster.stop`."""
    home.mkdir(parents=True, exist_ok=True)
    pki = make_pki(home / "pki")
    etcd_port, peer_port, api_port, kubelet_port = (processes.free_port() for _ in range(4))
    server = f"https://127.0.0.1:{api_port}"
    cluster = KubeCluster(
        name=name,
        home=home,
        server=server,
        pki=pki,
        admin_kubeconfig=kubeconfig(
            home / "admin.kubeconfig", server, pki.ca, cert=pki.admin_cert, key=pki.admin_key
        ),
        kubelet_port=kubelet_port,
    )
    try:
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        cluster.children["etcd"] = processes.spawn(
            [
                str(binaries["etcd"]),
                "--name=default",
                f"--data-dir={home / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            log_file=home / "etcd.log",
            native=True,
        )
        processes.wait_for_port(
            "127.0.0.1", etcd_port, timeout=30, process=cluster.children["etcd"]
        )
        audit_policy = home / "audit-policy.yaml"
        audit_policy.write_text(AUDIT_POLICY)
        cluster.children["kube-apiserver"] = processes.spawn(
            [
                str(binaries["kube-apiserver"]),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={home / 'certs'}",
                f"--tls-cert-file={pki.server_cert}",
                f"--tls-private-key-file={pki.server_key}",
                f"--client-ca-file={pki.ca}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc",
                "--service-cluster-ip-range=10.96.0.0/24",
                "--authorization-mode=RBAC",
                "--allow-privileged=false",
                # It taints new nodes not-ready until a node lifecycle controller (in
                # kube-controller-manager, not run here) sees them Ready.
                "--disable-admission-plugins=TaintNodesByCondition",
                "--endpoint-reconciler-type=none",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                f"--audit-policy-file={audit_policy}",
                f"--audit-log-path={home / AUDIT_LOG}",
                "--v=0",
                # Pod logs come from kwok's kubelet server (not verified: no kubelet CA).
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-client-certificate={pki.admin_cert}",
                f"--kubelet-client-key={pki.admin_key}",
            ],
            log_file=home / "kube-apiserver.log",
            native=True,
        )
        _wait_ready(cluster)
        cluster.children["kube-scheduler"] = processes.spawn(
            [
                str(binaries["kube-scheduler"]),
                f"--kubeconfig={cluster.admin_kubeconfig}",
                f"--authentication-kubeconfig={cluster.admin_kubeconfig}",
                f"--authorization-kubeconfig={cluster.admin_kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={processes.free_port()}",
                "--v=1",
            ],
            log_file=home / "kube-scheduler.log",
            native=True,
        )
        cluster.children["kwok"] = processes.spawn(
            [
                str(binaries["kwok"]),
                f"--kubeconfig={cluster.admin_kubeconfig}",
                f"--config={_kwok_config(home)}",
                f"--server-address=127.0.0.1:{kubelet_port}",
                f"--node-port={kubelet_port}",
                f"--tls-cert-file={pki.server_cert}",
                f"--tls-private-key-file={pki.server_key}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--node-ip=127.0.0.1",
                "--cidr=10.244.0.0/16",
            ],
            log_file=home / "kwok.log",
            native=True,
        )
    except BaseException:
        cluster.stop()
        raise
    return cluster


def pods_of_attempt(cluster: KubeCluster, namespace: str, attempt_id: str) -> list[str]:
    items = (
        cluster.core()
        .list_namespaced_pod(namespace, label_selector=f"fleetflow.dev/attempt-id={attempt_id}")
        .items
    )
    return [p.metadata.name for p in items]


def as_json(obj: Any) -> str:
    return json.dumps(obj, default=str, indent=1)
