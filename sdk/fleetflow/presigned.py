"""Presigned blob access: how a task pod reads exactly its inputs and writes exactly its outputs
without holding the blob store's credentials.

An agent that cannot stage files into a task's filesystem (the Kubernetes executor) signs, per
attempt, a GET URL for each object the task may read (its bundle, its inputs document, each
object of the File and Directory inputs the control plane listed) and one POST policy that
accepts uploads below the attempt's own prefix only, all short-lived. It hands them to the pod
as `FLEETFLOW_PRESIGNED` (a JSON document, `Manifest`). The runtime then fetches everything into
the staged layout (`fleetflow.staging`) before the task runs, runs it staged, and uploads what
the task left in `outputs/` with the policy: a URL or a form is all the pod ever holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fleetflow import staging
from fleetflow.errors import FleetflowError

ENV = "FLEETFLOW_PRESIGNED"
_TIMEOUT_SECONDS = 300.0
_CHUNK = 1 << 20
_CHECKSUM_FIELD = "x-amz-meta-fleetflow-sha256"


class PresignedError(FleetflowError):
    """A presigned URL failed, or the manifest is not one an agent writes."""


def manifest_from_environment() -> dict[str, Any]:
    """The manifest the agent put in `FLEETFLOW_PRESIGNED`.

    Raises:
        PresignedError: the variable is missing or not a manifest.
    """
    text = os.environ.get(ENV)
    if not text:
        raise PresignedError(f"--presigned needs the {ENV} variable the agent sets")
    try:
        manifest = json.loads(text)
    except ValueError:
        raise PresignedError(f"{ENV} is not JSON") from None
    if not isinstance(manifest, dict) or not {"bundle", "inputs", "upload"} <= manifest.keys():
        raise PresignedError(f"{ENV} lacks bundle, inputs or upload")
    return manifest


def fetch(manifest: dict[str, Any], directory: Path) -> None:
    """Fill `directory` with the staged layout from the manifest's URLs."""
    staging.fill(
        directory,
        bundle=manifest["bundle"],
        inputs=manifest["inputs"],
        files=[(blob["uri"], blob["name"], blob["url"]) for blob in manifest.get("files", [])],
        directories=[(blob["uri"], blob["objects"]) for blob in manifest.get("directories", [])],
        fetch=_get,
    )


def upload_outputs(manifest: dict[str, Any], directory: Path, document: str) -> int:
    """Upload the outputs document and the task's `files/`/`dirs/` from `directory`'s outputs
    with the manifest's POST policy; how many objects went."""
    upload = manifest["upload"]
    found = staging.outputs_to_upload(directory, document)
    for relative, path in found:
        _post(upload, upload["prefix"] + relative, path)
    return len(found)


def _get(url: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_SECONDS) as response:  # noqa: S310
            with dest.open("wb") as f:
                shutil.copyfileobj(response, f, _CHUNK)
    except urllib.error.HTTPError as exc:
        raise PresignedError(f"reading {_redacted(url)}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise PresignedError(f"reading {_redacted(url)}: {exc}") from None


def _post(upload: dict[str, Any], key: str, path: Path) -> None:
    """One S3 POST-policy upload, streamed (multipart/form-data with the file last)."""
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    boundary = uuid.uuid4().hex
    fields = {**upload["fields"], "key": key, _CHECKSUM_FIELD: digest}
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="upload"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = path.stat().st_size

    def body() -> Iterator[bytes]:
        yield head
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                yield chunk
        yield tail

    request = urllib.request.Request(  # noqa: S310 - the agent's S3 endpoint
        upload["url"],
        data=body(),
        method="POST",
        headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(head) + size + len(tail)),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_SECONDS):  # noqa: S310
            pass
    except urllib.error.HTTPError as exc:
        raise PresignedError(f"uploading {key}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise PresignedError(f"uploading {key}: {exc}") from None


def _redacted(url: str) -> str:
    """A presigned URL without its signature (it grants access until it expires)."""
    return url.split("?", 1)[0]
