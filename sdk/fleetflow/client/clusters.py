"""`client.clusters`: the clusters work runs on, as every tenant sees them, and (for platform
admins) creating them and rotating their agents' tokens."""

from __future__ import annotations

from collections.abc import Mapping

from fleetflow.api_models.clusters import ClusterCreated, ClusterPublic, ClusterTokenRotated
from fleetflow.client.transport import Transport, path_part

ClusterList = list[ClusterPublic]


class Clusters:
    """Clusters and their agents' tokens."""

    def __init__(self, transport: Transport):
        self._transport = transport

    def list(self) -> ClusterList:
        """Every cluster, by name: status (online/degraded/offline), agent version, last
        heartbeat, capacity and active attempts."""
        return self._transport.call("GET", "/api/v1/clusters", ClusterList)

    def get(self, name: str) -> ClusterPublic:
        """One cluster, as `list` shows it."""
        return self._transport.call("GET", f"/api/v1/clusters/{path_part(name)}", ClusterPublic)

    def create(self, name: str, labels: Mapping[str, str] | None = None) -> ClusterCreated:
        """Create a cluster; the answer's `agent_token` (for its agent's
        `FLEETFLOW_AGENT_TOKEN`) is shown this once and never again."""
        body = {"name": name, "labels": dict(labels or {})}
        return self._transport.call("POST", "/api/v1/admin/clusters", ClusterCreated, json=body)

    def rotate_token(self, name: str) -> ClusterTokenRotated:
        """Give a cluster a new agent token, returned this once; the old token stops working
        at once, so its agent must be restarted with the new one."""
        path = f"/api/v1/admin/clusters/{path_part(name)}/rotate-token"
        return self._transport.call("POST", path, ClusterTokenRotated)
