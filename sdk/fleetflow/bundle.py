"""Code bundles: the engineer's source tree as one content-addressed, safely extractable archive.

`fleetflow run --remote` packs the project with `build_bundle` and uploads it under its digest;
the task runtime on a cluster downloads it and unpacks it with `extract_bundle`. The archive is
deterministic (sorted entries, fixed timestamps, owners and modes), so unchanged code has the
same digest and is uploaded once. Extraction trusts nothing in the archive: only regular files
and directories, relative paths that stay inside the destination, and bounded sizes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath

from fleetflow.errors import FleetflowError

MAX_BUNDLE_BYTES = 64 * 1024 * 1024
"""Largest total size of the files in a bundle (uncompressed), and of the archive itself."""

MAX_BUNDLE_ENTRIES = 100_000

_EXCLUDED_DIRS = frozenset({"__pycache__", ".venv", "venv", "node_modules"})
_EXCLUDED_SUFFIXES = (".pyc", ".pyo")
_FILE_MODE = 0o644
_DIR_MODE = 0o755
_COPY_CHUNK = 1024 * 1024


class BundleError(FleetflowError):
    """A source tree cannot be bundled, or an archive is not a safe code bundle."""


_DIGEST_NAMED = re.compile(r"(?:^|/)(?P<digest>[0-9a-f]{64})\.tar\.gz$")


def verify_bundle(uri: str, data: bytes) -> None:
    """Refuse a bundle that is not the one its name promises.

    Bundles are stored under their sha256 (`.../bundles/<sha256>.tar.gz`), so an archive with
    another digest was changed after upload by someone who could write the blob store (a
    hostile task, say), and running it would run their code as the bundle's tenant.

    Raises:
        BundleError: the URI names no digest, or the content does not match it.
    """
    named = _DIGEST_NAMED.search(uri)
    if named is None:
        raise BundleError(
            f"code bundle {uri} is not named by its sha256 digest; refusing to run it"
        )
    actual = hashlib.sha256(data).hexdigest()
    if actual != named["digest"]:
        raise BundleError(
            f"code bundle {uri} has sha256 {actual}, not the digest it was uploaded under: it "
            "was changed after upload; refusing to run it"
        )


def _is_excluded_dir(name: str) -> bool:
    return name.startswith(".") or name in _EXCLUDED_DIRS


def _is_excluded_file(name: str) -> bool:
    return name.startswith(".") or name.endswith(_EXCLUDED_SUFFIXES)


def bundle_files(root: Path) -> list[tuple[str, Path]]:
    """The files `build_bundle` packs: (archive name, path) pairs in archive order.

    Regular files only; symlinks are neither followed nor packed, so a bundle never carries
    anything from outside `root`.
    """
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        # Pruning in place stops os.walk from descending; sorting makes the walk reproducible.
        dirnames[:] = sorted(d for d in dirnames if not _is_excluded_dir(d))
        here = Path(dirpath)
        for name in sorted(filenames):
            if _is_excluded_file(name):
                continue
            path = here / name
            if not stat.S_ISREG(path.lstat().st_mode):
                continue
            found.append((path.relative_to(root).as_posix(), path))
    found.sort(key=lambda item: item[0])
    return found


def build_bundle(root: Path, *, max_bytes: int = MAX_BUNDLE_BYTES) -> tuple[str, bytes]:
    """Pack the source tree under `root` into a deterministic gzip tarball.

    Hidden files and directories, `__pycache__`, `.venv`/`venv`, `node_modules` and compiled
    `*.pyc` files are left out.

    Args:
        root: The project directory; archive names are relative to it.
        max_bytes: Upper bound on the total size of the packed files.

    Returns:
        The sha256 hex digest of the archive and the archive bytes.

    Raises:
        BundleError: `root` is not a directory, holds no files, or is larger than `max_bytes`.
    """
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"cannot bundle {root}: not a directory")
    files = bundle_files(root)
    if not files:
        raise BundleError(f"cannot bundle {root}: it holds no source files")
    if len(files) > MAX_BUNDLE_ENTRIES:
        raise BundleError(
            f"cannot bundle {root}: {len(files)} files, more than {MAX_BUNDLE_ENTRIES}"
        )

    def contents() -> Iterator[tuple[str, bytes]]:
        total = 0
        for name, path in files:
            # Checked before reading too, so a stray multi-gigabyte file is never loaded.
            if total + path.stat().st_size > max_bytes:
                raise _too_large(root, name, max_bytes)
            data = path.read_bytes()
            total += len(data)
            yield name, data

    return _pack(contents(), str(root), max_bytes)


def build_bundle_from_files(
    files: Mapping[str, bytes], *, what: str, max_bytes: int = MAX_BUNDLE_BYTES
) -> tuple[str, bytes]:
    """Pack files given by content (archive name -> bytes) as `build_bundle` packs a tree:
    the same deterministic archive for the same files, whatever their order.

    Args:
        files: relative POSIX names (no `..`, not absolute) -> contents.
        what: what the bundle holds, for error messages.

    Raises:
        BundleError: no files, an unsafe name, or more than `max_bytes` in all.
    """
    if not files:
        raise BundleError(f"cannot bundle {what}: it holds no source files")
    for name in files:
        relative = _safe_member_path(name)
        if not relative.parts or relative.as_posix() != name:
            raise BundleError(f"cannot bundle {what}: {name!r} is not a relative file name")
    return _pack(sorted(files.items()), what, max_bytes)


def _pack(entries: Iterable[tuple[str, bytes]], what: str, max_bytes: int) -> tuple[str, bytes]:
    """(name, content) pairs in archive order -> (sha256, deterministic gzip tarball)."""
    total = 0
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            total += len(data)
            if total > max_bytes:
                raise _too_large(what, name, max_bytes)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = _FILE_MODE
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))

    compressed = io.BytesIO()
    # mtime=0 and no file name in the gzip header keep the bytes reproducible.
    with gzip.GzipFile(filename="", fileobj=compressed, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    data = compressed.getvalue()
    return hashlib.sha256(data).hexdigest(), data


def _too_large(root: Path | str, name: str, max_bytes: int) -> BundleError:
    return BundleError(
        f"code bundle of {root} is larger than {_mib(max_bytes)} (reached at {name}); "
        "move data files out of the project directory (or into a hidden directory)"
    )


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):g} MiB"


def _safe_member_path(name: str) -> PurePosixPath:
    """The member's path relative to the destination (empty for `./`), or BundleError."""
    path = PurePosixPath(name)
    if path.is_absolute():
        raise BundleError(f"unsafe code bundle: absolute path {name!r}")
    if ".." in path.parts:
        raise BundleError(f"unsafe code bundle: path {name!r} escapes the destination")
    return path


def extract_bundle(data: bytes, dest: Path, *, max_bytes: int = MAX_BUNDLE_BYTES) -> None:
    """Unpack a code bundle made by `build_bundle` into `dest`, refusing anything unsafe.

    Only regular files and directories with relative paths inside `dest` are accepted; links,
    devices, absolute paths, `..` components and archives larger than `max_bytes` (compressed
    or unpacked) are rejected. Files are written with mode 0644, directories 0755.

    The archive is unpacked into a temporary directory beside `dest` and renamed into place
    only once complete, replacing whatever `dest` held: a refused or broken bundle leaves
    nothing behind (no partial tree filling the disk), and `dest` is never half-written.

    Raises:
        BundleError: The archive is corrupt or unsafe; `dest` is as it was.
    """
    if len(data) > max_bytes:
        raise BundleError(f"code bundle of {len(data)} bytes exceeds the {_mib(max_bytes)} limit")
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.unpacking-", dir=dest.parent))
    except OSError as exc:
        raise BundleError(f"cannot extract code bundle into {dest}: {exc}") from exc
    try:
        staging.chmod(_DIR_MODE)
        _extract_into(data, staging, max_bytes)
        _replace_dir(staging, dest)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise BundleError(f"cannot extract code bundle into {dest}: {exc}") from exc
        raise


def _replace_dir(new: Path, dest: Path) -> None:
    """Rename `new` to `dest`; an existing `dest` is moved aside first, then deleted."""
    if not dest.exists() and not dest.is_symlink():
        new.rename(dest)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.replaced-", dir=dest.parent))
    aside = old / "dest"
    dest.rename(aside)
    try:
        new.rename(dest)
    except OSError:
        aside.rename(dest)  # put it back: `dest` stays as it was
        shutil.rmtree(old, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _extract_into(data: bytes, dest: Path, max_bytes: int) -> None:
    """Unpack into the empty directory `dest`, checking each member; BundleError or OSError."""
    dest_resolved = dest.resolve()
    total = 0
    entries = 0
    try:
        # Streaming mode: members are checked one by one before their content is read, so a
        # decompression bomb is stopped at the size bound rather than after inflating it all.
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|gz") as tar:
            for member in tar:
                entries += 1
                if entries > MAX_BUNDLE_ENTRIES:
                    raise BundleError(f"unsafe code bundle: more than {MAX_BUNDLE_ENTRIES} entries")
                relative = _safe_member_path(member.name)
                if not relative.parts:
                    if member.isdir():  # "./", as `tar -C dir .` writes it
                        continue
                    raise BundleError(f"unsafe code bundle: entry with empty name {member.name!r}")
                target = dest / relative
                if not target.resolve().is_relative_to(dest_resolved):
                    raise BundleError(
                        f"unsafe code bundle: {member.name!r} resolves outside the destination"
                    )
                if member.isdir():
                    target.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
                    continue
                if not member.isfile():
                    raise BundleError(
                        f"unsafe code bundle: {member.name!r} is not a regular file or directory"
                        " (links and special files are not allowed)"
                    )
                total += member.size
                if total > max_bytes:
                    raise BundleError(
                        f"code bundle unpacks to more than {_mib(max_bytes)}; refusing to extract"
                    )
                source = tar.extractfile(member)
                if source is None:  # pragma: no cover - isfile() members always have content
                    raise BundleError(f"code bundle entry {member.name!r} has no content")
                target.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
                if target.is_symlink():
                    target.unlink()
                with source, open(target, "wb") as out:
                    while chunk := source.read(_COPY_CHUNK):
                        out.write(chunk)
                target.chmod(_FILE_MODE)
    except BundleError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise BundleError(f"not a valid code bundle: {exc}") from exc
