"""The agent's half of presigned blob access (`fleetflow.presigned`): sign, per attempt, what
its task pod may read and where it may write, so the pod holds no blob store credentials.

Signed with the agent's own `FLEETFLOW_S3_*` settings: a GET URL for the bundle, the inputs
document and every object of the File and Directory inputs the control plane listed (a
directory is listed here, by the agent), and one POST policy for keys below the attempt's
prefix (the directory of its outputs document). An attempt whose unit keeps a checkpoint gets
a GET URL for each name a checkpoint is made of below the unit's checkpoint location, and a POST
policy for keys below that location only: a task can neither read another unit's checkpoint nor
write anywhere but its own outputs and its own unit's checkpoint. Only S3 stores can be
presigned; for others the caller keeps the task's own access (`presignable`).
"""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import urlparse

from data_plane_agent.attempts import TaskAssignment
from fleetflow.context import CHECKPOINT_NAMES
from fleetflow.errors import FleetflowError
from fleetflow.storage import parent_uri, relative_key, store_for_uri

MAX_OBJECTS = 2000
"""Presigned URLs one attempt may get (they travel in the pod's spec)."""
MAX_EXPIRY = timedelta(days=7)  # the longest a SigV4 signature may live


class PresignError(FleetflowError):
    """The attempt's blobs could not be presigned."""


def presignable(assignment: TaskAssignment) -> bool:
    """Whether the attempt's blobs live in S3 (the only store URLs can be signed for)."""
    uris = [assignment.bundle_uri, assignment.inputs_uri, assignment.outputs_uri]
    if assignment.checkpoint_uri:
        uris.append(assignment.checkpoint_uri)
    return all(urlparse(uri).scheme == "s3" for uri in uris)


def expiry_for(assignment: TaskAssignment, wait: timedelta) -> timedelta:
    """How long the URLs live: the task's timeout plus `wait` (for the pod to be scheduled
    and started), at most the 7 days S3 allows."""
    return min(MAX_EXPIRY, timedelta(seconds=assignment.timeout_seconds) + wait)


def presigned_manifest(assignment: TaskAssignment, expires: timedelta) -> str:
    """The `FLEETFLOW_PRESIGNED` document for the attempt's pod (JSON).

    Raises:
        PresignError: a URI is not in S3, a directory has too many objects, or the store
            refused (no credentials, no such bucket).
    """

    def get(uri: str) -> str:
        return _presigned_get(uri, expires)

    try:
        files, directories = [], []
        count = 2 + (len(CHECKPOINT_NAMES) if assignment.checkpoint_uri else 0)
        for blob in assignment.input_blobs:
            if not blob.directory:
                files.append({"uri": blob.uri, "name": blob.file_name, "url": get(blob.uri)})
                count += 1
                continue
            objects = store_for_uri(blob.uri).list(blob.uri)
            count += len(objects)
            if count > MAX_OBJECTS:
                raise PresignError(
                    f"the task's inputs hold more than {MAX_OBJECTS} objects: too many to sign "
                    "one URL each (pass fewer, larger files)"
                )
            directories.append(
                {
                    "uri": blob.uri,
                    "objects": {relative_key(uri, blob.uri): get(uri) for uri in objects},
                }
            )
        manifest: dict[str, object] = {
            "bundle": get(assignment.bundle_uri),
            "inputs": get(assignment.inputs_uri),
            "files": files,
            "directories": directories,
            "upload": _presigned_post(parent_uri(assignment.outputs_uri), expires),
        }
        checkpoint = assignment.checkpoint_uri
        if checkpoint:
            manifest["checkpoint"] = {
                "files": {name: get(f"{checkpoint}/{name}") for name in CHECKPOINT_NAMES},
                "upload": _presigned_post(checkpoint, expires),
            }
    except PresignError:
        raise
    except Exception as exc:  # the minio client raises its own kinds
        raise PresignError(f"could not presign the attempt's blobs: {exc}") from None
    return json.dumps(manifest, separators=(",", ":"))


def _presigned_post(prefix: str, expires: timedelta) -> dict[str, object]:
    presign_post = getattr(store_for_uri(prefix), "presigned_post", None)
    if presign_post is None:
        raise PresignError(f"{prefix} is not in S3: it cannot be presigned")
    form: dict[str, object] = presign_post(prefix, expires)
    return form


def _presigned_get(uri: str, expires: timedelta) -> str:
    presign = getattr(store_for_uri(uri), "presigned_get", None)
    if presign is None:
        raise PresignError(f"{uri} is not in S3: it cannot be presigned")
    url: str = presign(uri, expires)
    return url
