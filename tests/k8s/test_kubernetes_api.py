"""The Kubernetes executor's requests (`kubernetes_api`: plain JSON through the client's
`ApiClient`, no generated `CoreV1Api`) against a real API server, as the agent's service
account: each request does what the generated method did, and a refusal is the client's
`ApiException` with the server's status and Status body."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from data_plane_agent.attempts import AttemptResources, TaskAssignment
from data_plane_agent.executors import kubernetes_pods as pods
from data_plane_agent.executors.kubernetes import make_api_client
from data_plane_agent.executors.kubernetes_api import KubernetesApi
from data_plane_agent.settings import KubernetesSettings
from tests.k8s.cluster import KubeCluster
from tests.k8s.conftest import AGENT_ACCOUNT, AGENT_NAMESPACE, CLUSTER_B, TENANT_NAMESPACE
from tests.polling import wait_until

pytestmark = pytest.mark.k8s

TIMEOUT = 30.0


@pytest.fixture
def settings(kube_clusters: dict[str, KubeCluster], tmp_path: Path) -> KubernetesSettings:
    cluster = kube_clusters[CLUSTER_B]
    kubeconfig = cluster.service_account_kubeconfig(
        AGENT_NAMESPACE, AGENT_ACCOUNT, tmp_path / "agent.kubeconfig"
    )
    # An agent name of its own: no other test's pods match its selector.
    return KubernetesSettings(kubeconfig=kubeconfig, agent_name="api-requests")


def held_pod(settings: KubernetesSettings) -> dict[str, Any]:
    """A pod kwok runs until it is deleted (stage `hold_in_kwok`)."""
    assignment = TaskAssignment(
        attempt_id="att-api-requests",
        fencing_token=1,
        execution_id="exe-api-requests",
        node_id="n1",
        tenant="default",
        task_module="tests",
        task_function="hold_in_kwok",
        bundle_uri="file:///b.zip",
        inputs_uri="file:///i.json",
        outputs_uri="file:///o.json",
        resources=AttemptResources(cpu=0.1, memory_bytes=64 * 2**20, gpu=1, gpu_type="H100"),
    )
    return pods.pod_manifest(assignment, settings)


def test_each_request_against_a_real_api_server(settings: KubernetesSettings) -> None:
    api = KubernetesApi(make_api_client(settings))
    selector = pods.selector(settings)
    manifest = held_pod(settings)
    name = manifest["metadata"]["name"]

    listed = api.list_pods(TENANT_NAMESPACE, selector, timeout=TIMEOUT)
    assert listed["items"] == []
    api.create_pod(TENANT_NAMESPACE, manifest, timeout=TIMEOUT)
    with pytest.raises(ApiException) as exists:
        api.create_pod(TENANT_NAMESPACE, manifest, timeout=TIMEOUT)
    assert exists.value.status == 409
    assert json.loads(exists.value.body or "")["reason"] == "AlreadyExists"

    # The watch from the list's resourceVersion sees the pod created since, running.
    response = api.watch_pods(
        TENANT_NAMESPACE,
        selector,
        listed["metadata"]["resourceVersion"],
        timeout_seconds=20,
        timeout=TIMEOUT,
    )
    phases = []
    try:
        for line in iter_resp_lines(response):
            event = json.loads(line)
            assert event["object"]["metadata"]["name"] == name
            phases.append(event["object"].get("status", {}).get("phase"))
            if phases[-1] == "Running":
                break
    finally:
        response.release_conn()
    assert phases[0] == "Pending" and phases[-1] == "Running"

    api.patch_pod(
        TENANT_NAMESPACE, name, {"metadata": {"annotations": {"x/y": "z"}}}, timeout=TIMEOUT
    )
    (pod,) = api.list_pods(TENANT_NAMESPACE, selector, timeout=TIMEOUT)["items"]
    assert pod["metadata"]["annotations"]["x/y"] == "z"
    assert pod["metadata"]["annotations"][pods.ASSIGNMENT_ANNOTATION]  # merged, not replaced

    nodes = api.list_nodes(timeout=TIMEOUT)["items"]
    assert {n["metadata"]["labels"]["nvidia.com/gpu.product"] for n in nodes} == {"NVIDIA-H100"}

    api.delete_pod(TENANT_NAMESPACE, name, 0, timeout=TIMEOUT)
    wait_until(
        lambda: api.list_pods(TENANT_NAMESPACE, selector, timeout=TIMEOUT)["items"],
        timeout=30,
        interval=0.2,
        message=f"pod {name} to be deleted",
        until=lambda items: not items,
    )
    with pytest.raises(ApiException) as gone:
        api.delete_pod(TENANT_NAMESPACE, name, 0, timeout=TIMEOUT)
    assert gone.value.status == 404
    with pytest.raises(ApiException) as no_log:
        api.read_pod_log(
            TENANT_NAMESPACE,
            name,
            container="task",
            tail_lines=10,
            limit_bytes=100,
            timeout=TIMEOUT,
        )
    assert no_log.value.status == 404


def test_requests_outside_the_agents_rights_are_refused(settings: KubernetesSettings) -> None:
    api = KubernetesApi(make_api_client(settings))
    with pytest.raises(ApiException) as forbidden:
        api.list_pods("other-tenant", pods.selector(settings), timeout=TIMEOUT)
    assert forbidden.value.status == 403
    assert json.loads(forbidden.value.body or "")["reason"] == "Forbidden"
    with pytest.raises(ApiException) as create:
        api.create_pod("other-tenant", held_pod(settings), timeout=TIMEOUT)
    assert create.value.status == 403
