"""Agent configuration, read from `FLEETFLOW_AGENT_*` environment variables.

The cluster token is a `SecretStr` so it never appears in reprs or logs. It is best read from
a file only its owner may read (`token_file`, refused otherwise, as ssh refuses a private
key), or from standard input (`token_file` `-`); `FLEETFLOW_AGENT_TOKEN` still works, and is
removed from the environment once read (`load_agent_settings`). Never on the command line,
where every local user sees it in `ps`.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from data_plane_agent.hardening import forget_token_environment
from fleetflow.errors import FleetflowError

TOKEN_FROM_STDIN = "-"
"""`token_file` value meaning: read the token from standard input."""


class AgentTokenError(FleetflowError):
    """The cluster token cannot be used: its file is missing, empty or readable by others, or
    it was given in two ways at once."""


def read_token_file(path: str | Path) -> str:
    """The token in `path` (surrounding whitespace dropped), or on standard input for `-`.

    Raises:
        AgentTokenError: The file cannot be read, is empty, or is open to its group or to
            others (any of the mode bits 077, as ssh refuses a private key).
    """
    if str(path) == TOKEN_FROM_STDIN:
        token = sys.stdin.readline().strip()
        if not token:
            raise AgentTokenError("the token file is standard input (-), and it gave no token")
        return token
    path = Path(path).expanduser()
    try:
        with open(path, encoding="utf-8") as handle:
            mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
            if mode & 0o077:
                raise AgentTokenError(
                    f"the token file {path} is open to its group or to others (mode {mode:04o}): "
                    f"other users can read the cluster token. Make it readable by its owner "
                    f"only: chmod 600 {path}"
                )
            token = handle.read().strip()
    except OSError as exc:
        raise AgentTokenError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
    if not token:
        raise AgentTokenError(f"the token file {path} is empty")
    return token


def _default_work_dir() -> Path:
    return Path.home() / ".fleetflow" / "agent"


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEETFLOW_AGENT_", extra="ignore")

    control_plane: str = Field(
        default="127.0.0.1:9090", description="host:port of the control plane's gRPC endpoint"
    )
    token: SecretStr = Field(description="the cluster's bearer token")
    token_file: Path | None = Field(
        default=None,
        description="file holding the cluster's bearer token, readable by its owner only "
        "(mode 600); `-` reads it from standard input. Preferred to token",
    )
    work_dir: Path = Field(
        default_factory=_default_work_dir,
        description="attempts' working directories and logs, and undelivered status reports "
        "(reports/); keep it across restarts",
    )
    max_parallel: int = Field(
        default=16,
        ge=1,
        description="attempts run at the same time (within the capacity their requests take)",
    )
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
    task_uids: str = Field(
        default="auto",
        pattern=r"^(auto|off|\d+(-\d+)?)$",
        description="local-process executor: the uids tasks run as, one per running attempt, "
        "as FIRST-LAST; auto: 50000-59999 when the agent is root, else the agent's own user; "
        "off: the agent's own user (refused for root: tasks never run as root)",
    )
    task_python: str | None = Field(
        default=None,
        description="local-process executor: the Python tasks run with (default: the agent's, "
        "or a system Python of the same version when the task users cannot run the agent's)",
    )
    sandbox_dir: Path | None = Field(
        default=None,
        description="local-process executor: where running attempts' sandboxes go, one "
        "directory per agent (default: work_dir/sandboxes, or a directory in the system's temp "
        "directory when task users cannot reach the work dir)",
    )
    warm_runtime: bool = Field(
        default=True,
        description="local-process executor: start attempts from the warm task runtime, a "
        "fork server that has imported the task runtime once (`fleetflow.forkserver`), in "
        "milliseconds instead of a new interpreter's start and imports each (0.3-0.5 s); false: "
        "a new `python -m fleetflow.runtime` process per attempt, as tasks also start while "
        "the fork server cannot",
    )
    executor: Literal["local-process", "kubernetes"] = Field(
        default="local-process",
        description="how attempts run: child processes of the agent, or one Kubernetes pod "
        "each (configured by the FLEETFLOW_AGENT_K8S_* settings)",
    )

    @model_validator(mode="before")
    @classmethod
    def _token_from_file(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("token_file") in (None, ""):
            return data
        if data.get("token") not in (None, ""):
            raise AgentTokenError(
                "the cluster token is given twice: as a token file and as FLEETFLOW_AGENT_TOKEN "
                "or --token; give only the token file"
            )
        return {**data, "token": read_token_file(data["token_file"])}


def load_agent_settings(**overrides: Any) -> AgentSettings:
    """The agent's settings from `overrides` (None: not given) and the environment; then
    `FLEETFLOW_AGENT_TOKEN` is removed from `os.environ`, so that nothing the agent starts
    inherits the token.

    Raises:
        pydantic.ValidationError: A setting is missing or invalid.
        AgentTokenError: The token file cannot be used.
    """
    settings = AgentSettings(**{k: v for k, v in overrides.items() if v is not None})
    forget_token_environment()
    return settings


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
    blob_access: Literal["presigned", "credentials"] = Field(
        default="presigned",
        description="how task pods reach the blob store: presigned, URLs the agent signs per "
        "attempt for exactly its inputs and outputs (S3 only; blob store credentials in "
        "task_env are then not passed on); credentials, the task's own (task_env, "
        "task_env_secret)",
    )
    task_env_secret: str | None = Field(
        default=None,
        description="Secret in each tenant namespace whose keys become task environment "
        "variables (blob store credentials)",
    )
