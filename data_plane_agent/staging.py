"""The agent's half of the staged layout (`fleetflow.staging`): copy in what a task may read
before it starts, upload what it left in its outputs directory after it ended.

The agent reads the blob store with its own rights, so it copies exactly what the control plane
listed for the attempt (its bundle, its inputs document, the File and Directory inputs the
control plane checked are the tenant's) and nothing a task or an inputs document names besides.
Files the task wrote are read without following links and only when the task's user owns them
(no planted link or hard link makes the agent upload a file only it can read), and only the
names a task may write are uploaded: the outputs document, `files/…` and `dirs/…`.
"""

from __future__ import annotations

import os
import posixpath
import stat
from pathlib import Path, PurePosixPath

from data_plane_agent.attempts import TaskAssignment
from fleetflow import staging
from fleetflow.errors import FleetflowError
from fleetflow.files import download_target, verify_content
from fleetflow.storage import (
    LocalBlobStore,
    open_blob_store,
    parent_uri,
    read_uri,
    relative_key,
    store_for_uri,
)


class StagingError(FleetflowError):
    """An attempt's inputs could not be staged, or its outputs not collected."""


def stage_in(assignment: TaskAssignment, directory: Path) -> None:
    """Fill `directory` (created) with the attempt's bundle, inputs document and input blobs."""
    downloads = directory / staging.DOWNLOADS_DIR
    for sub in (downloads, directory / staging.OUTPUTS_DIR):
        sub.mkdir(parents=True, exist_ok=True)
    scratch = LocalBlobStore(directory)
    try:
        scratch.put(staging.BUNDLE_FILE, read_uri(assignment.bundle_uri))
        scratch.put(staging.INPUTS_FILE, read_uri(assignment.inputs_uri))
        for blob in assignment.input_blobs:
            target = download_target(downloads, blob.uri)
            source = store_for_uri(blob.uri)
            if not blob.directory:
                local = target / _one_segment(blob.file_name)
                source.download(blob.uri, local)
                verify_content(blob.uri, local, f"input {blob.file_name}")
                continue
            target.mkdir(parents=True, exist_ok=True)  # an empty directory has no objects
            for object_uri in source.list(blob.uri):
                relative = PurePosixPath(relative_key(object_uri, blob.uri))
                source.download(object_uri, target.joinpath(*relative.parts))
    except FleetflowError as exc:
        raise StagingError(f"could not stage the task's inputs: {exc}") from None
    except OSError as exc:
        raise StagingError(f"could not stage the task's inputs: {exc}") from None


def _one_segment(name: str) -> str:
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise StagingError(f"input file name {name!r} is not one plain path segment")
    return name


def collect_outputs(assignment: TaskAssignment, directory: Path, owner: int | None) -> int:
    """Upload what the task wrote below `directory`'s outputs: the outputs document and the
    files of the Files and Directories it returned; returns how many objects were uploaded.

    Call only once no process of the task is left (nothing may change the files meanwhile).

    Raises:
        StagingError: no outputs document, or a file the task returned cannot be uploaded
            safely (a link, not the task's own, not a regular file).
    """
    outputs = directory / staging.OUTPUTS_DIR
    document = posixpath.basename(assignment.outputs_uri)
    found = dict(_files_below(outputs))
    if document not in found:
        raise StagingError("the task runtime left no outputs document")
    store = open_blob_store(parent_uri(assignment.outputs_uri))
    uploaded = 0
    for relative, path in sorted(found.items()):
        if relative != document and not relative.startswith(staging.UPLOAD_PREFIXES):
            continue  # not a name a task may write below its attempt's prefix
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            raise StagingError(f"output {relative} cannot be uploaded: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise StagingError(f"output {relative} is not a regular file")
            if owner is not None and info.st_uid != owner:
                raise StagingError(f"output {relative} is not a file the task wrote")
            try:
                # Through the descriptor checked above, never through the name again.
                store.upload(relative, Path(f"/proc/self/fd/{fd}"))
            except (FleetflowError, OSError) as exc:
                raise StagingError(f"output {relative} could not be uploaded: {exc}") from None
        finally:
            os.close(fd)
        uploaded += 1
    return uploaded


def _files_below(root: Path) -> list[tuple[str, Path]]:
    """(`/`-separated relative name, path) of every non-directory below `root`, links not
    followed into."""
    found = []
    for parent, _dirs, names in os.walk(root, followlinks=False):
        for name in names:
            path = Path(parent, name)
            found.append((path.relative_to(root).as_posix(), path))
    return found
