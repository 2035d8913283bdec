"""Where the control plane keeps things in the blob store: the one place blob keys are made,
and read back.

Everything a tenant owns lives below `tenants/<tenant>/`: its code bundles, its uploads, and its
executions' inputs, task attempts' documents and files, and outputs. So a key's first two
segments say whose it is, for the control plane's checks, for an agent staging inputs, and for
any store-level policy an operator adds (a bucket policy per prefix). Executions created before
this layout keep their `executions/<id>/` keys (the legacy layout, named so below);
`TenantBlobs` still knows them by their execution's owner.

    tenants/<tenant>/bundles/<sha256>.tar.gz
    tenants/<tenant>/uploads/files/<sha256>/<name>
    tenants/<tenant>/uploads/dirs/<upload id>/<path>
    tenants/<tenant>/executions/<id>/inputs.json, outputs.json
    tenants/<tenant>/executions/<id>/<node>/outputs.json          (a map node's, collected)
    tenants/<tenant>/executions/<id>/<node>/chunk-<k>/outputs.json  (a map chunk's part of it)
    tenants/<tenant>/executions/<id>/<node>[/<map index>]/<attempt>/inputs.json, outputs.json
    tenants/<tenant>/executions/<id>/<node>[/<map index>]/checkpoint/checkpoint.bin,
                                                                  directory.tar  (a unit's)
    executions/<id>/...                                            (legacy)
"""

from __future__ import annotations

_TENANTS = "tenants"
_LEGACY_EXECUTIONS = "executions"
_CHECKPOINT = "checkpoint"


def tenant_prefix(tenant: str) -> str:
    """Where a tenant's bundles, uploads and executions live: one tenant's never answer for
    another's."""
    return f"{_TENANTS}/{tenant}"


def in_tenant_space(key: str, tenant: str) -> bool:
    """Whether a (normalised) key lies below the tenant's own space."""
    return key.split("/")[:2] == [_TENANTS, tenant]


def bundle_key(tenant: str, digest: str) -> str:
    """Blob key of the tenant's bundle with this sha256."""
    return f"{tenant_prefix(tenant)}/bundles/{digest}.tar.gz"


def uploads_prefix(tenant: str) -> str:
    """Below it: the files and directories the tenant uploaded as execution inputs."""
    return f"{tenant_prefix(tenant)}/uploads"


def upload_file_key(tenant: str, digest: str, name: str) -> str:
    """An uploaded file input, content-addressed by its sha256."""
    return f"{uploads_prefix(tenant)}/files/{digest}/{name}"


def upload_directory_prefix(tenant: str, upload_id: str) -> str:
    """An uploaded directory input: its files lie below, at their relative paths."""
    return f"{uploads_prefix(tenant)}/dirs/{upload_id}"


def executions_prefix(tenant: str) -> str:
    """Below it: every execution of the tenant."""
    return f"{tenant_prefix(tenant)}/executions"


def execution_prefix(tenant: str, execution_id: str) -> str:
    """Below it: the execution's inputs and outputs documents, and per node its collected
    outputs (map nodes) and its attempts' prefixes (`<node>/<attempt>`)."""
    return f"{executions_prefix(tenant)}/{execution_id}"


def input_blob_prefixes(tenant: str) -> tuple[str, ...]:
    """Where the files an execution input names may lie: the tenant's uploads and its
    executions' outputs, and (legacy) the executions created before this layout."""
    return uploads_prefix(tenant), executions_prefix(tenant), _LEGACY_EXECUTIONS


def legacy_execution_prefix(execution_id: str) -> str:
    """Where an execution created before this layout keeps its blobs."""
    return f"{_LEGACY_EXECUTIONS}/{execution_id}"


def legacy_execution_id(key: str) -> str | None:
    """The execution a (normalised) key below the legacy `executions/<id>/` layout belongs
    to; None for any other key."""
    parts = key.split("/")
    return parts[1] if len(parts) > 2 and parts[0] == _LEGACY_EXECUTIONS else None


def node_prefix(execution_prefix: str, node_id: str) -> str:
    """Below an execution's prefix (either layout): one node's collected outputs and its
    attempts."""
    return f"{execution_prefix}/{node_id}"


def chunk_prefix(node_prefix: str, chunk: int) -> str:
    """Where a map chunk workflow puts its part of the node's collected outputs."""
    return f"{node_prefix}/chunk-{chunk}"


def attempt_prefix(
    execution_prefix: str, node_id: str, map_index: int | None, attempt_number: int
) -> str:
    """One attempt of a node (of one element of a map node): its inputs and outputs documents
    and the files its task writes."""
    unit = node_prefix(execution_prefix, node_id)
    if map_index is not None:
        unit = f"{unit}/{map_index}"
    return f"{unit}/{attempt_number}"


def checkpoint_uri(attempt_outputs_uri: str, attempt_number: int) -> str:
    """Where the unit of the attempt whose outputs document is `attempt_outputs_uri` (a node,
    or one element of a map node: `<unit>/<attempt number>/outputs.json`) keeps its checkpoint:
    `<unit>/checkpoint`, beside its attempts and shared by them only. Empty when the location
    is not of that form (nothing is guessed).
    """
    head, _, document = attempt_outputs_uri.rpartition("/")
    unit, _, number = head.rpartition("/")
    if document != "outputs.json" or number != str(attempt_number) or not unit:
        return ""
    return f"{unit}/{_CHECKPOINT}"


def inputs_key(prefix: str) -> str:
    """The inputs document of an execution or an attempt."""
    return f"{prefix}/inputs.json"


def outputs_key(prefix: str) -> str:
    """The outputs document of an execution, a node (collected) or an attempt."""
    return f"{prefix}/outputs.json"
