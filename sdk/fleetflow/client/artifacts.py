"""`client.artifacts`: the blobs tasks produced (and executions were given), what produced
each, and their lineage upstream and downstream."""

from __future__ import annotations

from typing import Literal
from urllib.parse import quote

from fleetflow.api_models.artifacts import ArtifactLineage, ArtifactPublic
from fleetflow.client.transport import Transport

LineageDirection = Literal["upstream", "downstream", "both"]


def is_artifact_id(reference: str) -> bool:
    """Whether `reference` is an artifact id (`art-…`) rather than a blob URI."""
    return reference.startswith("art-") and "/" not in reference


class Artifacts:
    """Artifacts of the tenant the client acts in."""

    def __init__(self, transport: Transport):
        self._transport = transport

    def get(self, reference: str) -> ArtifactPublic:
        """The artifact with this id (`art-…`), or of the blob at this URI."""
        if is_artifact_id(reference):
            path = f"/api/v1/artifacts/{quote(reference, safe='')}"
            return self._transport.call("GET", path, ArtifactPublic)
        return self._transport.call(
            "GET", "/api/v1/artifacts", ArtifactPublic, params={"uri": reference}
        )

    def lineage(
        self,
        reference: str,
        direction: LineageDirection = "both",
        depth: int = 5,
        limit: int = 200,
    ) -> ArtifactLineage:
        """What the artifact (id or blob URI) was computed from and/or what was computed from
        it, `depth` levels deep, at most `limit` artifacts (`truncated` says when more exist).
        """
        artifact_id = reference if is_artifact_id(reference) else self.get(reference).id
        return self._transport.call(
            "GET",
            f"/api/v1/artifacts/{quote(artifact_id, safe='')}/lineage",
            ArtifactLineage,
            params={"direction": direction, "depth": depth, "limit": limit},
        )

    def of_execution(self, execution_id: str) -> list[ArtifactPublic]:
        """The artifacts an execution produced: its input blobs and what its tasks wrote."""
        path = f"/api/v1/executions/{quote(execution_id, safe='')}/artifacts"
        return self._transport.call("GET", path, list[ArtifactPublic])
