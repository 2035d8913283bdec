"""Workflow versions: registered specs with the code bundle they run.

A (tenant, name, version) names one immutable spec + bundle. Registering the same content again
is a no-op that returns the existing row, so `fleetflow register` and `fleetflow run --remote`
can register on every invocation.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.db.models import WorkflowVersion, new_id, utcnow
from control_plane.db.repositories._insert import insert_ignoring_conflicts
from fleetflow.ir import WorkflowSpec


class WorkflowVersionConflictError(Exception):
    """The version already exists with a different spec or bundle; versions are immutable."""

    def __init__(self, name: str, version: str) -> None:
        self.name = name
        self.version = version
        super().__init__(
            f"workflow {name} version {version} is already registered with a different spec or "
            "code bundle; versions are immutable, register under a new version"
        )


def default_version(spec: WorkflowSpec, bundle_digest: str) -> str:
    """Content-derived version: the first 12 hex chars of sha256(spec digest + bundle digest)."""
    return hashlib.sha256((spec.digest() + bundle_digest).encode()).hexdigest()[:12]


def _same_content(row: WorkflowVersion, spec: WorkflowSpec, bundle_digest: str) -> bool:
    if row.bundle_digest != bundle_digest:
        return False
    return WorkflowSpec.model_validate(row.spec).digest() == spec.digest()


def _find(session: Session, tenant_id: str, name: str, version: str) -> WorkflowVersion | None:
    return session.scalar(
        select(WorkflowVersion).where(
            WorkflowVersion.tenant_id == tenant_id,
            WorkflowVersion.name == name,
            WorkflowVersion.version == version,
        )
    )


def register_workflow_version(
    session: Session,
    tenant_id: str,
    spec: WorkflowSpec,
    bundle_digest: str,
    version: str | None,
) -> WorkflowVersion:
    """Register `spec` with its code bundle under `version` (default: content-derived).

    Idempotent: the same spec and bundle under the same version returns the existing row.

    Raises:
        WorkflowVersionConflictError: the version exists with a different spec or bundle.
    """
    version = version or default_version(spec, bundle_digest)
    existing = _find(session, tenant_id, spec.name, version)
    if existing is None:
        insert_ignoring_conflicts(
            session,
            WorkflowVersion,
            {
                "id": new_id("wf"),
                "tenant_id": tenant_id,
                "name": spec.name,
                "version": version,
                "spec": spec.model_dump(mode="json"),
                "bundle_digest": bundle_digest,
                "created_at": utcnow(),
            },
        )
        existing = _find(session, tenant_id, spec.name, version)
        assert existing is not None, "the insert or a concurrent one created it"
    if not _same_content(existing, spec, bundle_digest):
        raise WorkflowVersionConflictError(spec.name, version)
    return existing


def get_workflow_version(
    session: Session, tenant_id: str, name: str, version: str | None
) -> WorkflowVersion | None:
    """One version of workflow `name`; the most recently registered one when `version` is None.

    Re-registering existing content does not make it the latest: the row keeps its creation time.
    """
    if version is not None:
        return _find(session, tenant_id, name, version)
    return session.scalar(
        select(WorkflowVersion)
        .where(WorkflowVersion.tenant_id == tenant_id, WorkflowVersion.name == name)
        .order_by(WorkflowVersion.created_at.desc(), WorkflowVersion.id.desc())
        .limit(1)
    )


def list_workflow_versions(
    session: Session,
    tenant_id: str,
    *,
    name: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[WorkflowVersion]:
    """The tenant's workflow versions by name, newest version first within a name."""
    query = select(WorkflowVersion).where(WorkflowVersion.tenant_id == tenant_id)
    if name is not None:
        query = query.where(WorkflowVersion.name == name)
    query = query.order_by(
        WorkflowVersion.name, WorkflowVersion.created_at.desc(), WorkflowVersion.id.desc()
    )
    return list(session.scalars(query.limit(limit).offset(offset)))
