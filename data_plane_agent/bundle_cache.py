"""Code bundles unpacked once per bundle on this machine, staged into each attempt's sandbox.

Every attempt of a map runs the same bundle. Downloading it, checking its digest and unpacking
it in each attempt's process was a fifth of a no-op attempt's time there; the agent now does
that once per bundle and stages the unpacked tree into the attempt's `code/`. A bundle is
named by its sha256 and checked against it before it is unpacked (`fleetflow.bundle`). Trees
are kept by the bundle's whole URI, not its digest alone: an attempt gets code only from the
location the control plane named for it, as when each attempt downloaded it (a tenant that
names another's digest gets nothing it could not read before).

Each module of an unpacked bundle is compiled once, next to its source (`__pycache__`, checked
against the source's hash), so an attempt's process loads the bytecode of the modules it
imports instead of compiling them again (1.7 ms for a small module in a freshly forked
process).

Modules and their bytecode (`SHARED_SUFFIXES`) are hard links to the unpacked tree's files,
which are read-only and the agent's: no task can change what the next attempts import (it may
replace a module in its own `code/`, whose directories are its own). Every other file is a
copy the task owns and may change; the next attempt gets a fresh one. Links spare a copy of
each module per attempt, and a file created and deleted per attempt: where the sandboxes'
file system allocates inodes slowly under churn (ext4 without a journal skips every inode
freed in the last 5-30 s, one look each), the files created per attempt were the agent's
largest cost in a fan-out. A module that cannot be linked (the tree and the sandbox on two
file systems) is copied, read-only as well.

Each bundle's next tree is staged ahead (`prepare_spare`, after an attempt of it ended), in a
directory beside the sandboxes, so that its next attempt only renames it into its sandbox: a
chain's next step or a dispatch does not wait for it. A spare is made from the same checked
tree, and no task has seen it.

The cache lives in the agent's work directory (only the agent's user can read it), is emptied
when the agent starts, and keeps the `max_bundles` used last.
"""

from __future__ import annotations

import compileall
import hashlib
import os
import py_compile
import shutil
import stat
import threading
import uuid
from collections import OrderedDict
from pathlib import Path

from fleetflow.bundle import extract_bundle, verify_bundle
from fleetflow.storage import store_for_uri

DEFAULT_MAX_BUNDLES = 16
SHARED_SUFFIXES = (".py", ".pyc")
"""The files an attempt's `code/` shares, read-only, with the unpacked tree (hard links); the
task owns a copy of every other."""


def is_shared(name: str) -> bool:
    """Whether a file of an attempt's `code/` is the unpacked tree's own (never the task's to
    own or change)."""
    return name.endswith(SHARED_SUFFIXES)


class BundleCache:
    """Unpacked bundles under `directory`, by bundle URI; safe to use from several threads.

    Args:
        directory: Where they are unpacked (emptied now: a previous agent's are not trusted).
        max_bundles: How many are kept; the one used longest ago goes first, never one being
            copied.
        spares: Where copies made ahead wait (emptied now), on the file system of the copies'
            destinations so that one is moved with a rename; None: none are made.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_bundles: int = DEFAULT_MAX_BUNDLES,
        spares: Path | None = None,
    ) -> None:
        self._directory = directory
        self._spares_dir = spares
        self._max_bundles = max(1, max_bundles)
        self._lock = threading.Lock()
        # Bundle URI -> its unpacked tree, least recently used first.
        self._trees: OrderedDict[str, Path] = OrderedDict()
        # Bundle URI -> how many copies from its tree are under way (never deleted meanwhile).
        self._copying: dict[str, int] = {}
        # Bundle URI -> held while it is downloaded and unpacked (one download per bundle).
        self._unpacking: dict[str, threading.Lock] = {}
        # Bundle URI -> a copy of its tree made ahead, for its next attempt.
        self._spares: dict[str, Path] = {}
        self._making_spare: set[str] = set()
        for old in (directory, spares):
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)

    def copy_into(self, bundle_uri: str, dest: Path) -> None:
        """Stage the bundle's tree into `dest` (new): its directories, its modules linked and
        its other files copied; downloading, checking and unpacking it first if this agent has
        not yet.

        Raises:
            BundleError: the bundle is not the one its name promises, or is unsafe.
            FleetflowError, OSError: it cannot be read from the blob store, or copied.
        """
        with self._lock:
            spare = self._spares.pop(bundle_uri, None)
            if spare is not None:  # used now, as if copied from its tree
                self._trees.move_to_end(bundle_uri)
        if spare is not None:
            try:
                spare.rename(dest)
                return
            except OSError:  # dest's file system moved, say: copied as without a spare
                shutil.rmtree(spare, ignore_errors=True)
        tree = self._take(bundle_uri)
        try:
            _copy_tree(tree, dest)
        finally:
            self._done_copying(bundle_uri)

    def prepare_spare(self, bundle_uri: str) -> None:
        """Copy the bundle's tree ahead for its next attempt, unless it has a copy waiting
        already or is no longer held (no download here: only a bundle used before)."""
        spares = self._spares_dir
        with self._lock:
            tree = self._trees.get(bundle_uri)
            if (
                spares is None
                or tree is None
                or bundle_uri in self._spares
                or bundle_uri in self._making_spare
            ):
                return
            self._making_spare.add(bundle_uri)
            self._copying[bundle_uri] = self._copying.get(bundle_uri, 0) + 1
        spare = spares / uuid.uuid4().hex
        made = False
        try:
            spares.mkdir(mode=0o700, exist_ok=True)
            _copy_tree(tree, spare)
            made = True
        except OSError:  # the next attempt copies, as without a spare
            pass
        finally:
            self._done_copying(bundle_uri)
        with self._lock:
            self._making_spare.discard(bundle_uri)
            kept = made and bundle_uri in self._trees  # else evicted meanwhile
            if kept:
                self._spares[bundle_uri] = spare
        if not kept:
            shutil.rmtree(spare, ignore_errors=True)

    def drop_spares(self) -> None:
        """Delete the copies made ahead (the agent stops)."""
        with self._lock:
            self._spares.clear()
        if self._spares_dir is not None:
            shutil.rmtree(self._spares_dir, ignore_errors=True)

    def _done_copying(self, bundle_uri: str) -> None:
        with self._lock:
            self._copying[bundle_uri] -= 1
            if not self._copying[bundle_uri]:
                del self._copying[bundle_uri]

    def _take(self, bundle_uri: str) -> Path:
        """The bundle's unpacked tree, counted as being copied until `copy_into` is done."""
        with self._lock:
            unpacking = self._unpacking.setdefault(bundle_uri, threading.Lock())
        with unpacking:  # a second attempt of a new bundle waits for the first's download
            with self._lock:
                tree = self._trees.get(bundle_uri)
                if tree is not None:
                    self._trees.move_to_end(bundle_uri)
                    self._copying[bundle_uri] = self._copying.get(bundle_uri, 0) + 1
                    return tree
            try:
                tree = self._unpack(bundle_uri)
            finally:  # unpacked or refused: the next attempt of it looks again
                with self._lock:
                    self._unpacking.pop(bundle_uri, None)
            with self._lock:
                self._trees[bundle_uri] = tree
                self._copying[bundle_uri] = self._copying.get(bundle_uri, 0) + 1
                evicted = self._evict()
        for old in evicted:
            shutil.rmtree(old, ignore_errors=True)
        return tree

    def _unpack(self, bundle_uri: str) -> Path:
        data = store_for_uri(bundle_uri).get(bundle_uri)
        verify_bundle(bundle_uri, data)
        self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        tree = self._directory / hashlib.sha256(bundle_uri.encode()).hexdigest()
        extract_bundle(data, tree)
        _compile_modules(tree)
        _share_modules(tree)
        return tree

    def _evict(self) -> list[Path]:
        """Under the lock: drop the least recently used trees beyond the cap that no copy
        uses, and their spares; the directories to delete (outside the lock)."""
        gone = []
        for uri in list(self._trees):
            if len(self._trees) <= self._max_bundles:
                break
            if uri not in self._copying:
                gone.append(self._trees.pop(uri))
                spare = self._spares.pop(uri, None)
                if spare is not None:
                    gone.append(spare)
        return gone


def _compile_modules(tree: Path) -> None:
    """Bytecode for every module of `tree` (one that does not compile is left to fail in the
    task's process, where its error is reported)."""
    compileall.compile_dir(
        tree,
        quiet=2,
        force=True,
        workers=1,
        invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
    )


def _share_modules(tree: Path) -> None:
    """Make the files that attempts share with `tree` read-only (no write bit for anyone)."""
    for parent, _dirs, files in os.walk(tree):
        for name in files:
            if is_shared(name):
                path = os.path.join(parent, name)
                os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) & ~0o222)


def _copy_tree(tree: Path, dest: Path) -> None:
    """Stage the directories and regular files of `tree` (an unpacked bundle: nothing else is
    in one) into the new directory `dest`: modules as hard links (copied, with their read-only
    mode, where a link cannot be made), every other file a copy with this process's default
    mode."""
    dest.mkdir(mode=0o755)
    for parent, dirs, files in os.walk(tree):
        relative = os.path.relpath(parent, tree)
        target = dest if relative == "." else dest / relative
        for name in dirs:
            (target / name).mkdir(mode=0o755)
        for name in files:
            source = os.path.join(parent, name)
            if not is_shared(name):
                shutil.copyfile(source, target / name)
                continue
            try:
                os.link(source, target / name)
            except OSError:  # another file system, say
                shutil.copy(source, target / name)
