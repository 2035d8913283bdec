"""Presigned blob access: how a task pod reads exactly its inputs and writes exactly its outputs
without holding the blob store's credentials.

An agent that cannot stage files into a task's filesystem (the Kubernetes executor) signs, per
attempt, a GET URL for each object the task may read (its bundle, its inputs document, each
object of the File and Directory inputs the control plane listed) and one POST policy that
accepts uploads below the attempt's own prefix only, all short-lived. It hands them to the pod
as `FLEETFLOW_PRESIGNED` (a JSON document, `Manifest`). The runtime then fetches everything into
the staged layout (`fleetflow.staging`) before the task runs, runs it staged, and uploads what
the task left in `outputs/` with the policy: a URL or a form is all the pod ever holds.

An attempt whose unit keeps a checkpoint (`fleetflow.context.Checkpoint`) gets one more entry,
`checkpoint`: a GET URL per name of `CHECKPOINT_NAMES` below the unit's checkpoint location
(a missing object means no checkpoint yet) and a POST policy for keys below that location only,
so the runtime copies the checkpoint in before the task and uploads each checkpoint file as
the task writes it (`fetch_checkpoint`, `upload_checkpoint_file`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
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


def fetch_checkpoint(manifest: dict[str, Any], target: Path) -> None:
    """Copy the unit's checkpoint into the checkpoint directory `target` (created) from the
    manifest's URLs; a name the unit has not written is absent there.

    Raises:
        PresignedError: the manifest has no checkpoint entry, or a URL failed.
    """
    urls = _checkpoint_entry(manifest)["files"]

    def fetch(name: str, dest: Path) -> bool:
        url = urls.get(name)
        if not isinstance(url, str):
            raise PresignedError(f"{ENV} has no URL for the checkpoint's {name}")
        return _get(url, dest, missing_ok=True)

    staging.fill_checkpoint(target, fetch)


def upload_checkpoint(manifest: dict[str, Any], target: Path) -> list[str]:
    """Upload the checkpoint files the task left in `target` with the manifest's checkpoint
    policy; the names uploaded."""
    found = staging.checkpoint_files(target)
    for name, path in found:
        upload_checkpoint_file(manifest, name, path)
    return [name for name, _ in found]


def upload_checkpoint_file(manifest: dict[str, Any], name: str, path: Path) -> None:
    """Upload one checkpoint file (`name`, one of `CHECKPOINT_NAMES`) with the manifest's
    checkpoint policy."""
    upload = _checkpoint_entry(manifest)["upload"]
    _post(upload, upload["prefix"] + name, path)


def _checkpoint_entry(manifest: dict[str, Any]) -> dict[str, Any]:
    entry = manifest.get("checkpoint")
    if not isinstance(entry, dict) or not {"files", "upload"} <= entry.keys():
        raise PresignedError(f"{ENV} has no checkpoint URLs, yet the attempt keeps a checkpoint")
    return entry


def _get(url: str, dest: Path, *, missing_ok: bool = False) -> bool:
    """Copy the object at `url` to `dest`; False, writing nothing, when `missing_ok` and the
    object does not exist (HTTP 404)."""
    import urllib.error  # here: the warm runtime's fork server (and each of its children) would
    import urllib.request  # hold ssl, http and email for the few attempts that use presigned URLs

    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_SECONDS) as response:  # noqa: S310
            with dest.open("wb") as f:
                shutil.copyfileobj(response, f, _CHUNK)
    except urllib.error.HTTPError as exc:
        if missing_ok and exc.code == 404:
            return False
        raise PresignedError(f"reading {_redacted(url)}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise PresignedError(f"reading {_redacted(url)}: {exc}") from None
    return True


def _post(upload: dict[str, Any], key: str, path: Path) -> None:
    """One S3 POST-policy upload, streamed (multipart/form-data with the file last)."""
    import urllib.error  # see `_get`
    import urllib.request

    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    boundary = os.urandom(16).hex()
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
