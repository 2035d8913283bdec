"""Pods as the Kubernetes executor writes and reads them: pure functions over plain dicts.

Everything here is deterministic and free of I/O, so the pod manifest, the meaning of a pod's
observed status and the capacity read from nodes are tested without a cluster:

- `pod_manifest` builds the one pod of an attempt: its deterministic name, the labels the
  agent finds it by, the assignment (for a restarted agent to adopt it) as an annotation,
  requests and limits, GPU node selection and tolerations, a restricted security context.
- `interpret_pod` maps a pod's phase and container states to what the agent reports:
  still pending (with a reason a person can act on), running, or ended with a reason.
- `cluster_capacity` sums allocatable GPUs per type over nodes, less what pods hold
  (`node_essentials`: the part of a node it reads).

Pods are handled as the JSON dicts the API server returns, not the client's model classes:
they are cheaper to parse and to keep (see `bench/k8s_executor.py`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from data_plane_agent.attempts import AttemptResources, TaskAssignment
from data_plane_agent.executors.base import runtime_command
from data_plane_agent.settings import KubernetesSettings
from fleetflow import presigned as presigned_env
from fleetflow.states import AttemptState

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "fleetflow-agent"
AGENT_LABEL = "fleetflow.dev/agent"
ATTEMPT_LABEL = "fleetflow.dev/attempt-id"
TOKEN_LABEL = "fleetflow.dev/fencing-token"
EXECUTION_LABEL = "fleetflow.dev/execution-id"
TENANT_LABEL = "fleetflow.dev/tenant"
NODE_LABEL = "fleetflow.dev/node-id"
GPU_TYPE_LABEL = "fleetflow.dev/gpu-type"
ASSIGNMENT_ANNOTATION = "fleetflow.dev/assignment"
TASK_ANNOTATION = "fleetflow.dev/task"
TASK_FUNCTION_ANNOTATION = "fleetflow.dev/task-function"
NODE_ANNOTATION = "fleetflow.dev/node-id"
TENANT_ANNOTATION = "fleetflow.dev/tenant"

CONTAINER = "task"
WORK_DIR = "/fleetflow"
RESULT_FILE = f"{WORK_DIR}/result.json"
CODE_DIR = f"{WORK_DIR}/code"
STAGED_DIR = f"{WORK_DIR}/staged"
CHECKPOINT_DIR = f"{WORK_DIR}/checkpoint"
BLOB_CREDENTIALS = frozenset(
    {
        "FLEETFLOW_S3_ACCESS_KEY",
        "FLEETFLOW_S3_SECRET_KEY",
        "FLEETFLOW_S3_SESSION_TOKEN",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    }
)
"""Variables of `task_env` a pod with presigned URLs does not get."""

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_IMAGE_PULL_FAILURES = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "RegistryUnavailable"}
)
# Waiting reasons that will not get better by waiting: the attempt fails at once.
_HOPELESS_WAITING = frozenset({"InvalidImageName"})
# Waiting reasons that may be transient (a Secret created late): failed after the grace.
_CONFIG_FAILURES = frozenset({"CreateContainerConfigError", "CreateContainerError"})


def selector(settings: KubernetesSettings) -> str:
    """The label selector of every pod this agent manages."""
    return f"{MANAGED_BY_LABEL}={MANAGED_BY},{AGENT_LABEL}={settings.agent_name}"


def namespace_for(tenant: str, settings: KubernetesSettings) -> str:
    """The namespace of a tenant's pods: an explicit mapping, else the template."""
    if tenant in settings.namespaces:
        return settings.namespaces[tenant]
    return settings.namespace_template.format(tenant=tenant)


def _short_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def label_value(value: str) -> str:
    """`value` if it is a valid label value, else a hash of it (labels are for selecting;
    the exact values are in annotations)."""
    if len(value) <= 63 and _LABEL_VALUE_RE.match(value):
        return value
    return f"h-{_short_hash(value)}"


def pod_name(attempt_id: str, fencing_token: int) -> str:
    """The one pod name of an attempt under one lease: creating it twice is `AlreadyExists`.

    The fencing token is part of it so that an attempt leased again (after it was lost) gets a
    fresh pod rather than adopting the superseded lease's.
    """
    stem = attempt_id.lower()
    name = f"ff-{stem}-{fencing_token}"
    if len(name) <= 63 and _NAME_RE.match(name):
        return name
    return f"ff-{_short_hash(attempt_id)}-{fencing_token}"


def gpu_type_of_product(product: str, settings: KubernetesSettings) -> str:
    """The Fleetflow GPU type of a node's GPU product label value (`NVIDIA-H100` -> `H100`)."""
    if product in settings.gpu_types:
        return settings.gpu_types[product]
    return product.removeprefix("NVIDIA-")


def products_of_gpu_type(
    gpu_type: str, settings: KubernetesSettings, known_products: Iterable[str] = ()
) -> list[str]:
    """Product label values a pod asking for `gpu_type` may run on: those configured or seen
    on nodes that map to it, else the conventional `NVIDIA-<type>`."""
    products = {p for p, t in settings.gpu_types.items() if t == gpu_type}
    products.update(p for p in known_products if gpu_type_of_product(p, settings) == gpu_type)
    return sorted(products) or [f"NVIDIA-{gpu_type}"]


def quantity_bytes(number_of_bytes: int) -> str:
    """Memory as a Kubernetes quantity, exact: `8Gi`, `1536Mi`, or plain bytes."""
    for unit, size in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if number_of_bytes % size == 0:
            return f"{number_of_bytes // size}{unit}"
    return str(number_of_bytes)


def quantity_cpu(cpu: float) -> str:
    """CPU as a Kubernetes quantity in millicores (`500m`, `4`)."""
    millis = max(1, round(cpu * 1000))
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


_QUANTITY_SUFFIXES = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
}


_QUANTITY_RE = re.compile(r"^([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def parse_quantity(value: str | int | float | None) -> float:
    """A Kubernetes quantity (`4`, `500m`, `64Gi`, `1e3`) as a number; 0 for none."""
    if value is None:
        return 0.0
    if isinstance(value, int | float):
        return float(value)
    match = _QUANTITY_RE.match(value.strip())
    if match is None or (match.group(2) and match.group(2) not in _QUANTITY_SUFFIXES):
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number, suffix = match.groups()
    return float(number) * (_QUANTITY_SUFFIXES[suffix] if suffix else 1)


def assignment_to_json(assignment: TaskAssignment) -> str:
    data = {
        "attempt_id": assignment.attempt_id,
        "fencing_token": assignment.fencing_token,
        "execution_id": assignment.execution_id,
        "node_id": assignment.node_id,
        "tenant": assignment.tenant,
        "task_module": assignment.task_module,
        "task_function": assignment.task_function,
        "bundle_uri": assignment.bundle_uri,
        "inputs_uri": assignment.inputs_uri,
        "outputs_uri": assignment.outputs_uri,
        "resources": {
            "cpu": assignment.resources.cpu,
            "memory_bytes": assignment.resources.memory_bytes,
            "gpu": assignment.resources.gpu,
            "gpu_type": assignment.resources.gpu_type,
        },
        "timeout_seconds": assignment.timeout_seconds,
        "image": assignment.image,
        "attempt_number": assignment.attempt_number,
        "map_index": assignment.map_index,
        "checkpoint_uri": assignment.checkpoint_uri,
    }
    if assignment.replicas > 1:  # a gang (`kubernetes_gang`); not written for one pod
        data["replicas"] = assignment.replicas
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def assignment_from_pod(pod: Mapping[str, Any]) -> TaskAssignment | None:
    """The assignment a pod was created for (from its annotation), or None if unreadable."""
    text = (pod.get("metadata", {}).get("annotations") or {}).get(ASSIGNMENT_ANNOTATION)
    if not text:
        return None
    try:
        data = json.loads(text)
        resources = AttemptResources(**data.pop("resources"))
        return TaskAssignment(resources=resources, **data)
    except (ValueError, TypeError, KeyError):
        return None


def pod_manifest(
    assignment: TaskAssignment,
    settings: KubernetesSettings,
    *,
    known_products: Iterable[str] = (),
    presigned: str | None = None,
) -> dict[str, Any]:
    """The pod that runs one attempt (see the module docstring).

    Args:
        presigned: The attempt's `FLEETFLOW_PRESIGNED` document: the pod then reads and writes
            blobs through its URLs only, and gets no blob store credentials from `task_env`.
    """
    resources = assignment.resources
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if resources.cpu > 0:
        requests["cpu"] = limits["cpu"] = quantity_cpu(resources.cpu)
    if resources.memory_bytes > 0:
        requests["memory"] = limits["memory"] = quantity_bytes(resources.memory_bytes)
    spec: dict[str, Any] = {}
    if resources.gpu > 0:
        # Extended resources: the request must equal the limit; the limit implies it.
        limits[settings.gpu_resource] = str(resources.gpu)
        requests[settings.gpu_resource] = str(resources.gpu)
        spec["tolerations"] = [dict(t) for t in settings.gpu_tolerations]
        if resources.gpu_type:
            products = products_of_gpu_type(resources.gpu_type, settings, known_products)
            if len(products) == 1:
                spec["nodeSelector"] = {settings.gpu_product_label: products[0]}
            else:
                spec["affinity"] = {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {
                                            "key": settings.gpu_product_label,
                                            "operator": "In",
                                            "values": products,
                                        }
                                    ]
                                }
                            ]
                        }
                    }
                }
    command = runtime_command(
        settings.python, assignment, result_file=RESULT_FILE, workdir=CODE_DIR
    )
    if assignment.checkpoint_uri:
        # No agent reaches into a pod: the runtime copies the checkpoint in and back itself.
        command += [
            "--checkpoint-dir",
            CHECKPOINT_DIR,
            "--checkpoint-uri",
            assignment.checkpoint_uri,
        ]
    task_env = dict(settings.task_env)
    if presigned is not None:
        command += ["--presigned", "--staged", STAGED_DIR]
        task_env = {k: v for k, v in task_env.items() if k not in BLOB_CREDENTIALS}
        task_env[presigned_env.ENV] = presigned
    env = [
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "FLEETFLOW_ATTEMPT_ID", "value": assignment.attempt_id},
        {"name": "FLEETFLOW_EXECUTION_ID", "value": assignment.execution_id},
        *({"name": k, "value": v} for k, v in sorted(task_env.items())),
        *secret_env(assignment),
    ]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": assignment.image or settings.default_image,
        "command": command,
        "env": env,
        "workingDir": WORK_DIR,
        "resources": {"requests": requests, "limits": limits},
        # A failed task's traceback goes to stderr: it becomes the termination message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": "work", "mountPath": WORK_DIR}],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if settings.task_env_secret:
        container["envFrom"] = [{"secretRef": {"name": settings.task_env_secret}}]
    spec.update(
        {
            "restartPolicy": "Never",
            "serviceAccountName": settings.service_account,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "runAsGroup": 1000,
                "fsGroup": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": [{"name": "work", "emptyDir": {}}],
        }
    )
    if assignment.timeout_seconds > 0:
        spec["activeDeadlineSeconds"] = assignment.timeout_seconds
    labels = {
        MANAGED_BY_LABEL: MANAGED_BY,
        AGENT_LABEL: settings.agent_name,
        ATTEMPT_LABEL: label_value(assignment.attempt_id),
        TOKEN_LABEL: str(assignment.fencing_token),
        EXECUTION_LABEL: label_value(assignment.execution_id),
        TENANT_LABEL: label_value(assignment.tenant),
        NODE_LABEL: label_value(assignment.node_id),
    }
    if resources.gpu > 0 and resources.gpu_type:
        labels[GPU_TYPE_LABEL] = label_value(resources.gpu_type)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(assignment.attempt_id, assignment.fencing_token),
            "namespace": namespace_for(assignment.tenant, settings),
            "labels": labels,
            "annotations": {
                ASSIGNMENT_ANNOTATION: assignment_to_json(assignment),
                TASK_ANNOTATION: f"{assignment.task_module}.{assignment.task_function}",
                TASK_FUNCTION_ANNOTATION: assignment.task_function,
                TENANT_ANNOTATION: assignment.tenant,
                NODE_ANNOTATION: assignment.node_id,
            },
        },
        "spec": spec,
    }


def attempt_secret_name(pod: str) -> str:
    """The Secret that holds the values of the attempt's secrets, beside its pod."""
    return f"{pod}-secrets"


def secret_env(assignment: TaskAssignment) -> list[dict[str, Any]]:
    """The task container's secret variables, each read by the kubelet from a Secret: a value
    secret from the attempt's own Secret (`attempt_secret_manifest`), a reference from the
    tenant's named Secret, which the agent never reads. No value is in the pod."""
    own = attempt_secret_name(pod_name(assignment.attempt_id, assignment.fencing_token))
    return [
        {
            "name": secret.env_var,
            "valueFrom": {
                "secretKeyRef": (
                    {"name": secret.kubernetes_secret, "key": secret.kubernetes_key}
                    if secret.is_reference
                    else {"name": own, "key": secret.env_var}
                )
            },
        }
        for secret in assignment.secrets
    ]


def attempt_secret_manifest(
    assignment: TaskAssignment, pod: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The Secret of the values of the attempt's secrets, owned by its pod (`pod`: as
    created, with its uid) so that it goes when the pod does; None when it has none."""
    values = {s.env_var: s.value for s in assignment.secrets if not s.is_reference}
    if not values:
        return None
    metadata = pod["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": attempt_secret_name(metadata["name"]),
            "namespace": metadata["namespace"],
            "labels": {
                MANAGED_BY_LABEL: MANAGED_BY,
                ATTEMPT_LABEL: label_value(assignment.attempt_id),
                TENANT_LABEL: label_value(assignment.tenant),
            },
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": metadata["name"],
                    "uid": metadata["uid"],
                }
            ],
        },
        # stringData: the API server encodes it; the agent never reads a Secret back.
        "stringData": values,
    }


# ------------------------------------------------------------------------------ observation


@dataclass(frozen=True)
class PodVerdict:
    """What one observation of a pod means for its attempt.

    Attributes:
        state: RUNNING, or the terminal state; None while the pod has not started.
        message: why it ended (terminal), or why it still waits (pending).
        traceback: the container's termination message (FallbackToLogsOnError: its log tail).
        waiting_since_problem: the waiting reason that fails the attempt once it has lasted
            the image pull grace (image pull or container config failures), else "".
    """

    state: AttemptState | None
    message: str = ""
    traceback: str = ""
    waiting_since_problem: str = ""


def _condition(pod: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in pod.get("status", {}).get("conditions") or ():
        if condition.get("type") == kind:
            return dict(condition)
    return None


def _container_status(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    for status in pod.get("status", {}).get("containerStatuses") or ():
        if status.get("name") == CONTAINER:
            return dict(status)
    statuses = pod.get("status", {}).get("containerStatuses") or ()
    return dict(statuses[0]) if statuses else {}


def unschedulable_message(
    resources: AttemptResources, scheduler_message: str, settings: KubernetesSettings
) -> str:
    """`no node with 8 free H100 (0/4 nodes are available: 4 Insufficient nvidia.com/gpu.)`"""
    if resources.gpu > 0:
        head = f"no node with {resources.gpu} free {resources.gpu_type or 'GPU'}"
    else:
        head = "no node can run the pod"
    return f"{head} ({scheduler_message.strip()})" if scheduler_message.strip() else head


def interpret_pod(pod: Mapping[str, Any], settings: KubernetesSettings) -> PodVerdict:
    """What the pod's status says about its attempt (see `PodVerdict`)."""
    status = pod.get("status", {}) or {}
    phase = status.get("phase") or "Pending"
    container = _container_status(pod)
    state = container.get("state") or {}
    terminated = state.get("terminated") or container.get("lastState", {}).get("terminated")
    if phase == "Succeeded":
        return PodVerdict(AttemptState.SUCCEEDED)
    if phase == "Failed":
        reason = status.get("reason") or ""
        message = status.get("message") or ""
        if reason == "Evicted":
            return PodVerdict(AttemptState.FAILED, f"pod evicted: {message or 'no reason given'}")
        if reason == "DeadlineExceeded":
            deadline = pod.get("spec", {}).get("activeDeadlineSeconds")
            return PodVerdict(AttemptState.FAILED, f"timed out after {deadline}s ({message})")
        if terminated:
            return _terminated_verdict(terminated, pod)
        return PodVerdict(
            AttemptState.FAILED, f"pod failed: {reason or 'no reason'} {message}".strip()
        )
    if phase == "Running":
        if terminated and state.get("terminated"):
            # The container ended and the pod phase will follow; judge it now.
            if terminated.get("exitCode", 1) == 0:
                return PodVerdict(AttemptState.RUNNING)
            return _terminated_verdict(terminated, pod)
        return PodVerdict(AttemptState.RUNNING)
    # Pending (or Unknown): why it has not started yet.
    waiting = state.get("waiting") or {}
    waiting_reason = waiting.get("reason") or ""
    waiting_message = waiting.get("message") or ""
    if waiting_reason in _HOPELESS_WAITING:
        return PodVerdict(
            AttemptState.FAILED,
            f"image {container.get('image') or '?'} cannot be pulled: {waiting_reason}: "
            f"{waiting_message}".rstrip(": "),
        )
    if waiting_reason in _IMAGE_PULL_FAILURES:
        image = _pod_image(pod)
        return PodVerdict(
            None,
            f"cannot pull image {image}: {waiting_reason} {waiting_message}".strip(),
            waiting_since_problem=waiting_reason,
        )
    if waiting_reason in _CONFIG_FAILURES:
        return PodVerdict(
            None,
            f"container cannot be created: {waiting_reason} {waiting_message}".strip(),
            waiting_since_problem=waiting_reason,
        )
    scheduled = _condition(pod, "PodScheduled")
    if scheduled and scheduled.get("status") == "False":
        if scheduled.get("reason") == "Unschedulable":
            assignment = assignment_from_pod(pod)
            resources = assignment.resources if assignment else AttemptResources()
            return PodVerdict(
                None, unschedulable_message(resources, scheduled.get("message") or "", settings)
            )
        return PodVerdict(None, f"not scheduled yet: {scheduled.get('message') or ''}".strip())
    if waiting_reason:
        return PodVerdict(None, f"starting: {waiting_reason}")
    if not pod.get("spec", {}).get("nodeName"):
        return PodVerdict(None, "waiting for the scheduler")
    return PodVerdict(None, "starting")


def _pod_image(pod: Mapping[str, Any]) -> str:
    for container in pod.get("spec", {}).get("containers") or ():
        if container.get("name") == CONTAINER:
            return str(container.get("image") or "?")
    return "?"


def _terminated_verdict(terminated: Mapping[str, Any], pod: Mapping[str, Any]) -> PodVerdict:
    reason = terminated.get("reason") or ""
    code = terminated.get("exitCode")
    text = (terminated.get("message") or "").strip()
    if reason == "OOMKilled":
        limit = ""
        for container in pod.get("spec", {}).get("containers") or ():
            if container.get("name") == CONTAINER:
                limit = container.get("resources", {}).get("limits", {}).get("memory", "")
        return PodVerdict(
            AttemptState.FAILED,
            "OOMKilled: the task exceeded its memory limit" + (f" of {limit}" if limit else ""),
            text,
        )
    message = f"task container exited with code {code}" + (f" ({reason})" if reason else "")
    # The runtime's last stderr line is the exception (`ValueError: …`); say it first.
    last_line = _last_exception_line(text)
    if last_line:
        message = f"{last_line} [{message}]"
    return PodVerdict(AttemptState.FAILED, message, text)


def _last_exception_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1].strip()
    return last if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b", last) else ""


def pod_finished_at(pod: Mapping[str, Any]) -> dt.datetime | None:
    """When a finished pod ended (its container's finish time, else its last condition)."""
    terminated = (_container_status(pod).get("state") or {}).get("terminated") or {}
    stamps = [terminated.get("finishedAt")]
    stamps += [c.get("lastTransitionTime") for c in pod.get("status", {}).get("conditions") or ()]
    parsed = [_parse_time(s) for s in stamps if s]
    known = [p for p in parsed if p is not None]
    return max(known) if known else None


def _parse_time(value: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def is_terminal_phase(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status", {}) or {}).get("phase") in ("Succeeded", "Failed")


# -------------------------------------------------------------------------------- capacity


@dataclass
class GpuTotals:
    allocatable: int = 0
    in_use: int = 0


@dataclass
class ClusterCapacity:
    """What the cluster's schedulable nodes offer and what this agent's pods hold of it."""

    cpu_allocatable: float = 0.0
    cpu_in_use: float = 0.0
    memory_bytes_allocatable: int = 0
    memory_bytes_in_use: int = 0
    gpus: dict[str, GpuTotals] = field(default_factory=dict)


def node_is_schedulable(node: Mapping[str, Any]) -> bool:
    if node.get("spec", {}).get("unschedulable"):
        return False
    ready = next(
        (c for c in node.get("status", {}).get("conditions") or () if c.get("type") == "Ready"),
        None,
    )
    return ready is not None and ready.get("status") == "True"


def node_essentials(node: Mapping[str, Any], settings: KubernetesSettings) -> dict[str, Any]:
    """The part of a node that `cluster_capacity` and the GPU product list read, in the node's
    own shape: its name, GPU product label, schedulability, Ready condition and allocatable
    CPU, memory and GPUs. The executor keeps every node between resyncs; the rest (managed
    fields, addresses, images, heartbeats: kilobytes a node) it does not need."""
    metadata = node.get("metadata", {})
    status = node.get("status", {})
    product = (metadata.get("labels") or {}).get(settings.gpu_product_label)
    allocatable = status.get("allocatable") or {}
    essentials: dict[str, Any] = {
        "metadata": {
            "name": metadata.get("name", ""),
            "labels": {settings.gpu_product_label: product} if product else {},
        },
        "spec": {},
        "status": {
            "allocatable": {
                key: allocatable[key]
                for key in ("cpu", "memory", settings.gpu_resource)
                if key in allocatable
            },
            "conditions": [
                {"type": "Ready", "status": c.get("status")}
                for c in status.get("conditions") or ()
                if c.get("type") == "Ready"
            ][:1],
        },
    }
    if node.get("spec", {}).get("unschedulable"):
        essentials["spec"]["unschedulable"] = True
    return essentials


def pod_requests(pod: Mapping[str, Any], settings: KubernetesSettings) -> tuple[float, int, int]:
    """CPU, memory bytes and GPUs a pod requests (sum over its containers)."""
    cpu = memory = gpus = 0.0
    for container in pod.get("spec", {}).get("containers") or ():
        resources = container.get("resources") or {}
        requests = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        cpu += parse_quantity(requests.get("cpu"))
        memory += parse_quantity(requests.get("memory"))
        gpus += parse_quantity(requests.get(settings.gpu_resource))
    return cpu, int(memory), int(gpus)


def cluster_capacity(
    nodes: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    settings: KubernetesSettings,
) -> ClusterCapacity:
    """Allocatable CPU, memory and GPUs per type of the schedulable nodes, less the requests of
    the given non-terminal pods (on those nodes, or not scheduled yet: then counted against
    the GPU type they ask for)."""
    capacity = ClusterCapacity()
    node_types: dict[str, str] = {}
    for node in nodes:
        if not node_is_schedulable(node):
            continue
        name = node.get("metadata", {}).get("name", "")
        allocatable = node.get("status", {}).get("allocatable") or {}
        capacity.cpu_allocatable += parse_quantity(allocatable.get("cpu"))
        capacity.memory_bytes_allocatable += int(parse_quantity(allocatable.get("memory")))
        gpus = int(parse_quantity(allocatable.get(settings.gpu_resource)))
        product = (node.get("metadata", {}).get("labels") or {}).get(settings.gpu_product_label)
        if gpus > 0 and product:
            gpu_type = gpu_type_of_product(product, settings)
            node_types[name] = gpu_type
            capacity.gpus.setdefault(gpu_type, GpuTotals()).allocatable += gpus
    for pod in pods:
        if is_terminal_phase(pod):
            continue
        cpu, memory, gpus = pod_requests(pod, settings)
        capacity.cpu_in_use += cpu
        capacity.memory_bytes_in_use += memory
        if gpus <= 0:
            continue
        node_name = pod.get("spec", {}).get("nodeName")
        labels = pod.get("metadata", {}).get("labels") or {}
        held_type = node_types.get(node_name or "") or labels.get(GPU_TYPE_LABEL)
        if held_type and held_type in capacity.gpus:
            capacity.gpus[held_type].in_use += gpus
    return capacity
