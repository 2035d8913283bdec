"""The staged layout: how an agent hands a task everything it may read, and takes back what it
wrote, so that the task process needs no access to the blob store at all.

An agent that stages (the local-process executor) fills a directory before the task starts:

- `bundle.tar.gz`: the code bundle (the runtime still checks it against its digest), unless
  the agent copied it, unpacked and checked, into the task's work directory already (the
  local-process executor's `BundleCache`; the runtime's `--code-unpacked`);
- `inputs.json`: the attempt's inputs document;
- `downloads/`: every File and Directory input the control plane listed for the attempt, where
  the runtime's blob context looks for them (`fleetflow.files.download_target`);
- `outputs/`: empty; the runtime writes the outputs document here under its own name, and every
  File or Directory the task returns below `files/` and `dirs/`, exactly the keys it would
  have written below the attempt's prefix in the store;
- `checkpoint/`: the unit's checkpoint (`fleetflow.context.CHECKPOINT_NAMES`), when the attempt
  has one; the runtime reads and rewrites it there (`--checkpoint-dir`), and the agent uploads
  it back to the unit's checkpoint location after the task ended, whatever its outcome.

After the task ends the agent uploads what `outputs/` holds (those names only) below the
attempt's prefix. The values the task returns name their blobs by the URIs they get there.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePosixPath

from fleetflow.context import CHECKPOINT_NAMES
from fleetflow.errors import FleetflowError
from fleetflow.files import download_target, verify_content
from fleetflow.storage import BlobStore, LocalBlobStore, relative_key, store_for_uri

BUNDLE_FILE = "bundle.tar.gz"
INPUTS_FILE = "inputs.json"
DOWNLOADS_DIR = "downloads"
OUTPUTS_DIR = "outputs"
CHECKPOINT_DIR = "checkpoint"
#: The prefixes below the attempt's outputs location a task may write (besides the outputs
#: document itself): content-addressed files and directories.
UPLOAD_PREFIXES = ("files/", "dirs/")


class StagingError(FleetflowError):
    """An attempt's inputs could not be staged, or its outputs not collected."""


def is_file_name(name: object) -> bool:
    """Whether `name` can name a staged input file: one plain path segment."""
    if not isinstance(name, str) or name in ("", ".", ".."):
        return False
    return "/" not in name and "\0" not in name


def fill(
    directory: Path,
    *,
    bundle: str | None,
    inputs: str,
    files: Iterable[tuple[str, str, str]],
    directories: Iterable[tuple[str, Mapping[str, str]]],
    fetch: Callable[[str, Path], object],
) -> None:
    """Lay out `directory` (created) as above. `fetch(source, dest)` copies one object to a
    local file; a source names it to the fetcher: a URI for an agent, a presigned URL for a
    pod. `files` are (URI, file name, source); `directories` (URI, {relative name: source});
    `bundle` None: no bundle is staged (the task's code is in place already).

    Raises:
        StagingError: a file or relative name would not stay in its place.
        Exception: whatever `fetch` raises, or `verify_content` for a swapped file.
    """
    downloads = directory / DOWNLOADS_DIR
    for sub in (downloads, directory / OUTPUTS_DIR):
        sub.mkdir(parents=True, exist_ok=True)
    if bundle is not None:
        fetch(bundle, directory / BUNDLE_FILE)
    fetch(inputs, directory / INPUTS_FILE)
    for uri, name, source in files:
        if not is_file_name(name):
            raise StagingError(f"input file name {name!r} is not one plain path segment")
        local = download_target(downloads, uri) / name
        fetch(source, local)
        verify_content(uri, local, f"input {name}")
    for uri, objects in directories:
        target = download_target(downloads, uri)
        target.mkdir(parents=True, exist_ok=True)  # an empty directory has no objects
        for relative, source in objects.items():
            parts = PurePosixPath(relative).parts
            if not parts or relative.startswith("/") or any(p in ("", ".", "..") for p in parts):
                raise StagingError(f"directory entry {relative!r} is not a relative name")
            fetch(source, target.joinpath(*parts))


def outputs_to_upload(directory: Path, document: str) -> list[tuple[str, Path]]:
    """(`/`-separated name, path) of every file below `directory`'s outputs a task may have
    written below its attempt's prefix (the outputs document `document`, `files/…`, `dirs/…`),
    sorted; links are not followed into."""
    outputs = directory / OUTPUTS_DIR
    found = []
    for parent, _dirs, names in os.walk(outputs, followlinks=False):
        for name in names:
            path = Path(parent, name)
            relative = path.relative_to(outputs).as_posix()
            if relative == document or relative.startswith(UPLOAD_PREFIXES):
                found.append((relative, path))
    return sorted(found)


def fill_checkpoint(target: Path, fetch: Callable[[str, Path], bool]) -> Path:
    """Create the checkpoint directory `target` and copy the unit's checkpoint into it:
    `fetch(name, dest)` copies one of `CHECKPOINT_NAMES`, or returns False when the unit has
    none of that name (none at all before its first write)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in CHECKPOINT_NAMES:
        fetch(name, target / name)
    return target


def checkpoint_from_store(checkpoint_uri: str) -> Callable[[str, Path], bool]:
    """A `fill_checkpoint` fetcher that reads the unit's checkpoint at `checkpoint_uri` with
    the blob store's own access (an agent's, or a pod's that holds the store's settings)."""
    store = store_for_uri(checkpoint_uri)

    def fetch(name: str, dest: Path) -> bool:
        uri = f"{checkpoint_uri}/{name}"
        if not store.exists(uri):
            return False
        store.download(uri, dest)
        return True

    return fetch


def checkpoint_files(target: Path) -> list[tuple[str, Path]]:
    """(name, path) of the checkpoint files a task left in the checkpoint directory `target`
    to upload for the unit's next attempt: the names of `CHECKPOINT_NAMES` only, and only
    regular files (a link is not followed)."""
    found = []
    for name in CHECKPOINT_NAMES:
        path = target / name
        if path.is_file() and not path.is_symlink():
            found.append((name, path))
    return found


class NotStagedError(FleetflowError):
    """A task asked for a blob its agent did not stage for it."""


def refuse_download(uri: str) -> BlobStore:
    """The blob source of a staged task: nothing may be downloaded, everything was staged."""
    raise NotStagedError(
        f"{uri} was not staged for this task: a task reads only the inputs its control plane "
        "listed for it"
    )


class StagedOutputs:
    """A blob store whose objects are written into the staged `outputs/` directory, named by
    the URIs they will have once the agent uploads them below `root_uri`."""

    def __init__(self, directory: Path, root_uri: str) -> None:
        self._local = LocalBlobStore(directory)
        self.root_uri = root_uri.rstrip("/")

    def _key(self, uri: str) -> str:
        return relative_key(uri, self.root_uri)

    def uri(self, key: str) -> str:
        self._local.uri(key)  # the same checks on the key
        return f"{self.root_uri}/{key}"

    def put(self, key: str, data: bytes) -> str:
        self._local.put(key, data)
        return self.uri(key)

    def upload(self, key: str, source: Path) -> str:
        self._local.upload(key, source)
        return self.uri(key)

    def get(self, uri: str) -> bytes:
        return self._local.get(self._local.uri(self._key(uri)))

    def download(self, uri: str, dest: Path) -> None:
        self._local.download(self._local.uri(self._key(uri)), dest)

    def exists(self, uri: str) -> bool:
        return self._local.exists(self._local.uri(self._key(uri)))

    def list(self, prefix_uri: str) -> list[str]:
        prefix = self._key(prefix_uri)
        return [
            f"{self.root_uri}/{prefix}/{relative_key(uri, self._local.uri(prefix))}"
            for uri in self._local.list(self._local.uri(prefix))
        ]

    def scoped(self, prefix: str) -> StagedOutputs:
        return StagedOutputs(self._local.scoped(prefix).root, self.uri(prefix))
