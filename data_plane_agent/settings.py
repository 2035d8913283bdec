"""Agent configuration, read from `FLEETFLOW_AGENT_*` environment variables.

The cluster token is a `SecretStr` so it never appears in reprs or logs, and is best passed
through the environment rather than the command line, where `ps` would show it.
"""

from __future__ import annotations

from pathlib import Path

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
