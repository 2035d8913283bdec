"""Control-plane configuration: one pydantic-settings class per subsystem, `FLEETFLOW_` prefix."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from control_plane.auth.throttle import AuthLockout, LimitsStore, ThrottleStore
from control_plane.placement import Strategy
from control_plane.secrets_crypto import (
    SecretBox,
    SecretsConfigError,
    ensure_key_file,
    generate_key,
    read_key_file,
)

DEFAULT_HOME = Path.home() / ".fleetflow"


class DatabaseSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEETFLOW_DATABASE_", extra="ignore")

    url: str = Field(
        default=f"sqlite:///{DEFAULT_HOME / 'fleetflow.db'}",
        description="SQLAlchemy URL: sqlite:///path or postgresql+psycopg://user:pw@host/db",
    )


class TemporalSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEETFLOW_TEMPORAL_", extra="ignore")

    address: str = "127.0.0.1:7233"
    namespace: str = "default"
    task_queue: str = "fleetflow-executions"
    # Workflows the worker keeps in memory between tasks (see make_worker in
    # control_plane/orchestration/temporal.py): use e.g. 1000, as `fleetflow dev up` does.
    max_cached_workflows: int = Field(default=0, ge=0)
    # Bounds on one workflow's history (Temporal refuses one past 51,200 events): a map node
    # of more elements runs as chunk child workflows of at most this many each, and an
    # execution's workflow continues as new past this many events (workflows.py).
    map_chunk: int = Field(default=1000, ge=1, le=5000)
    continue_after_events: int = Field(default=10_000, ge=100, le=40_000)
    # The server never moves a gone worker's workflows off its sticky queue (the Temporal
    # test server): when a cached worker is replaced, restart every RUNNING execution's
    # workflow (services/sticky_recovery.py). One worker process only; dev up sets it.
    sticky_recovery: bool = False


class BlobSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEETFLOW_BLOB_", extra="ignore")

    root: str = Field(
        default=(DEFAULT_HOME / "blobs").as_uri(),
        description="file:///path, or s3://bucket/prefix (S3 settings: FLEETFLOW_S3_*, "
        "fleetflow.storage.s3.S3Settings)",
    )


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEETFLOW_API_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8080
    default_tenant: str = Field(
        default="default", description="the bootstrap platform admin's home tenant"
    )
    # First start (no user yet): the platform admin `admin` is created with this token, or a
    # new one written to bootstrap_token_file (0600) and never logged.
    bootstrap_token: SecretStr | None = Field(
        default=None, description="token for the first platform admin (e.g. from a Secret)"
    )
    bootstrap_token_file: Path = Field(
        default=DEFAULT_HOME / "admin-token",
        description="where a generated first platform-admin token is written",
    )
    # Request limits (control_plane/api/limits.py), kept where FLEETFLOW_LIMITS_STORE says
    # (LimitsSettings: shared by replicas on PostgreSQL). 0 turns a limit off.
    rate_limit_per_second: float = Field(
        default=100.0, ge=0, description="authenticated requests a second, per tenant"
    )
    rate_limit_burst: int = Field(
        default=400, ge=1, description="requests a tenant may send at once above its rate"
    )
    auth_failures_burst: int = Field(
        default=200,
        ge=1,
        description="refused API tokens one client address may send before it is locked out",
    )
    auth_failures_per_second: float = Field(
        default=1.0, ge=0, description="how fast an address earns back refused tries (0: off)"
    )
    auth_lockout_seconds: float = Field(
        default=60.0, gt=0, description="how long a locked-out address may not authenticate"
    )
    max_json_body_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="largest JSON request body (413 above; bundles and uploads have their own)",
    )
    max_workflow_nodes: int = Field(
        default=10_000, ge=1, description="most nodes (and tasks) a registered workflow may have"
    )
    idempotency_key_ttl_seconds: float = Field(
        default=24 * 3600,
        gt=0,
        description="how long an execution's Idempotency-Key dedupes retries; older keys are "
        "purged and may be used again",
    )


class GrpcSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEETFLOW_GRPC_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 9090
    # Longest a LeaseAttempts long-poll is held open.
    max_lease_wait_seconds: int = 30
    heartbeat_interval_seconds: int = 5
    # After the control plane starts, how long agents may take to reconnect before their
    # clusters count as silent: the agents' longest reconnect backoff plus a margin.
    agent_reconnect_allowance_seconds: int = 35
    # TLS for agents (control_plane/agent_api/tls.py): without these files or `insecure`, the
    # service refuses to listen on anything but a loopback address.
    tls_cert_file: Path | None = Field(default=None, description="server certificate (PEM)")
    tls_key_file: Path | None = Field(default=None, description="its private key (PEM)")
    tls_client_ca_file: Path | None = Field(
        default=None, description="CA(s) agents' client certificates must chain to: mutual TLS"
    )
    insecure: bool = Field(default=False, description="serve agents in plaintext on purpose")
    # Brute-force protection of agent tokens (control_plane/auth/throttle.py), kept where
    # FLEETFLOW_LIMITS_STORE says (LimitsSettings).
    auth_failures_burst: int = Field(
        default=50, ge=1, description="refused agent tokens one address may send before lockout"
    )
    auth_failures_per_second: float = Field(
        default=0.2, ge=0, description="how fast an address earns back refused tries (0: off)"
    )
    auth_lockout_seconds: float = Field(
        default=60.0, gt=0, description="how long a locked-out address may not authenticate"
    )

    def auth_lockout(self, store: ThrottleStore | None = None) -> AuthLockout:
        """The agent-token lockout, in `store` (default: this process's memory)."""
        return AuthLockout(
            burst=self.auth_failures_burst,
            per_second=self.auth_failures_per_second,
            lockout_seconds=self.auth_lockout_seconds,
            scope="grpc.auth",
            store=store,
        )

    @property
    def heartbeat_grace(self) -> timedelta:
        return heartbeat_grace(self.heartbeat_interval_seconds)


class LimitsSettings(BaseSettings):
    """Where the REST rate limits and the brute-force lockouts (REST and gRPC) keep their
    state (control_plane/auth/throttle.py)."""

    model_config = SettingsConfigDict(env_prefix="FLEETFLOW_LIMITS_", extra="ignore")

    store: LimitsStore | None = Field(
        default=None,
        description="memory: each process its own (N replicas allow N times the rates and "
        "tries); database: shared by every replica on the database. Unset: database on "
        "PostgreSQL, memory on SQLite (one process)",
    )


def heartbeat_grace(heartbeat_interval_seconds: float) -> timedelta:
    """An agent silent this long is offline: nothing is placed on its cluster, and what it
    held is lost and runs elsewhere."""
    return timedelta(seconds=3 * heartbeat_interval_seconds)


class PlacementSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEETFLOW_PLACEMENT_", extra="ignore")

    strategy: Strategy = Field(
        default=Strategy.SPREAD,
        description="spread: the cluster with the most free capacity; binpack: the one with "
        "the least that still fits (control_plane/placement/policy.py)",
    )


class SchedulerSettings(BaseSettings):
    """Placement passes (control_plane/scheduling/scheduler.py)."""

    model_config = SettingsConfigDict(env_prefix="FLEETFLOW_SCHEDULER_", extra="ignore")

    reserve_after_seconds: float = Field(
        default=300.0,
        ge=0,
        le=7 * 24 * 3600,
        description="an attempt waiting longer than this gets capacity reserved on one "
        "cluster, which later small tasks may only backfill into what does not delay it "
        "(control_plane/placement/reservations.py); 0: never reserve",
    )

    @property
    def reserve_after(self) -> timedelta | None:
        return timedelta(seconds=self.reserve_after_seconds) if self.reserve_after_seconds else None


class MetricsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEETFLOW_METRICS_", extra="ignore")

    # A process serving the REST API has /metrics there; a worker on its own has none unless
    # this port is set (its finished-executions counter lives in that process).
    worker_port: int | None = Field(
        default=None, description="serve a lone worker's metrics at http://HOST:PORT/metrics"
    )
    worker_host: str = "127.0.0.1"
    token: SecretStr | None = Field(
        default=None,
        description="bearer token /metrics requires (it names tenants); unset: open, for "
        "a scraper on a private network",
    )


class NotifySettings(BaseSettings):
    """Webhook notifications of executions' terminal states (services/notifications.py)."""

    model_config = SettingsConfigDict(env_prefix="FLEETFLOW_NOTIFY_", extra="ignore")

    allow_private: bool = Field(
        default=False,
        description="allow webhook URLs whose host is (or resolves to) a loopback, private, "
        "link-local or otherwise non-public address; off: tenants cannot reach the platform's "
        "own network through a webhook",
    )
    api_url: str | None = Field(
        default=None,
        description="the REST API's base URL as receivers should read it (the `url` of an "
        "event); unset: http://<api host>:<api port>",
    )
    connect_timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    read_timeout_seconds: float = Field(
        default=5.0, gt=0, le=120, description="a receiver slower than this fails the attempt"
    )
    max_attempts: int = Field(default=8, ge=1, le=50)
    backoff_base_seconds: float = Field(default=2.0, gt=0, le=600)
    backoff_max_seconds: float = Field(default=600.0, gt=0, le=24 * 3600)
    concurrency: int = Field(default=32, ge=1, le=1000, description="deliveries in flight")
    per_tenant_concurrency: int = Field(
        default=4, ge=1, le=1000, description="deliveries of one tenant in flight"
    )
    poll_interval_seconds: float = Field(default=1.0, gt=0, le=60)


class SecretsSettings(BaseSettings):
    """The keys tenant secrets are encrypted under at rest (control_plane/secrets_crypto.py)."""

    model_config = SettingsConfigDict(env_prefix="FLEETFLOW_SECRETS_", extra="ignore")

    keys: SecretStr | None = Field(
        default=None,
        description="comma-separated Fernet keys: the first encrypts, all decrypt (rotation: "
        "prepend a new key, then `fleetflow admin secrets rotate`)",
    )
    key_file: Path | None = Field(
        default=None,
        description="a file of keys, one a line, first encrypts; unset on SQLite: "
        "`secrets-keys` beside the database, generated on first start",
    )

    def box(self, database_url: str) -> SecretBox:
        """The keys as a `SecretBox`.

        Raises:
            SecretsConfigError: no key is configured for a PostgreSQL database (a production
                control plane), or a key is malformed.
        """
        if self.keys is not None and self.keys.get_secret_value().strip():
            keys = [k for k in self.keys.get_secret_value().split(",") if k.strip()]
            return SecretBox(keys)
        if self.key_file is not None:
            if self.key_file.exists() or not database_url.startswith("sqlite"):
                return SecretBox(read_key_file(self.key_file))
            return SecretBox(ensure_key_file(self.key_file))
        if not database_url.startswith("sqlite"):
            raise SecretsConfigError(
                "the control plane needs a key for tenant secrets: set FLEETFLOW_SECRETS_KEYS "
                "(make one with `fleetflow admin secrets generate-key`) or "
                "FLEETFLOW_SECRETS_KEY_FILE (docs/admin.md, Secrets)"
            )
        database = make_url(database_url).database
        if not database or database == ":memory:":
            # Secrets die with an in-memory database: so may their key.
            return SecretBox([generate_key()])
        return SecretBox(ensure_key_file(Path(database).parent / "secrets-keys"))


class Settings(BaseSettings):
    """All control-plane settings. Sub-settings read their own `FLEETFLOW_<SUBSYSTEM>_*`."""

    model_config = SettingsConfigDict(env_prefix="FLEETFLOW_", extra="ignore")

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    blob: BlobSettings = Field(default_factory=BlobSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    grpc: GrpcSettings = Field(default_factory=GrpcSettings)
    placement: PlacementSettings = Field(default_factory=PlacementSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    secrets: SecretsSettings = Field(default_factory=SecretsSettings)

    @property
    def limits_store(self) -> LimitsStore:
        """`limits.store`, else `database` on PostgreSQL (where replicas may share the
        database) and `memory` on the embedded SQLite (one process)."""
        if self.limits.store is not None:
            return self.limits.store
        return "database" if self.database.url.startswith("postgresql") else "memory"
