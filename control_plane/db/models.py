"""SQLAlchemy models: the control plane's durable state.

The schema is created only by the alembic migrations in `migrations/`; these classes must match
them (a test compares the two). State columns are written only through
`control_plane.lifecycle.transitions`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """Readable, unique ids: `ex-3f2a…`, `at-…`."""
    return f"{prefix}-{uuid.uuid4().hex}"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Cluster(Base):
    """A Kubernetes cluster (or dev box) served by one agent, which authenticates by token."""

    __tablename__ = "clusters"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    agent_version: Mapped[str | None] = mapped_column(String(64))
    # Last reported capacity, as the agent sent it (see agent.proto Capacity).
    capacity: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_heartbeat_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WorkflowVersion(Base):
    """One registered version of a workflow spec, with the code bundle it runs."""

    __tablename__ = "workflow_specs"
    __table_args__ = (UniqueConstraint("tenant_id", "name", "version"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(256))
    version: Mapped[str] = mapped_column(String(128))
    spec: Mapped[dict[str, Any]]
    bundle_digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Execution(Base):
    __tablename__ = "executions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    workflow_spec_id: Mapped[str] = mapped_column(ForeignKey("workflow_specs.id"))
    status: Mapped[str] = mapped_column(String(16), index=True)  # ExecutionState
    inputs: Mapped[dict[str, Any]]  # JSON literals by input name
    outputs: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Why it failed: {"node_id", "attempt_id", "message", "traceback"}.
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Higher runs first when tenants compete for capacity (placement/admission.py).
    priority: Mapped[int] = mapped_column(Integer, default=0)
    # When its first task was admitted: from then on it counts as running against its
    # tenant's max_running_executions until it finishes.
    admitted_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # A child execution: the execution, and its node, that runs it (a reference to a
    # registered workflow, `ir.TaskSpec.reference`); NULL for one the API started.
    parent_execution_id: Mapped[str | None] = mapped_column(String(64), index=True)
    parent_node_id: Mapped[str | None] = mapped_column(String(128))
    # Started again from another execution of the tenant (`services/executions.py`): a
    # relaunch (same inputs), or a recovery, which reuses the outputs of the source's nodes
    # that succeeded (`ExecutionActivities._create_units`); NULL for one launched afresh.
    relaunched_from: Mapped[str | None] = mapped_column(String(64))
    recovered_from: Mapped[str | None] = mapped_column(String(64))
    # Its notification rules (`fleetflow.api_models.notifications.NotificationRule` as JSON,
    # its own or its launch plan's); NULL: none. Reaching a terminal state queues their
    # deliveries in the same transaction (`db/repositories/notifications.py`).
    notifications: Mapped[list[Any] | None] = mapped_column(JSON)
    # The principal (name) whose API call launched, relaunched or recovered it; NULL for one
    # a schedule, a parent execution or a release older than this column started.
    launched_by: Mapped[str | None] = mapped_column(String(128), index=True)
    # Its workflow hears of a plain success only when it needs to (`hold_finishes`,
    # `ExecutionActivities.quiet_finishes`); false for one begun by a release before that.
    quiet_finishes: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    workflow: Mapped[WorkflowVersion] = relationship(lazy="joined")
    attempts: Mapped[list[TaskAttempt]] = relationship(
        back_populates="execution", order_by="TaskAttempt.created_at", lazy="selectin"
    )


class TaskAttempt(Base):
    """One try of one node of an execution, leased by one cluster's agent."""

    __tablename__ = "task_attempts"
    __table_args__ = (
        UniqueConstraint("execution_id", "node_id", "map_index", "attempt_number"),
        # Placement reads the oldest PENDING attempts: in order from the index, not sorted.
        Index("ix_task_attempts_status_created_at", "status", "created_at"),
        # Placement reads what finished on a cluster lately (`_freed_since_heartbeat`).
        Index("ix_task_attempts_cluster_id_finished_at", "cluster_id", "finished_at"),
        # The finish notifier's outbox: finished attempts not yet signalled, oldest first.
        Index(
            "ix_task_attempts_unsignalled",
            "finished_at",
            sqlite_where=text("signalled_at IS NULL AND finished_at IS NOT NULL"),
            postgresql_where=text("signalled_at IS NULL AND finished_at IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    execution_id: Mapped[str] = mapped_column(ForeignKey("executions.id"), index=True)
    node_id: Mapped[str] = mapped_column(String(128))
    # Element of a map node this attempt runs; NO_MAP_INDEX for ordinary nodes.
    map_index: Mapped[int] = mapped_column(Integer, default=-1)
    task_name: Mapped[str] = mapped_column(String(256))
    attempt_number: Mapped[int] = mapped_column(Integer)
    # Born SUCCEEDED from the task cache: nothing was dispatched.
    cache_hit: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16))  # AttemptState
    cluster_id: Mapped[str | None] = mapped_column(ForeignKey("clusters.id"))
    # The GPU type placement chose among the task's acceptable ones (sent to the agent).
    gpu_type: Mapped[str | None] = mapped_column(String(64))
    # What the attempt holds while active, recorded when placed: quota and usage accounting.
    gpu: Mapped[int] = mapped_column(Integer, default=0)
    cpu: Mapped[float] = mapped_column(Float, default=0.0)
    memory_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # GPUs of it beyond its tenant's nominal quota in its cohort, recorded when placed
    # (`control_plane/cohorts.py`): work on borrowed quota, which may be preempted. 0: none.
    borrowed_gpus: Mapped[int] = mapped_column(Integer, default=0)
    # Bumped on every lease; reports carrying an older token are rejected.
    fencing_token: Mapped[int] = mapped_column(Integer, default=0)
    # SHA-256 (hex) of the current lease's report secret, which only its agent was sent;
    # reports must carry the secret. NULL: never leased, or leased before secrets existed.
    report_secret_sha256: Mapped[str | None] = mapped_column(String(64))
    # Highest report sequence applied; older or repeated reports are ignored.
    last_report_sequence: Mapped[int] = mapped_column(Integer, default=0)
    inputs_uri: Mapped[str] = mapped_column(Text)
    outputs_uri: Mapped[str] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    error_traceback: Mapped[str | None] = mapped_column(Text)
    # Why a PENDING/LEASED attempt is not running yet ("quota: …", "unschedulable: …");
    # cleared when it starts.
    pending_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When the terminal state was delivered to the execution's workflow (an outbox: a
    # finished attempt with no value here is signalled again until it is delivered).
    signalled_at: Mapped[datetime | None]
    # The Temporal workflow waiting for this attempt: a map chunk's (`<execution>/<node>/
    # chunk-<k>`); NULL for the execution's own workflow, whose id is the execution id.
    workflow_id: Mapped[str | None] = mapped_column(String(400))
    leased_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    execution: Mapped[Execution] = relationship(back_populates="attempts")


class TaskCacheEntry(Base):
    """Outputs of a cacheable task, by hash of (task, cache_version, interface, inputs)."""

    __tablename__ = "task_cache"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    task_name: Mapped[str] = mapped_column(String(256))
    cache_version: Mapped[str] = mapped_column(String(128))
    outputs_uri: Mapped[str] = mapped_column(Text)
    source_attempt_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DynamicTask(Base):
    """A task that a dynamic task's sub-DAG runs and its workflow version's spec does not
    list, recorded when the sub-DAG is accepted (`orchestration/activities.py`,
    `expand_dynamic`): placement and leasing read a task's spec here when the version's spec
    lacks it. Keyed like a version's tasks: the same bundle gives a task one spec."""

    __tablename__ = "dynamic_tasks"

    workflow_spec_id: Mapped[str] = mapped_column(ForeignKey("workflow_specs.id"), primary_key=True)
    task_name: Mapped[str] = mapped_column(String(256), primary_key=True)
    spec: Mapped[dict[str, Any]]  # the `ir.TaskSpec`
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Principal(Base):
    """A user or service account. It belongs to one home tenant; roles (in casbin) say what
    it may do where."""

    __tablename__ = "principals"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # "user" | "service"
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    created_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """A principal's bearer token, stored only as its SHA-256."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    principal_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]


class CasbinRule(Base):
    """The table of the `sqlalchemy-adapter` casbin adapter (its columns, our migration)."""

    __tablename__ = "casbin_rule"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ptype: Mapped[str | None] = mapped_column(String(255))
    v0: Mapped[str | None] = mapped_column(String(255))
    v1: Mapped[str | None] = mapped_column(String(255))
    v2: Mapped[str | None] = mapped_column(String(255))
    v3: Mapped[str | None] = mapped_column(String(255))
    v4: Mapped[str | None] = mapped_column(String(255))
    v5: Mapped[str | None] = mapped_column(String(255))

    def __str__(self) -> str:  # the adapter loads policy lines through str()
        values = (self.v0, self.v1, self.v2, self.v3, self.v4, self.v5)
        return ", ".join([self.ptype or ""] + [v for v in values if v is not None])


class TenantQuota(Base):
    """A tenant's limits; NULL (or an absent row) means unlimited."""

    __tablename__ = "tenant_quotas"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    gpu: Mapped[int | None] = mapped_column(Integer)
    gpu_per_type: Mapped[dict[str, Any]] = mapped_column(default=dict)
    cpu: Mapped[float | None] = mapped_column(Float)
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    max_running_executions: Mapped[int | None] = mapped_column(Integer)
    max_running_tasks: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ClusterGrant(Base):
    """A tenant may place work on a cluster (by name; "*" grants every cluster)."""

    __tablename__ = "cluster_grants"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    cluster: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEntry(Base):
    """Who changed what, when: every admin and policy change."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(256))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class IdempotencyKey(Base):
    """A client's `Idempotency-Key` on execution creation: the same key (within a tenant) and
    the same request get the execution the first request created. The primary key makes two
    concurrent requests with one key create one execution."""

    __tablename__ = "idempotency_keys"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # sha256 of the request (canonical JSON): a reused key with another request is refused.
    request_hash: Mapped[str] = mapped_column(String(64))
    execution_id: Mapped[str] = mapped_column(ForeignKey("executions.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ThrottleBucket(Base):
    """A token bucket of the rate limits or the brute-force lockout, shared by control-plane
    replicas (control_plane/auth/throttle_db.py). Times are seconds since the epoch on the
    database's clock, so replicas with skewed clocks agree. A row whose bucket has refilled is
    the same as no row, and is purged."""

    __tablename__ = "throttle_buckets"

    scope: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    # The answer of the last take: RETURNING sees only the new row, and tokens alone cannot
    # tell "granted, 0.5 left" from "refused at 0.5".
    granted: Mapped[bool] = mapped_column(Boolean)


class ThrottleLockout(Base):
    """An address locked out after too many refused tokens, until `locked_until` (seconds
    since the epoch, database clock); expired rows are purged."""

    __tablename__ = "throttle_lockouts"

    scope: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    locked_until: Mapped[float] = mapped_column(Float)


class LaunchPlan(Base):
    """A workflow version with fixed and default inputs, a priority, labels and an optional
    schedule (`fleetflow.api_models.launch_plans`). One row per (tenant, name): creating a plan
    again under its name replaces it (a new id) while it is inactive."""

    __tablename__ = "launch_plans"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    workflow_spec_id: Mapped[str] = mapped_column(ForeignKey("workflow_specs.id"))
    fixed_inputs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    default_inputs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # `ScheduleSpec` as JSON; NULL: launched by hand only.
    schedule: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    labels: Mapped[dict[str, Any]] = mapped_column(default=dict)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    # Its Temporal Schedule exists (active) and is paused (paused).
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Notification rules every execution it launches carries; NULL: none.
    notifications: Mapped[list[Any] | None] = mapped_column(JSON)

    workflow: Mapped[WorkflowVersion] = relationship(lazy="joined")


class NotificationDelivery(Base):
    """The outbox of webhook notifications: one row per rule an execution's terminal state
    fired, written in the transaction that committed that state, and sent (again, with
    backoff) by `services/notifications.py` until delivered or given up. `next_attempt_at` is
    also the claim: a sender pushes it past its own deadline before sending, so one replica
    sends a row at a time and a crashed sender's row is due again after it."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        UniqueConstraint("execution_id", "rule_index", "state"),
        Index("ix_notification_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    execution_id: Mapped[str] = mapped_column(ForeignKey("executions.id"), index=True)
    rule_index: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))  # NotifyOn
    url: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(16))
    # The event (`services/notifications.py` renders it as the rule's format).
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16))  # DeliveryStatus
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class NotificationSigningKey(Base):
    """A tenant's webhook signing key (HMAC-SHA256), made at its first use and replaced by a
    rotation. Kept as is, not hashed: the control plane signs with it."""

    __tablename__ = "notification_signing_keys"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Artifact(Base):
    """A blob (a `File`, `Directory`, ndarray or DataFrame value) and what produced it: the
    attempt of a node (and map element) of an execution, with its task's name and digest; or,
    for a blob an execution was given as an input, the execution itself (node `inputs`, no
    attempt). One row per (tenant, uri): the first producer recorded is the producer, and a
    blob reused later (a cache hit, a recovery, a task returning its input) links back to it.
    The id is derived from (tenant, uri), so recording twice writes nothing twice
    (`services/lineage.py`)."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("tenant_id", "uri"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    uri: Mapped[str] = mapped_column(String(1024))
    kind: Mapped[str] = mapped_column(String(16))  # file | directory | array | dataframe
    execution_id: Mapped[str] = mapped_column(String(64), index=True)
    node_id: Mapped[str] = mapped_column(String(256))
    attempt_id: Mapped[str | None] = mapped_column(String(64))
    # The element of a map node whose attempt produced it; NULL for any other node.
    element_index: Mapped[int | None] = mapped_column(Integer)
    task_name: Mapped[str | None] = mapped_column(String(256))
    # sha256 of the task's spec (`ir.TaskSpec`) and of the execution's code bundle.
    task_digest: Mapped[str | None] = mapped_column(String(64))
    # Where in the outputs (or inputs) it sits: `model`, `o0[2]`, `result.weights`.
    output_name: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ArtifactInput(Base):
    """An edge of the lineage graph: the artifact was computed from the blob `input_uri`
    (given to its attempt as input `input_name`). Edges name blobs by URI, so recording one
    needs no lookup; the blob's own artifact is found by (tenant, uri) when the graph is
    read."""

    __tablename__ = "artifact_inputs"
    __table_args__ = (Index("ix_artifact_inputs_tenant_id_input_uri", "tenant_id", "input_uri"),)

    artifact_id: Mapped[str] = mapped_column(ForeignKey("artifacts.id"), primary_key=True)
    input_name: Mapped[str] = mapped_column(String(512), primary_key=True)
    input_uri: Mapped[str] = mapped_column(String(1024), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))


class Secret(Base):
    """A tenant's named secret (`fleetflow.api_models.secrets`): a value encrypted at rest
    (`kind` "value": `ciphertext` under the key `key_id`, control_plane/secrets_crypto.py), or
    a reference to a Kubernetes Secret in the tenant's namespace of the cluster a task runs on
    (`kind` "kubernetes_ref": no value here at all). One row per (tenant, name)."""

    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(32))
    ciphertext: Mapped[str | None] = mapped_column(Text)
    key_id: Mapped[str | None] = mapped_column(String(32))
    kubernetes_secret: Mapped[str | None] = mapped_column(String(253))
    kubernetes_key: Mapped[str | None] = mapped_column(String(253))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


DEFAULT_PREEMPTION_GRACE_SECONDS = 30
"""A cohort's grace for its preempted attempts unless an admin sets another."""


class Cohort(Base):
    """A set of tenants that lend each other idle GPU quota (`control_plane/cohorts.py`)."""

    __tablename__ = "cohorts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # How long a preempted attempt of a member has between SIGTERM and the kill.
    preemption_grace_seconds: Mapped[int] = mapped_column(
        Integer, default=DEFAULT_PREEMPTION_GRACE_SECONDS
    )


class CohortMember(Base):
    """A tenant's membership of its cohort (at most one): per GPU type its nominal quota and
    borrowing limit (`shares`: {gpu_type: {"nominal": n, "borrowing_limit": m or null}}), and
    whether its higher-priority work may preempt its own lower-priority work."""

    __tablename__ = "cohort_members"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    cohort_id: Mapped[str] = mapped_column(ForeignKey("cohorts.id"), index=True)
    shares: Mapped[dict[str, Any]] = mapped_column(default=dict)
    preempt_within_tenant: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
