"""Downloading the `File` and `Directory` values of a succeeded execution's outputs (or of any
execution's inputs) through the control plane, each below a directory of its output's own."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fleetflow.errors import FleetflowError

if TYPE_CHECKING:
    from fleetflow.client.executions import Executions


@dataclass(frozen=True)
class DownloadedOutputs:
    """What `Client.download_outputs` wrote.

    Attributes:
        directory: the directory given; each output's files are below `directory/<output>/`.
        files: every file written, in the order written.
        outputs: the execution's outputs (JSON literals by name) with each `File` and
            `Directory` naming its local copy (a `file://` URI), as a local run names them.
    """

    directory: Path
    files: list[Path]
    outputs: dict[str, Any]


def _below(directory: Path, relative: str) -> Path:
    """`directory/relative` for a path the control plane gave, refusing one that would leave
    `directory`."""
    parts = relative.split("/")
    if relative == ".":
        return directory
    if relative.startswith("/") or any(p in ("", ".", "..") or "\\" in p for p in parts):
        raise FleetflowError(f"refusing to write {relative!r}: not a path below {directory}")
    return directory.joinpath(*parts)


def _with_local_uris(literal: Any, local: Mapping[str, str]) -> Any:
    """`literal` with every `{"uri": …}` whose URI was downloaded naming the local copy."""
    if isinstance(literal, list):
        return [_with_local_uris(item, local) for item in literal]
    if isinstance(literal, dict):
        copied = {key: _with_local_uris(value, local) for key, value in literal.items()}
        uri = literal.get("uri")
        if isinstance(uri, str) and uri in local:
            copied["uri"] = local[uri]
        return copied
    return literal


def download_outputs(
    executions: Executions,
    execution_id: str,
    directory: str | os.PathLike[str],
    names: Iterable[str] | None,
) -> DownloadedOutputs:
    """`Client.download_outputs`, which documents it."""
    outputs = executions.succeeded(execution_id).outputs or {}
    written, local = _download(executions, execution_id, outputs, Path(directory), names, "output")
    return DownloadedOutputs(
        directory=Path(directory), files=written, outputs=_with_local_uris(outputs, local)
    )


@dataclass(frozen=True)
class DownloadedInputs:
    """What `Client.download_inputs` wrote.

    Attributes:
        directory: the directory given; each input's files are below `directory/<input>/`.
        files: every file written, in the order written.
        inputs: the execution's inputs (JSON literals by name) with each `File` and
            `Directory` naming its local copy (a `file://` URI).
    """

    directory: Path
    files: list[Path]
    inputs: dict[str, Any]


def download_inputs(
    executions: Executions,
    execution_id: str,
    directory: str | os.PathLike[str],
    names: Iterable[str] | None,
) -> DownloadedInputs:
    """`Client.download_inputs`, which documents it."""
    inputs = executions.get(execution_id).inputs or {}
    written, local = _download(executions, execution_id, inputs, Path(directory), names, "input")
    return DownloadedInputs(
        directory=Path(directory), files=written, inputs=_with_local_uris(inputs, local)
    )


def _download(
    executions: Executions,
    execution_id: str,
    values: Mapping[str, Any],
    root: Path,
    names: Iterable[str] | None,
    side: Literal["input", "output"],
) -> tuple[list[Path], dict[str, str]]:
    """Download the files of the `names` (default: all) of `values` below `root/<name>/`; the
    files written and the local URI of each blob URI."""
    chosen = list(values) if names is None else list(names)
    unknown = [name for name in chosen if name not in values]
    if unknown:
        raise FleetflowError(
            f"execution {execution_id} has no {side} {unknown[0]!r} "
            f"(its {side}s: {', '.join(values) or 'none'})"
        )
    listing = executions.output if side == "output" else executions.input
    fetch = executions.download_output_file if side == "output" else executions.download_input_file
    written: list[Path] = []
    local: dict[str, str] = {}
    for name in chosen:
        for blob in listing(execution_id, name).blobs:
            base = _below(root, name)
            for relative in blob.files:
                target = _below(base, relative)
                written.append(fetch(execution_id, name, relative, target))
            where = _below(base, blob.path)
            if blob.kind == "directory":
                where.mkdir(parents=True, exist_ok=True)  # an empty directory has no files
            local.setdefault(blob.uri, where.resolve().as_uri())
    return written, local
