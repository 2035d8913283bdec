"""Code bundles in the blob store: whether a tenant's bundle is stored, which the bundles route
answers (`HEAD`, an idempotent `PUT`) and workflow registration requires."""

from __future__ import annotations

from control_plane.blob_layout import bundle_key
from fleetflow.storage import BlobStore


def bundle_exists(blob_store: BlobStore, tenant: str, digest: str) -> bool:
    return blob_store.exists(blob_store.uri(bundle_key(tenant, digest)))
