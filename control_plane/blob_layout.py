"""Where the control plane keeps things in the blob store: the one place blob keys are made.

Everything a tenant owns lives below `tenants/<tenant>/`: its code bundles, its uploads, and its
executions' inputs, task attempts' documents and files, and outputs. So a key's first two
segments say whose it is, for the control plane's checks, for an agent staging inputs, and for
any store-level policy an operator adds (a bucket policy per prefix). Executions created before
this layout keep their `executions/<id>/` keys; `TenantBlobs` still knows them by their
execution's owner.
"""

from __future__ import annotations


def tenant_prefix(tenant: str) -> str:
    """Where a tenant's bundles, uploads and executions live: one tenant's never answer for
    another's."""
    return f"tenants/{tenant}"


def bundle_key(tenant: str, digest: str) -> str:
    """Blob key of the tenant's bundle with this sha256."""
    return f"{tenant_prefix(tenant)}/bundles/{digest}.tar.gz"


def execution_prefix(tenant: str, execution_id: str) -> str:
    """Below it: the execution's inputs and outputs documents, and per node its collected
    outputs (map nodes) and its attempts' prefixes (`<node>/<attempt>`)."""
    return f"{tenant_prefix(tenant)}/executions/{execution_id}"
