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

import posixpath
from pathlib import Path

from data_plane_agent.attempts import TaskAssignment
from data_plane_agent.sandbox import NotTheTasksFile, open_task_file
from fleetflow import staging
from fleetflow.errors import FleetflowError
from fleetflow.staging import StagingError
from fleetflow.storage import (
    open_blob_store,
    parent_uri,
    relative_key,
    store_for_uri,
)


def stage_in(assignment: TaskAssignment, directory: Path) -> None:
    """Fill `directory` (created) with the attempt's bundle, inputs document and input blobs."""
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
            bundle=assignment.bundle_uri,
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
