"""Sandbox directories kept from one attempt for the next, instead of deleted and made again.

A sandbox is a handful of directories (the sandbox itself, `tmp/`, `staged/` and the three below
it) besides its files. Made and deleted per attempt, they were half the inodes a no-op attempt
churned, and where the file system hands out inodes slowly under churn (ext4 without a journal
looks at every inode freed in the last 5-30 s before it hands one out, and a directory costs a
data block too) that was a fan-out's largest file-system cost.

A finished attempt's sandbox is kept (`recycle`) only when nothing of its task can reach it any
more: every process of its user was killed and none was left (the executor's sweep said so). It
is renamed out of the sandbox root at once (its path is gone), everything in it but the skeleton
directories is deleted, and each of those must still be a plain directory of the same file
system with no extended attribute (so no ACL) and no inode flag beyond what a directory made
here gets; any difference and the whole sandbox is deleted as before. A kept skeleton is the
agent's, mode 0700, until a launch renames it into place (`take`) and hands it to its task's
user as it would a fresh one. Holding at most `capacity`, the rest is deleted.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import stat
import struct
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_CAPACITY = 64
_SANDBOX_MODE = 0o700  # as a fresh sandbox is made
_FS_IOC_GETFLAGS = 0x80086601  # <linux/fs.h>: _IOR('f', 1, long)


@dataclass(frozen=True)
class _Fresh:
    """What a directory made here carries: the marks a kept one must not differ by."""

    mode: int  # permission bits (the process's umask applied)
    xattrs: frozenset[str]
    flags: int | None  # None: the file system keeps no inode flags


class SandboxSkeletons:
    """Kept sandbox skeletons in `directory` (emptied now: a previous agent's are not
    trusted), on the sandboxes' file system; safe to use from several threads. `layout`: the
    directories kept below a sandbox, relative to it, each after its parent."""

    def __init__(
        self, directory: Path, layout: tuple[str, ...], *, capacity: int = DEFAULT_CAPACITY
    ) -> None:
        self._directory = directory
        self._layout = layout
        self._capacity = capacity
        self._lock = threading.Lock()
        self._kept: list[Path] = []
        self._fresh: _Fresh | None = None  # learnt at the first recycle
        shutil.rmtree(directory, ignore_errors=True)

    def take(self, sandbox: Path) -> bool:
        """Put a kept skeleton at `sandbox` (absent); False when none is kept."""
        with self._lock:
            skeleton = self._kept.pop() if self._kept else None
        if skeleton is None:
            return False
        try:
            skeleton.rename(sandbox)
        except OSError:
            shutil.rmtree(skeleton, ignore_errors=True)
            return False
        return True

    def recycle(self, sandbox: Path) -> None:
        """Keep `sandbox`'s skeleton for a later attempt, or delete it whole. Call only when
        no process of its task is left."""
        with self._lock:
            full = len(self._kept) >= self._capacity
        if full or not sandbox.is_dir():
            shutil.rmtree(sandbox, ignore_errors=True)
            return
        skeleton = self._directory / uuid.uuid4().hex
        try:
            self._directory.mkdir(mode=0o700, exist_ok=True)
            sandbox.rename(skeleton)
        except OSError:
            shutil.rmtree(sandbox, ignore_errors=True)
            return
        try:
            clean = self._empty_and_reset(skeleton)
        except OSError as exc:
            logger.debug("sandbox %s not kept: %s", sandbox.name, exc)
            clean = False
        if clean:
            with self._lock:
                if len(self._kept) < self._capacity:
                    self._kept.append(skeleton)
                    return
        shutil.rmtree(skeleton, ignore_errors=True)

    def drop(self) -> None:
        """Delete every kept skeleton (the executor stops)."""
        with self._lock:
            self._kept.clear()
        shutil.rmtree(self._directory, ignore_errors=True)

    def __len__(self) -> int:
        with self._lock:
            return len(self._kept)

    def _empty_and_reset(self, root: Path) -> bool:
        """Delete everything below `root` but the skeleton's directories, then make those the
        agent's as fresh ones (made again where missing); False when one of them is not a plain
        directory or is marked (left for deletion)."""
        fresh = self._fresh or self._learn_fresh()
        device = os.lstat(root).st_dev
        for relative in ("", *self._layout):
            directory = root / relative
            try:
                info = os.lstat(directory)
            except FileNotFoundError:  # removed by its task, or never made (no checkpoint)
                directory.mkdir()
                info = os.lstat(directory)
            if not stat.S_ISDIR(info.st_mode) or info.st_dev != device:
                return False
            prefix = f"{relative}/" if relative else ""
            with os.scandir(directory) as entries:
                doomed = [e for e in entries if prefix + e.name not in self._layout]
            for entry in doomed:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)  # never follows a link out (fd-based)
                else:
                    os.unlink(entry.path)
            if not _unmarked(directory, fresh):
                return False
        uid, gid = os.geteuid(), os.getegid()
        for relative in ("", *self._layout):
            directory = root / relative
            os.chown(directory, uid, gid, follow_symlinks=False)
            os.chmod(directory, _SANDBOX_MODE if not relative else fresh.mode)
        return True

    def _learn_fresh(self) -> _Fresh:
        probe = self._directory / f"probe-{uuid.uuid4().hex}"
        probe.mkdir()
        try:
            self._fresh = _Fresh(
                mode=stat.S_IMODE(os.lstat(probe).st_mode),
                xattrs=frozenset(_xattr_names(probe)),
                flags=_inode_flags(probe),
            )
        finally:
            probe.rmdir()
        return self._fresh


def _unmarked(directory: Path, fresh: _Fresh) -> bool:
    """Whether `directory` carries no extended attribute and no inode flag a fresh one lacks
    (an ACL, a default ACL its new files would inherit, `chattr +S`...)."""
    return (
        frozenset(_xattr_names(directory)) == fresh.xattrs
        and _inode_flags(directory) == fresh.flags
    )


def _xattr_names(path: Path) -> list[str]:
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return []
        raise


def _inode_flags(directory: Path) -> int | None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):
            (flags,) = struct.unpack_from("i", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, bytes(8)))
            return int(flags)
        return None
    finally:
        os.close(fd)
