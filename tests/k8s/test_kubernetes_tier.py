"""The Kubernetes executor against real API servers and schedulers with kwok GPU nodes: one
workflow across two clusters, pending reasons, cancellation, failures with the pod's reason,
an agent killed mid-run, least-privilege RBAC and the agent's manifests."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from fleetflow.api_models.executions import ExecutionPublic
from fleetflow.bundle import build_bundle
from fleetflow.client import Client
from fleetflow.loader import load_workflow
from tests.k8s.cluster import AGENT_MANIFESTS, load_documents
from tests.k8s.conftest import CLUSTER_A, CLUSTER_B, TENANT_NAMESPACE, K8sStack
from tests.polling import wait_until

pytestmark = pytest.mark.k8s

CONTROL_PLANE_MANIFESTS = AGENT_MANIFESTS.parents[1] / "deploy" / "control-plane"

WORKFLOWS = Path(__file__).parent / "workflows" / "gpu_tasks.py"
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


def client(k8s_stack: K8sStack) -> Client:
    """The harness's client (the platform admin, where the API asks for a token)."""
    make = getattr(k8s_stack.stack, "client", None)
    if make is not None:
        return make()  # type: ignore[no-any-return]
    return Client(k8s_stack.stack.api_url, token=os.environ.get("FLEETFLOW_TOKEN"))


def submit(k8s_stack: K8sStack, workflow: str) -> str:
    wf, root = load_workflow(WORKFLOWS, workflow)
    digest, data = build_bundle(root)
    with client(k8s_stack) as api:
        api.workflows.upload_bundle(digest, data)
        version = api.workflows.register_spec(wf.spec, digest).version
        return str(api.executions.create(wf.spec.name, {}, version=version).id)


def wait_for(
    k8s_stack: K8sStack,
    execution_id: str,
    condition: Callable[[ExecutionPublic], bool],
    *,
    timeout: float = 90,
    what: str = "condition",
) -> ExecutionPublic:
    with client(k8s_stack) as api:
        return wait_until(
            lambda: api.executions.get(execution_id),
            timeout=timeout,
            interval=0.3,
            message=what,
            until=condition,
            details=k8s_stack.logs,
        )


def finished(execution: ExecutionPublic) -> bool:
    return execution.status in TERMINAL


def pods(k8s_stack: K8sStack, cluster: str, **labels: str) -> list[k8s.V1Pod]:
    selector = ",".join(f"fleetflow.dev/{k}={v}" for k, v in labels.items())
    core = k8s_stack.clusters[cluster].core()
    return list(core.list_namespaced_pod(TENANT_NAMESPACE, label_selector=selector).items)


def wait_pods(
    k8s_stack: K8sStack,
    cluster: str,
    condition: Callable[[list[k8s.V1Pod]], bool],
    timeout: float = 60,
    **labels: str,
) -> list[k8s.V1Pod]:
    return wait_until(
        lambda: pods(k8s_stack, cluster, **labels),
        timeout=timeout,
        interval=0.2,
        message=f"pods {labels} on {cluster}",
        until=condition,
        details=k8s_stack.logs,
    )


def test_gpu_capacity_of_each_cluster_is_reported(k8s_stack: K8sStack) -> None:
    expected = {CLUSTER_A: ("A100", 16), CLUSTER_B: ("H100", 16)}
    with client(k8s_stack) as api:
        wait_until(
            lambda: {
                c.name: [(g.gpu_type, g.allocatable) for g in c.capacity.gpus]
                for c in api.clusters.list()
                if c.name in expected and c.capacity
            },
            timeout=30,
            interval=0.5,
            message="the GPU capacity of each cluster",
            until=lambda gpus: all(gpus.get(name) == [want] for name, want in expected.items()),
        )


def test_workflow_runs_across_both_clusters_by_gpu_type(k8s_stack: K8sStack) -> None:
    execution_id = submit(k8s_stack, "across_clusters")
    final = wait_for(k8s_stack, execution_id, finished, what="execution end")
    assert final.status == "SUCCEEDED", k8s_stack.logs()
    clusters = {a.node_id.split("-", 1)[-1]: a.cluster for a in final.attempts}
    assert clusters == {"train_on_h100": CLUSTER_B, "train_on_a100": CLUSTER_A}

    by_node = {a.node_id.split("-", 1)[-1]: a.id for a in final.attempts}
    (h100_pod,) = pods(k8s_stack, CLUSTER_B, **{"attempt-id": by_node["train_on_h100"]})
    (a100_pod,) = pods(k8s_stack, CLUSTER_A, **{"attempt-id": by_node["train_on_a100"]})
    assert h100_pod.spec.node_selector == {"nvidia.com/gpu.product": "NVIDIA-H100"}
    assert h100_pod.spec.node_name.startswith("h100-")
    assert h100_pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    assert a100_pod.spec.node_name.startswith("a100-")
    assert a100_pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "2"
    assert a100_pod.spec.restart_policy == "Never"
    assert a100_pod.spec.security_context.run_as_non_root is True
    assert a100_pod.status.phase == "Succeeded"
    assert a100_pod.metadata.labels["fleetflow.dev/execution-id"] == execution_id


def test_unschedulable_request_shows_its_pending_reason_and_cancel_deletes_the_pod(
    k8s_stack: K8sStack,
) -> None:
    execution_id = submit(k8s_stack, "too_big")

    def has_reason(execution: ExecutionPublic) -> bool:
        # The agent's reason, once placed: before that, placement's own may show (e.g. while
        # the agents' first heartbeats are on their way, "no cluster is online").
        return any(a.cluster and a.pending_reason for a in execution.attempts)

    waiting = wait_for(k8s_stack, execution_id, has_reason, what="the agent's pending reason")
    (attempt,) = waiting.attempts
    assert attempt.cluster == CLUSTER_B, attempt.pending_reason
    assert attempt.pending_reason.startswith("no node with 8 free H100"), attempt
    assert "Insufficient nvidia.com/gpu" in attempt.pending_reason
    assert len(pods(k8s_stack, CLUSTER_B, **{"attempt-id": attempt.id})) == 1

    with client(k8s_stack) as api:
        api.cancel(execution_id)
    final = wait_for(k8s_stack, execution_id, finished, what="cancellation")
    assert final.status == "CANCELLED"
    wait_pods(k8s_stack, CLUSTER_B, lambda found: not found, **{"attempt-id": attempt.id})


def test_cancel_deletes_a_running_pod(k8s_stack: K8sStack) -> None:
    execution_id = submit(k8s_stack, "slow")
    running = wait_for(
        k8s_stack,
        execution_id,
        lambda e: any(a.status == "RUNNING" for a in e.attempts),
        what="a running attempt",
    )
    attempt_id = running.attempts[0].id
    (pod,) = pods(k8s_stack, CLUSTER_B, **{"attempt-id": attempt_id})
    assert pod.status.phase == "Running"
    with client(k8s_stack) as api:
        api.cancel(execution_id)
    final = wait_for(k8s_stack, execution_id, finished, what="cancellation")
    assert final.status == "CANCELLED"
    assert final.attempts[0].status == "CANCELLED"
    wait_pods(k8s_stack, CLUSTER_B, lambda found: not found, **{"attempt-id": attempt_id})


def test_failing_pod_fails_the_task_with_the_pods_reason(k8s_stack: K8sStack) -> None:
    final = wait_for(k8s_stack, submit(k8s_stack, "failing"), finished, what="execution end")
    assert final.status == "FAILED"
    (attempt,) = final.attempts
    assert attempt.cluster == CLUSTER_A
    assert "RuntimeError: simulated failure" in attempt.error_message
    assert "exited with code 3" in attempt.error_message
    assert "simulated failure" in final.error["message"]


def test_out_of_memory_pod_fails_the_task_as_oomkilled(k8s_stack: K8sStack) -> None:
    final = wait_for(k8s_stack, submit(k8s_stack, "out_of_memory"), finished, what="end")
    assert final.status == "FAILED"
    message = final.attempts[0].error_message
    assert message.startswith("OOMKilled: the task exceeded its memory limit of 1Gi"), message


def test_killing_and_restarting_the_agent_mid_run_makes_no_second_pod(
    k8s_stack: K8sStack,
) -> None:
    execution_id = submit(k8s_stack, "slow")
    running = wait_for(
        k8s_stack,
        execution_id,
        lambda e: any(a.status == "RUNNING" for a in e.attempts),
        what="a running attempt",
    )
    attempt_id = running.attempts[0].id
    k8s_stack.kill_agent(CLUSTER_B)
    k8s_stack.start_agent(CLUSTER_B)
    final = wait_for(k8s_stack, execution_id, finished, timeout=120, what="execution end")
    assert final.status == "SUCCEEDED", k8s_stack.logs()
    # Never dispatched again: the restarted agent adopts the pod and reports for it.
    assert [a.id for a in final.attempts] == [attempt_id], k8s_stack.logs()
    (pod,) = pods(k8s_stack, CLUSTER_B, **{"attempt-id": attempt_id})
    assert pod.status.phase == "Succeeded"
    log = (k8s_stack.stack.home / f"agent-{CLUSTER_B}.log").read_text()
    assert f"attempt {attempt_id}: adopted from a previous agent" in log


def test_agent_service_account_is_confined_to_its_namespaces(k8s_stack: K8sStack) -> None:
    cluster = k8s_stack.clusters[CLUSTER_A]
    agent = k8s_stack.agents[CLUSTER_A]
    core = k8s.CoreV1Api(cluster.api(agent.kubeconfig))
    core.list_namespaced_pod(TENANT_NAMESPACE)  # its own: allowed
    core.list_namespaced_service(TENANT_NAMESPACE)  # a gang's headless Service: allowed
    assert core.list_node().items  # nodes, read-only: allowed
    pod = {
        "metadata": {"name": "intruder"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    forbidden: list[Callable[[], Any]] = [
        lambda: core.list_namespaced_pod("other-tenant"),
        lambda: core.list_namespaced_pod("kube-system"),
        lambda: core.list_pod_for_all_namespaces(),
        lambda: core.create_namespaced_pod("other-tenant", pod),
        lambda: core.list_namespaced_secret(TENANT_NAMESPACE),
        lambda: core.list_namespaced_service("other-tenant"),
        lambda: core.list_service_for_all_namespaces(),
        lambda: core.patch_namespaced_service("x", TENANT_NAMESPACE, {"metadata": {}}),
        lambda: core.delete_node("a100-0"),
    ]
    for call in forbidden:
        with pytest.raises(ApiException) as info:
            call()
        assert info.value.status == 403


def test_agent_manifests_pass_a_server_side_dry_run(k8s_stack: K8sStack) -> None:
    cluster = k8s_stack.clusters[CLUSTER_B]
    documents = load_documents(
        AGENT_MANIFESTS / "namespaces.yaml",
        AGENT_MANIFESTS / "rbac.yaml",
        AGENT_MANIFESTS / "deployment.yaml",
    )
    assert {d["kind"] for d in documents} >= {
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "ClusterRole",
    }
    cluster.apply(documents, dry_run=True)
    # Dry run indeed: the Deployment was validated, not created.
    apps = k8s.AppsV1Api(cluster.api())
    assert not apps.list_namespaced_deployment("fleetflow-system").items


def test_control_plane_manifests_pass_a_server_side_dry_run(k8s_stack: K8sStack) -> None:
    """Every file `infra/deploy/control-plane/kustomization.yaml` lists, as the API server
    would admit it (the namespace is created for real: namespaced objects need it)."""
    cluster = k8s_stack.clusters[CLUSTER_A]
    kustomization = yaml.safe_load((CONTROL_PLANE_MANIFESTS / "kustomization.yaml").read_text())
    documents = load_documents(*(CONTROL_PLANE_MANIFESTS / f for f in kustomization["resources"]))
    assert {d["kind"] for d in documents} == {
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Job",
        "Deployment",
        "Service",
    }
    namespaces = [d for d in documents if d["kind"] == "Namespace"]
    cluster.apply(namespaces)
    cluster.apply([d for d in documents if d["kind"] != "Namespace"], dry_run=True)
    apps = k8s.AppsV1Api(cluster.api())
    assert not apps.list_namespaced_deployment("fleetflow").items
    deployments = [d for d in documents if d["kind"] == "Deployment"]
    api = next(d for d in deployments if d["metadata"]["name"] == "fleetflow-control-plane-api")
    probes = api["spec"]["template"]["spec"]["containers"][0]
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
