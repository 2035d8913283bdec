"""Agent configuration, read from `FLEETFLOW_AGENT_*` environment variables.

The cluster token is a `SecretStr` so it never appears in reprs or logs, and is best passed
through the environment rather than the command line, where `ps` would show it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_work_dir() -> Path:
    return Path.home() / ".fleetflow" / "agent"


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEETFLOW_AGENT_", extra="ignore")

    control_plane: str = Field(
        default="127.0.0.1:9090", description="host:port of the control plane's gRPC endpoint"
    )
    token: SecretStr = Field(description="the cluster's bearer token")
    work_dir: Path = Field(
        default_factory=_default_work_dir,
        description="attempts' working directories and logs, and undelivered status reports "
        "(reports/); keep it across restarts",
    )
    max_parallel: int = Field(default=4, ge=1, description="attempts run at the same time")
    lease_wait_seconds: int = Field(
        default=20, ge=0, description="how long one LeaseAttempts long-poll may wait"
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="labels placement can match, as a JSON object"
    )
    reconnect_initial_backoff_seconds: float = Field(default=0.5, gt=0)
    reconnect_max_backoff_seconds: float = Field(default=30.0, gt=0)
    kill_grace_seconds: float = Field(
        default=5.0, ge=0, description="between SIGTERM and SIGKILL when stopping an attempt"
    )
    simulated_gpus: dict[str, int] = Field(
        default_factory=dict,
        description="local-process executor: GPUs this machine claims by type, as a JSON "
        'object such as {"A100": 8}, to try GPU placement and quotas on a machine without '
        "GPUs (tasks run as ordinary processes; nothing is handed to them)",
    )
    log_upload_interval_seconds: float = Field(
        default=10.0,
        ge=0,
        description="how often running attempts' output is copied to the blob store for "
        "`fleetflow executions logs` (0: only when they end)",
    )
    shutdown_report_seconds: float = Field(
        default=5.0, ge=0, description="how long shutdown waits to deliver final reports"
    )
    max_buffered_reports: int = Field(
        default=10_000,
        ge=1,
        description="status reports kept on disk while the control plane is away",
    )
    # TLS to the control plane (data_plane_agent/tls.py). Plaintext only with `insecure` or to
    # a loopback address; otherwise TLS, trusting `tls_ca_file` or the default roots.
    tls_ca_file: Path | None = Field(
        default=None, description="CA(s) the control plane's certificate must chain to (PEM)"
    )
    tls_cert_file: Path | None = Field(
        default=None, description="client certificate (PEM), for a control plane requiring mTLS"
    )
    tls_key_file: Path | None = Field(default=None, description="the client certificate's key")
    tls_server_name: str | None = Field(
        default=None,
        description="name to verify the control plane's certificate against, instead of the "
        "host of control_plane",
    )
    insecure: bool = Field(default=False, description="dial the control plane in plaintext")
    attempt_dirs_keep_hours: float = Field(
        default=24.0,
        ge=0,
        description="local-process executor: how long a finished attempt's directory (code, "
        "log, result) is kept under work_dir/attempts/ before it is deleted",
    )
    attempt_dirs_max_gib: float = Field(
        default=5.0,
        ge=0,
        description="local-process executor: cap on all attempt directories together, in GiB; "
        "above it finished attempts' directories are deleted oldest first (0: no cap)",
    )
    executor: Literal["local-process", "kubernetes"] = Field(
        default="local-process",
        description="how attempts run: child processes of the agent, or one Kubernetes pod "
        "each (configured by the FLEETFLOW_AGENT_K8S_* settings)",
    )


def _default_gpu_tolerations() -> list[dict[str, Any]]:
    return [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


class KubernetesSettings(BaseSettings):
    """The Kubernetes executor's settings, from `FLEETFLOW_AGENT_K8S_*` variables."""

    model_config = SettingsConfigDict(env_prefix="FLEETFLOW_AGENT_K8S_", extra="ignore")

    kubeconfig: Path | None = Field(
        default=None,
        description="kubeconfig to use; unset: the in-cluster service account when running in "
        "a pod, else the default kubeconfig",
    )
    context: str | None = Field(default=None, description="kubeconfig context")
    agent_name: str = Field(
        default="default",
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="pods carry it as a label, so that two agents sharing a cluster never "
        "adopt each other's pods",
    )
    namespace_template: str = Field(
        default="fleetflow-{tenant}",
        description="namespace of a tenant's pods, `{tenant}` replaced by the tenant name",
    )
    namespaces: dict[str, str] = Field(
        default_factory=dict,
        description="tenant -> namespace, overriding namespace_template (JSON object)",
    )
    default_image: str = Field(
        default="fleetflow/task-runtime:0.1.0",
        description="image of tasks that name none; it must have fleetflow installed",
    )
    python: str = Field(default="python", description="interpreter inside the task image")
    service_account: str = Field(
        default="default", description="service account of task pods (its token not mounted)"
    )
    gpu_resource: str = Field(default="nvidia.com/gpu", description="extended resource of GPUs")
    gpu_product_label: str = Field(
        default="nvidia.com/gpu.product",
        description="node label naming the GPU product (set by NVIDIA GPU feature discovery)",
    )
    gpu_types: dict[str, str] = Field(
        default_factory=dict,
        description="node GPU product label value -> Fleetflow GPU type, e.g. "
        '{"NVIDIA-H100-80GB-HBM3": "H100"}; unlisted products lose a leading "NVIDIA-"',
    )
    gpu_tolerations: list[dict[str, Any]] = Field(
        default_factory=_default_gpu_tolerations,
        description="tolerations added to pods requesting GPUs (JSON list of tolerations)",
    )
    image_pull_grace_seconds: float = Field(
        default=120.0,
        ge=0,
        description="how long an image that cannot be pulled is retried before the attempt fails",
    )
    cleanup: Literal["delete", "keep-failed", "keep"] = Field(
        default="keep-failed",
        description="what happens to finished pods: deleted, failed ones kept, or all kept",
    )
    cleanup_delay_seconds: float = Field(
        default=300.0,
        ge=0,
        description="how long a finished pod is kept before cleanup deletes it (logs readable)",
    )
    resync_seconds: float = Field(
        default=5.0, gt=0, description="between reconciliations of pods, timers and capacity"
    )
    task_env: dict[str, str] = Field(
        default_factory=dict,
        description="environment of task containers, e.g. the blob store's endpoint (JSON)",
    )
    task_env_secret: str | None = Field(
        default=None,
        description="Secret in each tenant namespace whose keys become task environment "
        "variables (blob store credentials)",
    )
