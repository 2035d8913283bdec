"""Which blobs a tenant may read: what an input may name, an output may serve, and an agent
may stage for a task, all checked alike.

A tenant may read what lies below its own space (`tenants/<tenant>/`: its bundles, uploads and
executions) and below the `executions/<id>/` prefix of one of its own executions (the layout
before executions moved into the tenant's space). A key is normalised first: a `..` or an
escaped one never climbs out of where it seems to be.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from control_plane.blob_layout import in_tenant_space, legacy_execution_id
from control_plane.db.models import Tenant
from control_plane.db.repositories.executions import get_execution
from fleetflow.errors import FleetflowError
from fleetflow.storage import BlobStore, relative_key


class Refused(Exception):
    """A blob URI its tenant may not read."""


class TenantBlobs:
    """Whether blob URIs are a tenant's to read: below its own space (its uploads), or below
    one of its executions' prefixes (each execution looked up once). What an output may serve
    and what an input may name (`services/executions.py`), and what an agent stages
    (`agent_api`) are checked alike."""

    def __init__(self, session: Session, tenant: Tenant, blobs: BlobStore) -> None:
        self._session = session
        self._tenant = tenant
        self._root = blobs.root_uri
        self._executions: dict[str, bool] = {}

    def check(self, uri: str) -> None:
        """Raise `Refused` unless the tenant may read `uri` (a `..` in it never may)."""
        try:
            key = relative_key(uri, self._root)
        except FleetflowError:
            raise Refused(f"{uri} is not in this control plane's blob store") from None
        if in_tenant_space(key, self._tenant.name):
            return
        execution_id = legacy_execution_id(key)
        if execution_id is not None and self._owns(execution_id):
            return
        raise Refused(f"{uri} belongs to another tenant")

    def _owns(self, execution_id: str) -> bool:
        if execution_id not in self._executions:
            found = get_execution(self._session, self._tenant.id, execution_id)
            self._executions[execution_id] = found is not None
        return self._executions[execution_id]
