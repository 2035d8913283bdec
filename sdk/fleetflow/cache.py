"""Task caching for local runs: outputs reused for the same task, version and inputs.

The control plane caches every `@task(cache=True, cache_version=...)` on its own. Local runs
cache only when asked to (`FLEETFLOW_LOCAL_CACHE_DIR`, or `fleetflow run --cache-dir DIR`),
because a cache that silently skips the code one is editing is a surprise, not a feature.

The key is made of the same material as the control plane's (task name, cache version,
interface, input literals), with one difference: a local `File` or `Directory` input is named by
its content hash rather than its path, so editing a data file misses the cache and moving it
does not. Outputs are JSON documents under the directory; files and directories a cached task
returned are copied in, content-addressed, so a hit does not depend on the task's temporary
files still being there.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fleetflow import ir
from fleetflow.files import (
    Directory,
    directory_digest,
    file_digest,
    local_blob_path,
    map_blob_literals,
)

CACHE_DIR_ENV = "FLEETFLOW_LOCAL_CACHE_DIR"


def cache_key(task: ir.TaskSpec, inputs: Mapping[str, Any], *, scope: str | None = None) -> str:
    """Same task name, cache version, interface and input literals -> same key.

    The same function as the control plane's task cache uses, so the two agree on what
    "the same inputs" means. The control plane passes the tenant as `scope`: tasks of the same
    name in two tenants never share outputs (one could otherwise read, or plant, another's).
    """
    material: dict[str, Any] = {
        "task": task.name,
        "cache_version": task.cache_version,
        "interface": task.interface.model_dump(mode="json"),
        "inputs": dict(inputs),
    }
    if scope is not None:
        material["scope"] = scope
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _by_content(kind: ir.TypeKind, blob: dict[str, Any]) -> Any:
    """A local file or directory literal named by what it holds, not where it is."""
    path = local_blob_path(str(blob.get("uri", "")))
    if path is None:
        return blob  # a remote blob: its URI is already content-addressed
    if kind is ir.TypeKind.FILE and path.is_file():
        return {"sha256": file_digest(path), "name": blob.get("name")}
    if kind is ir.TypeKind.DIRECTORY and path.is_dir():
        return {"sha256": directory_digest(path)}
    return blob


class LocalCache:
    """A directory of cached task outputs.

    Layout: `<root>/outputs/<key[:2]>/<key>.json` (the outputs' literals) and
    `<root>/blobs/{files,dirs}/<sha256>/…` (copies of returned files and directories).

    Attributes:
        hits, misses: counts since this object was made, for reporting.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(os.path.abspath(os.fspath(root)))
        self.hits = 0
        self.misses = 0

    @classmethod
    def from_env(cls) -> LocalCache | None:
        """The cache named by `FLEETFLOW_LOCAL_CACHE_DIR`, or None (caching off)."""
        root = os.environ.get(CACHE_DIR_ENV, "").strip()
        return cls(root) if root else None

    def __repr__(self) -> str:
        return f"LocalCache({str(self.root)!r})"

    def key(self, task: ir.TaskSpec, inputs: Mapping[str, Any]) -> str:
        keyed = {}
        for variable in task.interface.inputs:
            if variable.name in inputs:
                keyed[variable.name] = map_blob_literals(
                    inputs[variable.name], variable.type, _by_content
                )
        for name, value in inputs.items():
            keyed.setdefault(name, value)
        return cache_key(task, keyed)

    def _entry(self, key: str) -> Path:
        return self.root / "outputs" / key[:2] / f"{key}.json"

    def get(self, task: ir.TaskSpec, inputs: Mapping[str, Any]) -> dict[str, Any] | None:
        """The cached outputs (literals by name), or None on a miss."""
        key = self.key(task, inputs)
        try:
            entry = json.loads(self._entry(key).read_text())
            outputs = entry["outputs"]
            if not isinstance(outputs, dict) or not self._blobs_present(task, outputs):
                raise ValueError("incomplete entry")
        except (OSError, ValueError, KeyError, TypeError):
            self.misses += 1
            return None
        self.hits += 1
        return outputs

    def put(
        self, task: ir.TaskSpec, inputs: Mapping[str, Any], outputs: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Store `outputs` for these inputs; returns them with blobs moved into the cache."""
        key = self.key(task, inputs)
        stored = {
            name: map_blob_literals(value, variable.type, self._keep)
            if (variable := task.interface.output(name)) is not None
            else value
            for name, value in outputs.items()
        }
        entry = {"task": task.name, "cache_version": task.cache_version, "outputs": stored}
        data = json.dumps(entry).encode()
        _write_atomically(self._entry(key), lambda tmp: tmp.write_bytes(data))
        return stored

    def _blobs_present(self, task: ir.TaskSpec, outputs: Mapping[str, Any]) -> bool:
        present = True

        def check(kind: ir.TypeKind, blob: dict[str, Any]) -> Any:
            nonlocal present
            path = local_blob_path(str(blob.get("uri", "")))
            if path is not None and not (
                path.is_file() if kind is ir.TypeKind.FILE else path.is_dir()
            ):
                present = False
            return blob

        for variable in task.interface.outputs:
            if variable.name not in outputs:
                return False
            map_blob_literals(outputs[variable.name], variable.type, check)
        return present

    def _keep(self, kind: ir.TypeKind, blob: dict[str, Any]) -> Any:
        """Copy a returned local file or directory into the cache; its new literal."""
        path = local_blob_path(str(blob.get("uri", "")))
        if path is None:
            return blob
        if kind is ir.TypeKind.FILE:
            target = self.root / "blobs" / "files" / file_digest(path) / path.name
            if not target.is_file():
                _write_atomically(target, lambda tmp: shutil.copyfile(path, tmp))
            return {**blob, "uri": target.as_uri()}
        target = self.root / "blobs" / "dirs" / directory_digest(path)
        if not target.is_dir():
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
            for file in Directory(path).files():
                destination = partial / file.relative_to(path)
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file, destination)
            try:
                partial.rename(target)
            except OSError:  # another run stored the same directory first
                shutil.rmtree(partial, ignore_errors=True)
        return {**blob, "uri": target.as_uri()}


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` then rename: a reader never sees half an entry or half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
