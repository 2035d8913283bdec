"""Pods as the Kubernetes executor builds and reads them (pure functions, no cluster)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from data_plane_agent.attempts import AttemptResources, TaskAssignment, TaskSecret
from data_plane_agent.executors import kubernetes_pods as pods
from data_plane_agent.settings import AgentSettings, KubernetesSettings
from fleetflow.states import AttemptState


@pytest.fixture(autouse=True)
def _clean_agent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FLEETFLOW_AGENT_"):
            monkeypatch.delenv(name)


def assignment(**changes: Any) -> TaskAssignment:
    values: dict[str, Any] = {
        "attempt_id": "att-0123456789abcdef0123456789abcdef",
        "fencing_token": 3,
        "execution_id": "exe-42",
        "node_id": "n1-train",
        "tenant": "vision",
        "task_module": "pipelines.train",
        "task_function": "train",
        "bundle_uri": "s3://bundles/abc.zip",
        "inputs_uri": "s3://runs/exe-42/n1/inputs.json",
        "outputs_uri": "s3://runs/exe-42/n1/outputs.json",
        "resources": AttemptResources(cpu=4, memory_bytes=16 * 2**30, gpu=8, gpu_type="H100"),
        "timeout_seconds": 3600,
        "image": "",
    }
    values.update(changes)
    return TaskAssignment(**values)


def test_pod_of_a_gpu_attempt() -> None:
    settings = KubernetesSettings(default_image="registry/runtime:1")
    pod = pods.pod_manifest(assignment(), settings)

    assert pod["metadata"]["name"] == "ff-att-0123456789abcdef0123456789abcdef-3"
    assert pod["metadata"]["namespace"] == "fleetflow-vision"
    labels = pod["metadata"]["labels"]
    assert labels["fleetflow.dev/attempt-id"] == "att-0123456789abcdef0123456789abcdef"
    assert labels["fleetflow.dev/execution-id"] == "exe-42"
    assert labels["fleetflow.dev/tenant"] == "vision"
    assert labels["fleetflow.dev/node-id"] == "n1-train"
    assert labels["fleetflow.dev/fencing-token"] == "3"
    assert pods.assignment_from_pod(pod) == assignment()

    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 3600
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100"}
    assert spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    (container,) = spec["containers"]
    assert container["image"] == "registry/runtime:1"
    assert container["resources"] == {
        "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "8"},
        "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "8"},
    }
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["command"][:3] == ["python", "-m", "fleetflow.runtime"]
    assert "--outputs-uri" in container["command"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["FLEETFLOW_ATTEMPT_ID"] == "att-0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    "resources",
    [
        AttemptResources(cpu=4, memory_bytes=16 * 2**30, gpu=8, gpu_type="H100"),
        AttemptResources(cpu=0.5, memory_bytes=2**30),
    ],
    ids=["gpu", "cpu"],
)
def test_task_pods_get_no_credentials_and_no_service_addresses(
    resources: AttemptResources,
) -> None:
    # A task's code is the tenant's: no service account token to call the Kubernetes API with,
    # and no `<SERVICE>_HOST` variables listing the services of its namespace.
    settings = KubernetesSettings(service_account="fleetflow-task", task_env={"A": "b"})
    spec = pods.pod_manifest(assignment(resources=resources), settings)["spec"]

    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    (container,) = spec["containers"]
    assert not any("serviceaccount" in m["mountPath"] for m in container["volumeMounts"])


def test_a_pod_with_presigned_urls_gets_no_blob_store_credentials() -> None:
    # The agent signed URLs for exactly this attempt's blobs: the store's keys stay with it,
    # even when the operator's task_env still carries them.
    settings = KubernetesSettings(
        task_env={
            "FLEETFLOW_S3_ENDPOINT": "s3.internal:9000",
            "FLEETFLOW_S3_ACCESS_KEY": "key",
            "FLEETFLOW_S3_SECRET_KEY": "secret",
            "AWS_SECRET_ACCESS_KEY": "secret",
            "HF_HOME": "/cache",
        }
    )
    (container,) = pods.pod_manifest(assignment(), settings, presigned='{"bundle": "u"}')["spec"][
        "containers"
    ]

    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["FLEETFLOW_PRESIGNED"] == '{"bundle": "u"}'
    assert not {
        "FLEETFLOW_S3_ACCESS_KEY",
        "FLEETFLOW_S3_SECRET_KEY",
        "AWS_SECRET_ACCESS_KEY",
    } & set(env)
    assert env["HF_HOME"] == "/cache" and env["FLEETFLOW_S3_ENDPOINT"] == "s3.internal:9000"
    assert container["command"][-3:] == ["--presigned", "--staged", pods.STAGED_DIR]

    plain = pods.pod_manifest(assignment(), settings)["spec"]["containers"][0]
    assert "--presigned" not in plain["command"]  # credentials mode (or a file:// store)


def test_a_pod_copies_its_units_checkpoint_in_and_back_itself() -> None:
    # No agent reaches into a pod's filesystem: the runtime is told where the unit's checkpoint
    # lives (presigned, it uses the manifest's URLs for it instead of the store's access).
    checkpoint = "s3://runs/exe-42/n1/checkpoint"
    settings = KubernetesSettings()
    for presigned in (None, '{"bundle": "u"}'):
        pod = pods.pod_manifest(
            assignment(checkpoint_uri=checkpoint), settings, presigned=presigned
        )
        command = pod["spec"]["containers"][0]["command"]
        at = command.index("--checkpoint-uri")
        assert command[at + 1] == checkpoint
        assert command[command.index("--checkpoint-dir") + 1] == pods.CHECKPOINT_DIR
        assert pods.CHECKPOINT_DIR.startswith(pods.WORK_DIR + "/")  # on the pod's volume

    plain = pods.pod_manifest(assignment(), settings)["spec"]["containers"][0]["command"]
    assert "--checkpoint-uri" not in plain and "--checkpoint-dir" not in plain


def test_cpu_pod_has_no_gpu_scheduling_and_task_image_wins() -> None:
    settings = KubernetesSettings(namespaces={"vision": "team-vision"})
    pod = pods.pod_manifest(
        assignment(
            resources=AttemptResources(cpu=0.5, memory_bytes=1536 * 2**20),
            image="my/image:2",
            timeout_seconds=0,
        ),
        settings,
    )
    assert pod["metadata"]["namespace"] == "team-vision"
    spec = pod["spec"]
    assert "nodeSelector" not in spec and "tolerations" not in spec
    assert "activeDeadlineSeconds" not in spec
    container = spec["containers"][0]
    assert container["image"] == "my/image:2"
    assert container["resources"]["limits"] == {"cpu": "500m", "memory": "1536Mi"}


def test_gpu_type_maps_to_every_product_of_that_type() -> None:
    settings = KubernetesSettings(
        gpu_types={"NVIDIA-H100-80GB-HBM3": "H100", "NVIDIA-H100-PCIe": "H100"},
        gpu_product_label="example.com/gpu",
    )
    spec = pods.pod_manifest(assignment(), settings)["spec"]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    (expression,) = terms["nodeSelectorTerms"][0]["matchExpressions"]
    assert expression == {
        "key": "example.com/gpu",
        "operator": "In",
        "values": ["NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe"],
    }
    assert pods.gpu_type_of_product("NVIDIA-A100", settings) == "A100"
    assert pods.gpu_type_of_product("NVIDIA-H100-PCIe", settings) == "H100"


def test_odd_ids_still_make_valid_names_and_labels() -> None:
    odd = assignment(attempt_id="Att_With/Odd:Chars" * 4, node_id="n" * 80)
    pod = pods.pod_manifest(odd, KubernetesSettings())
    name = pod["metadata"]["name"]
    assert len(name) <= 63 and name.startswith("ff-") and name.endswith("-3")
    assert pods.pod_name(odd.attempt_id, 3) == name  # deterministic
    assert pod["metadata"]["labels"]["fleetflow.dev/node-id"].startswith("h-")
    assert pod["metadata"]["annotations"]["fleetflow.dev/node-id"] == "n" * 80


def _pod(phase: str, **status: Any) -> dict[str, Any]:
    pod = pods.pod_manifest(assignment(), KubernetesSettings())
    pod["status"] = {"phase": phase, **status}
    return pod


def _terminated(**state: Any) -> list[dict[str, Any]]:
    return [{"name": "task", "image": "x", "state": {"terminated": state}}]


def test_pod_phases_become_attempt_states() -> None:
    settings = KubernetesSettings()
    assert pods.interpret_pod(_pod("Running"), settings).state is AttemptState.RUNNING
    assert pods.interpret_pod(_pod("Succeeded"), settings).state is AttemptState.SUCCEEDED

    failed = pods.interpret_pod(
        _pod(
            "Failed",
            containerStatuses=_terminated(
                exitCode=1, reason="Error", message="Traceback …\nValueError: bad input\n"
            ),
        ),
        settings,
    )
    assert failed.state is AttemptState.FAILED
    assert failed.message == "ValueError: bad input [task container exited with code 1 (Error)]"
    assert "Traceback" in failed.traceback

    oom = pods.interpret_pod(
        _pod("Failed", containerStatuses=_terminated(exitCode=137, reason="OOMKilled")), settings
    )
    assert oom.message == "OOMKilled: the task exceeded its memory limit of 16Gi"

    evicted = pods.interpret_pod(
        _pod("Failed", reason="Evicted", message="The node was low on resource: memory."),
        settings,
    )
    assert evicted.message == "pod evicted: The node was low on resource: memory."

    deadline = pods.interpret_pod(
        _pod("Failed", reason="DeadlineExceeded", message="Pod was active too long"), settings
    )
    assert deadline.message.startswith("timed out after 3600s")


def test_pending_pods_say_why_they_wait() -> None:
    settings = KubernetesSettings()
    unschedulable = pods.interpret_pod(
        _pod(
            "Pending",
            conditions=[
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
                }
            ],
        ),
        settings,
    )
    assert unschedulable.state is None
    assert unschedulable.message == (
        "no node with 8 free H100 (0/4 nodes are available: 4 Insufficient nvidia.com/gpu.)"
    )

    pulling = pods.interpret_pod(
        _pod(
            "Pending",
            containerStatuses=[
                {
                    "name": "task",
                    "image": "x",
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}},
                }
            ],
        ),
        settings,
    )
    assert pulling.state is None and pulling.waiting_since_problem == "ImagePullBackOff"
    assert pulling.message.startswith("cannot pull image fleetflow/task-runtime:0.1.0")

    invalid = pods.interpret_pod(
        _pod(
            "Pending",
            containerStatuses=[
                {"name": "task", "image": "x", "state": {"waiting": {"reason": "InvalidImageName"}}}
            ],
        ),
        settings,
    )
    assert invalid.state is AttemptState.FAILED


def test_capacity_is_allocatable_gpus_per_type_less_live_pod_requests() -> None:
    settings = KubernetesSettings()

    def node(name: str, product: str, gpus: int, *, ready: bool = True) -> dict[str, Any]:
        return {
            "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": product}},
            "status": {
                "allocatable": {"cpu": "64", "memory": "512Gi", "nvidia.com/gpu": str(gpus)},
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            },
        }

    running = _pod("Running")
    running["spec"]["nodeName"] = "h1"
    finished = _pod("Succeeded")
    finished["spec"]["nodeName"] = "h2"
    pending = _pod("Pending")  # not scheduled yet: counted against the type it asks for
    capacity = pods.cluster_capacity(
        [
            node("h1", "NVIDIA-H100", 8),
            node("h2", "NVIDIA-H100", 8),
            node("a1", "NVIDIA-A100", 4),
            node("down", "NVIDIA-A100", 4, ready=False),
        ],
        [running, finished, pending],
        settings,
    )
    assert {t: (g.allocatable, g.in_use) for t, g in capacity.gpus.items()} == {
        "H100": (16, 16),
        "A100": (4, 0),
    }
    assert capacity.cpu_allocatable == 192
    assert capacity.cpu_in_use == 8
    assert capacity.memory_bytes_in_use == 32 * 2**30


def test_node_essentials_give_the_same_capacity_as_whole_nodes() -> None:
    settings = KubernetesSettings()

    def node(name: str, *, ready: str = "True", unschedulable: bool = False) -> dict[str, Any]:
        return {
            "metadata": {
                "name": name,
                "labels": {"nvidia.com/gpu.product": "NVIDIA-H100", "kubernetes.io/os": "linux"},
                "managedFields": [{"manager": "kwok", "fieldsV1": {"f:status": {}}}],
            },
            "spec": {"unschedulable": unschedulable, "taints": [{"key": "nvidia.com/gpu"}]},
            "status": {
                "capacity": {"cpu": "96", "memory": "512Gi", "nvidia.com/gpu": "16"},
                "allocatable": {
                    "cpu": "95",
                    "memory": "500Gi",
                    "nvidia.com/gpu": "16",
                    "pods": "110",
                },
                "conditions": [
                    {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficient"},
                    {"type": "Ready", "status": ready, "lastHeartbeatTime": "2026-01-01T00:00:00Z"},
                ],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
            },
        }

    nodes = [node("h1"), node("h2", ready="False"), node("h3", unschedulable=True), node("h4")]
    nodes.append({"metadata": {"name": "bare"}})
    kept = [pods.node_essentials(n, settings) for n in nodes]
    running = _pod("Running")
    running["spec"]["nodeName"] = "h1"
    assert pods.cluster_capacity(kept, [running], settings) == pods.cluster_capacity(
        nodes, [running], settings
    )
    assert pods.cluster_capacity(kept, [], settings).gpus["H100"].allocatable == 32
    assert "managedFields" not in kept[0]["metadata"]
    assert kept[0]["metadata"]["labels"] == {"nvidia.com/gpu.product": "NVIDIA-H100"}


@pytest.mark.parametrize(
    ("text", "value"),
    [("4", 4), ("500m", 0.5), ("64Gi", 64 * 2**30), ("1e3", 1000), ("2k", 2000), (None, 0)],
)
def test_quantities(text: str | None, value: float) -> None:
    assert pods.parse_quantity(text) == value


def test_agent_settings_choose_the_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETFLOW_AGENT_TOKEN", "t")
    assert AgentSettings().executor == "local-process"
    monkeypatch.setenv("FLEETFLOW_AGENT_EXECUTOR", "kubernetes")
    monkeypatch.setenv("FLEETFLOW_AGENT_K8S_NAMESPACES", '{"vision": "team-vision"}')
    monkeypatch.setenv("FLEETFLOW_AGENT_K8S_CLEANUP", "delete")
    assert AgentSettings().executor == "kubernetes"
    k8s = KubernetesSettings()
    assert k8s.namespaces == {"vision": "team-vision"} and k8s.cleanup == "delete"


def test_a_pods_secrets_are_secret_key_refs_and_no_value_is_in_the_pod() -> None:
    value = "wandb-value-never-in-a-pod"
    secrets = (
        TaskSecret("wandb", "FLEETFLOW_SECRET_WANDB", value=value),
        TaskSecret(
            "registry",
            "FLEETFLOW_SECRET_REGISTRY",
            kubernetes_secret="registry-creds",
            kubernetes_key="token",
        ),
    )
    with_secrets = assignment(secrets=secrets)
    pod = pods.pod_manifest(with_secrets, KubernetesSettings(default_image="registry/runtime:1"))
    assert value not in str(pod)
    name = pod["metadata"]["name"]
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["FLEETFLOW_SECRET_WANDB"]["valueFrom"] == {
        "secretKeyRef": {"name": f"{name}-secrets", "key": "FLEETFLOW_SECRET_WANDB"}
    }
    assert env["FLEETFLOW_SECRET_REGISTRY"]["valueFrom"] == {
        "secretKeyRef": {"name": "registry-creds", "key": "token"}
    }
    # A restarted agent adopts the pod from its annotation, which holds no secret at all.
    assert pods.assignment_from_pod(pod) == assignment()

    created = {**pod, "metadata": {**pod["metadata"], "uid": "uid-1"}}
    secret = pods.attempt_secret_manifest(with_secrets, created)
    assert secret is not None
    assert secret["metadata"]["name"] == f"{name}-secrets"
    assert secret["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": "uid-1"}
    ]
    assert secret["stringData"] == {"FLEETFLOW_SECRET_WANDB": value}  # the reference is not in it
    only_refs = assignment(secrets=secrets[1:])
    assert pods.attempt_secret_manifest(only_refs, created) is None
