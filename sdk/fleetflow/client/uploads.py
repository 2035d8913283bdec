"""`client.uploads`: local `File` and `Directory` inputs sent to the control plane, content-
addressed, so that an execution reads them as blobs of its own tenant."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fleetflow.api_models.bundles import UploadPublic
from fleetflow.client.transport import Transport
from fleetflow.errors import FleetflowError
from fleetflow.files import (
    Directory,
    directory_digest,
    file_digest,
    has_blobs,
    local_blob_path,
    map_blob_literals,
)
from fleetflow.ir import TypeKind

if TYPE_CHECKING:
    from fleetflow.workflow import WorkflowFunction

_UPLOAD_NAME = re.compile(r"[^A-Za-z0-9._+-]")
CHUNK = 1024 * 1024


def _upload_name(name: str) -> str:
    """A file name the uploads API accepts; the input's literal keeps the real name."""
    safe = _UPLOAD_NAME.sub("_", name)[:200]
    return safe if safe.strip(".") else "file"


def _read_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


class Uploads:
    """Uploads of local files and directories."""

    def __init__(self, transport: Transport):
        self._transport = transport

    def _put(self, path: str, local: Path) -> UploadPublic:
        return self._transport.call(
            "PUT",
            path,
            UploadPublic,
            content=_read_chunks(local),
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(local.stat().st_size),
            },
        )

    def file(self, path: str | os.PathLike[str]) -> str:
        """Upload a local file (content-addressed); the URI to put in its input literal."""
        local = Path(path)
        if not local.is_file():
            raise FleetflowError(f"cannot upload {local}: not a file")
        url = f"/api/v1/uploads/files/{file_digest(local)}/{_upload_name(local.name)}"
        return self._put(url, local).uri

    def directory(self, path: str | os.PathLike[str]) -> str:
        """Upload every file below a local directory; the URI of the uploaded directory.

        Raises:
            FleetflowError: not a directory, or an empty one (there is nothing to name).
        """
        local = Path(path)
        if not local.is_dir():
            raise FleetflowError(f"cannot upload {local}: not a directory")
        files = Directory(local).files()
        if not files:
            raise FleetflowError(f"cannot upload directory {local}: it holds no files")
        upload_id = directory_digest(local)
        uri = ""
        for file in files:
            relative = quote(file.relative_to(local).as_posix())
            uri = self._put(f"/api/v1/uploads/dirs/{upload_id}/{relative}", file).uri
        return uri

    def inputs(
        self, workflow_fn: WorkflowFunction[..., Any], literals: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Input literals with every local File and Directory uploaded and named by the URI
        the control plane gave it (executions may only read its own blobs)."""

        def upload(kind: TypeKind, blob: dict[str, Any]) -> Any:
            path = local_blob_path(str(blob["uri"]))
            if path is None:
                return blob  # already a blob of some store; the control plane checks it
            if kind is TypeKind.FILE:
                return {**blob, "uri": self.file(path)}
            return {**blob, "uri": self.directory(path)}

        uploaded = dict(literals)
        for variable in workflow_fn.spec.interface.inputs:
            if variable.name in uploaded and has_blobs(variable.type):
                uploaded[variable.name] = map_blob_literals(
                    uploaded[variable.name], variable.type, upload
                )
        return uploaded
