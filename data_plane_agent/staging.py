"""The agent's half of the staged layout (`fleetflow.staging`): copy in what a task may read
before it starts, upload what it left in its outputs directory after it ended.

The agent reads the blob store with its own rights, so it copies exactly what the control plane
listed for the attempt (its bundle, its inputs document, the File and Directory inputs the
control plane checked are the tenant's) and nothing a task or an inputs document names besides.
Files the task wrote are read without following links and only when the task's user owns them
(no planted link or hard link makes the agent upload a file only it can read), and only the
names a task may write are uploaded: the outputs document, `files/…` and `dirs/…`.

Checkpoints (`fleetflow.context.Checkpoint`) go the same way: the unit's (at the
`checkpoint_uri` the control plane derived from the attempt's own location, never a name a task
gives) are copied into `checkpoint/` before the task starts, and the two files a checkpoint is
made of are uploaded back after it ended, whatever its outcome, under the same checks.
"""

from __future__ import annotations

import logging
import posixpath
from pathlib import Path

from data_plane_agent.attempts import TaskAssignment
from data_plane_agent.bundle_cache import BundleCache
from data_plane_agent.sandbox import NotTheTasksFile, open_task_file
from fleetflow import staging
from fleetflow.context import CHECKPOINT_NAMES
from fleetflow.errors import FleetflowError
from fleetflow.staging import StagingError
from fleetflow.storage import (
    BlobStore,
    open_blob_store,
    parent_uri,
    relative_key,
    store_for_uri,
)


def stage_in(assignment: TaskAssignment, directory: Path) -> None:
    """Fill `directory` (created) with the attempt's inputs document and input blobs (its code
    is copied from the `BundleCache` instead)."""
    try:
        directories = [
            (
                blob.uri,
                {
                    relative_key(uri, blob.uri): uri
                    for uri in store_for_uri(blob.uri).list(blob.uri)
                },
            )
            for blob in assignment.input_blobs
            if blob.directory
        ]
        staging.fill(
            directory,
            bundle=None,
            inputs=assignment.inputs_uri,
            files=[
                (blob.uri, blob.file_name, blob.uri)
                for blob in assignment.input_blobs
                if not blob.directory
            ],
            directories=directories,
            fetch=_download,
        )
    except (FleetflowError, OSError) as exc:
        raise StagingError(f"could not stage the task's inputs: {exc}") from None


def stage_code(assignment: TaskAssignment, dest: Path, bundles: BundleCache) -> None:
    """Make `dest` a copy of the attempt's code bundle, unpacked (checked against its digest
    when the agent first unpacked it)."""
    try:
        bundles.copy_into(assignment.bundle_uri, dest)
    except (FleetflowError, OSError) as exc:
        raise StagingError(f"could not stage the task's code: {exc}") from None


logger = logging.getLogger(__name__)

CHECKPOINT_DIR = staging.CHECKPOINT_DIR
"""Below the staged directory: the unit's checkpoint, which the task reads and rewrites."""


def stage_checkpoint(assignment: TaskAssignment, directory: Path) -> Path | None:
    """Copy the unit's checkpoint into `directory`'s `checkpoint/` (created, empty when the
    unit has none yet); None, staging nothing, when the attempt has no checkpoint.

    Raises:
        StagingError: the checkpoint could not be read from the blob store.
    """
    if not assignment.checkpoint_uri:
        return None
    try:
        return staging.fill_checkpoint(
            directory / CHECKPOINT_DIR, staging.checkpoint_from_store(assignment.checkpoint_uri)
        )
    except (FleetflowError, OSError) as exc:
        raise StagingError(f"could not stage the task's checkpoint: {exc}") from None


def keep_checkpoint(assignment: TaskAssignment, directory: Path, owner: int | None) -> list[str]:
    """Upload the checkpoint files the task left in `directory`'s `checkpoint/` to its unit's
    checkpoint location, for the unit's next attempt; the names uploaded.

    Only the names a checkpoint is made of, and only regular files of the task's user, opened
    without following links: what the agent cannot check is not uploaded (and said in its
    log), and the attempt's outcome is not changed by it. Call only once no process of the
    task is left.
    """
    if not assignment.checkpoint_uri:
        return []
    uploaded: list[str] = []
    store: BlobStore | None = None  # opened for the first file: a local one makes its folder
    for name in CHECKPOINT_NAMES:
        path = directory / CHECKPOINT_DIR / name
        if not path.is_symlink() and not path.exists():
            continue
        try:
            with open_task_file(path, owner) as fd:
                store = store or open_blob_store(assignment.checkpoint_uri)
                store.upload(name, Path(f"/proc/self/fd/{fd}"))  # through the checked descriptor
        except NotTheTasksFile as exc:
            logger.warning(
                "attempt %s: checkpoint %s not kept: it %s", assignment.attempt_id, name, exc
            )
            continue
        except (FleetflowError, OSError) as exc:
            logger.warning(
                "attempt %s: checkpoint %s not kept: %s", assignment.attempt_id, name, exc
            )
            continue
        uploaded.append(name)
    return uploaded


def _download(uri: str, dest: Path) -> None:
    store_for_uri(uri).download(uri, dest)


def collect_outputs(assignment: TaskAssignment, directory: Path, owner: int | None) -> None:
    """Upload what the task wrote below `directory`'s outputs: the outputs document and the
    files of the Files and Directories it returned.

    Call only once no process of the task is left (nothing may change the files meanwhile).

    Raises:
        StagingError: no outputs document, or a file the task returned cannot be uploaded
            safely (a link, not the task's own, not a regular file).
    """
    document = posixpath.basename(assignment.outputs_uri)
    found = staging.outputs_to_upload(directory, document)
    if document not in {relative for relative, _ in found}:
        raise StagingError("the task runtime left no outputs document")
    store = open_blob_store(parent_uri(assignment.outputs_uri))
    for relative, path in found:
        try:
            with open_task_file(path, owner) as fd:
                try:
                    # Through the descriptor checked, never through the name again.
                    store.upload(relative, Path(f"/proc/self/fd/{fd}"))
                except (FleetflowError, OSError) as exc:
                    raise StagingError(f"output {relative} could not be uploaded: {exc}") from None
        except NotTheTasksFile as exc:
            raise StagingError(f"output {relative} {exc}") from None
        except OSError as exc:
            raise StagingError(f"output {relative} cannot be uploaded: {exc.strerror}") from None
