"""Task secrets in Kubernetes pods: a value secret becomes a Secret of the attempt, owned by its
pod; a reference names the tenant's own Secret, which the agent never reads (the API server's
audit log shows no get, list or watch of a Secret by it, and its Role has none). The pod holds
no value: its variables are `secretKeyRef`s. kwok runs nothing, so the test runs the pod's
command (`tests.k8s.kubelet`) with the variables a kubelet would resolve."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from kubernetes import client as k8s

from fleetflow.bundle import build_bundle
from fleetflow.loader import load_workflow
from tests.k8s.conftest import AGENT_ACCOUNT, AGENT_NAMESPACE, CLUSTER_A, TENANT_NAMESPACE, K8sStack
from tests.k8s.kubelet import run_pod
from tests.k8s.test_kubernetes_tier import client, finished, wait_for, wait_pods

pytestmark = pytest.mark.k8s

WORKFLOWS = Path(__file__).parent / "workflows" / "pod_secrets.py"
VALUE = "wandb-value-5e4d3c2b1a-in-a-pod"
REF_VALUE = "registry-token-kept-in-the-cluster"
AGENT_USER = f"system:serviceaccount:{AGENT_NAMESPACE}:{AGENT_ACCOUNT}"


def test_pod_secrets_are_references_and_the_agent_reads_none(
    k8s_stack: K8sStack, tmp_path: Path
) -> None:
    cluster = k8s_stack.clusters[CLUSTER_A]
    core = cluster.core()
    core.create_namespaced_secret(
        TENANT_NAMESPACE,
        {"metadata": {"name": "registry-creds"}, "stringData": {"token": REF_VALUE}},
    )
    wf, root = load_workflow(WORKFLOWS, "secrets_in_pods")
    digest, data = build_bundle(root)
    with client(k8s_stack) as api:
        api.secrets.create("wandb", VALUE)
        api.secrets.create_reference("registry", "registry-creds", "token")
        api.workflows.upload_bundle(digest, data)
        version = api.workflows.register_spec(wf.spec, digest).version
        execution_id = str(api.executions.create(wf.spec.name, {}, version=version).id)

    def running(found: list[k8s.V1Pod]) -> bool:
        return any(p.status.phase == "Running" for p in found)

    (pod,) = wait_pods(k8s_stack, CLUSTER_A, running, timeout=90, **{"execution-id": execution_id})
    name = pod.metadata.name
    env = {e.name: e for e in pod.spec.containers[0].env}
    wandb = env["FLEETFLOW_SECRET_WANDB"].value_from.secret_key_ref
    registry = env["FLEETFLOW_SECRET_REGISTRY"].value_from.secret_key_ref
    assert (wandb.name, wandb.key) == (f"{name}-secrets", "FLEETFLOW_SECRET_WANDB")
    assert (registry.name, registry.key) == ("registry-creds", "token")
    as_text = str(core.api_client.sanitize_for_serialization(pod))
    assert VALUE not in as_text and REF_VALUE not in as_text  # env, annotations, command

    # The attempt's Secret holds only the value secret, and goes with its pod.
    own = core.read_namespaced_secret(f"{name}-secrets", TENANT_NAMESPACE)
    assert set(own.data) == {"FLEETFLOW_SECRET_WANDB"}
    (owner,) = own.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid) == ("Pod", name, pod.metadata.uid)

    outcome = run_pod(core, pod, tmp_path)
    assert outcome.returncode == 0, outcome.stderr
    final = wait_for(k8s_stack, execution_id, finished, what="execution end")
    assert final.status == "SUCCEEDED", k8s_stack.logs()
    with client(k8s_stack) as api:
        output = api.executions.outputs(execution_id, wf)
    assert output == hashlib.sha256(f"{VALUE}|{REF_VALUE}".encode()).hexdigest()

    # What the agent did with Secrets, as the API server recorded it: it created its
    # attempt's Secret, and never read one. Refused requests read nothing (the tier's
    # confinement test makes one on purpose with the agent's credentials).
    by_agent = [
        e
        for e in cluster.secret_requests()
        if e["user"]["username"] == AGENT_USER and e.get("responseStatus", {}).get("code", 0) < 400
    ]
    assert {(e["verb"], e["objectRef"].get("name")) for e in by_agent} == {
        ("create", f"{name}-secrets")
    }, by_agent
    review = k8s.AuthorizationV1Api(cluster.api()).create_subject_access_review(
        {
            "spec": {
                "user": AGENT_USER,
                "resourceAttributes": {
                    "namespace": TENANT_NAMESPACE,
                    "verb": "get",
                    "resource": "secrets",
                    "name": "registry-creds",
                },
            }
        }
    )
    assert review.status.allowed is False
