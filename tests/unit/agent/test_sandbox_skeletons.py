"""Sandbox directories kept for the next attempt (data_plane_agent/executors/sandbox_skeletons.py):
only the skeleton's directories survive, as the agent's, and a skeleton a task marked or
rearranged is deleted instead of kept."""

from __future__ import annotations

import fcntl
import os
import stat
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from data_plane_agent.executors.local_process import LocalProcessExecutor
from data_plane_agent.executors.sandbox_skeletons import SandboxSkeletons
from fleetflow.states import AttemptState
from tests.polling import wait_until_async
from tests.unit.agent.test_local_process_executor import DEADLINE_SECONDS, Blobs, finish

LAYOUT = ("tmp", "staged", "staged/downloads", "staged/outputs")
_FS_IOC_SETFLAGS = 0x40086602
_FS_SYNC_FL = 0x00000008  # `chattr +S`: an owner may set it on its own directory


def sandbox_with_litter(root: Path, outside: Path) -> Path:
    """A finished attempt's sandbox: the layout, and what a task may leave in it."""
    sandbox = root / "att-1"
    for relative in ("", *LAYOUT):
        (sandbox / relative).mkdir(parents=True)
        (sandbox / relative / "left-behind").write_text("secret")
    (sandbox / "code" / "pkg").mkdir(parents=True)
    (sandbox / "tmp" / "tree" / "deeper").mkdir(parents=True)
    (sandbox / "tmp" / "tree" / "deeper" / "file").write_text("secret")
    (sandbox / "tmp" / "link-out").symlink_to(outside)
    (sandbox / "tmp" / "link-dir").symlink_to(outside.parent, target_is_directory=True)
    os.link(outside, sandbox / "tmp" / "hard-link")
    os.mkfifo(sandbox / "tmp" / "pipe")
    os.chmod(sandbox / "tmp", 0o2777)
    return sandbox


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file of someone else's that links in a sandbox point to: never touched."""
    target = tmp_path / "outside" / "precious"
    target.parent.mkdir()
    target.write_text("keep me")
    return target


def test_a_kept_sandbox_holds_only_its_directories_again_as_the_agents(
    tmp_path: Path, outside: Path
) -> None:
    skeletons = SandboxSkeletons(tmp_path / "sandboxes" / ".skeletons", LAYOUT)
    sandbox = sandbox_with_litter(tmp_path / "sandboxes", outside)
    inode = sandbox.stat().st_ino
    (sandbox / "staged" / "downloads" / "left-behind").unlink()
    (sandbox / "staged" / "downloads").rmdir()  # a task may remove one: it is made again

    skeletons.recycle(sandbox)

    assert not sandbox.exists(), "the attempt's path outlived its sandbox"
    assert len(skeletons) == 1
    again = tmp_path / "sandboxes" / "att-2"
    assert skeletons.take(again)
    assert again.stat().st_ino == inode, "not the kept directory"
    assert tree(again) == sorted(LAYOUT)
    for relative in ("", *LAYOUT):
        info = (again / relative).lstat()
        assert (info.st_uid, info.st_gid) == (os.geteuid(), os.getegid())
        assert stat.S_IMODE(info.st_mode) & 0o7022 == 0, oct(info.st_mode)  # no setgid, o+w
    assert stat.S_IMODE(again.stat().st_mode) == 0o700
    assert outside.read_text() == "keep me"
    assert outside.stat().st_nlink == 1
    assert not skeletons.take(tmp_path / "sandboxes" / "att-3"), "one skeleton taken twice"


def _swap_staged_for_a_link(sandbox: Path, outside: Path) -> None:
    (sandbox / "staged").rename(sandbox / "staged-moved")
    (sandbox / "staged").symlink_to(outside.parent, target_is_directory=True)


def _mark_tmp_with_an_xattr(sandbox: Path, outside: Path) -> None:
    os.setxattr(sandbox / "tmp", "user.planted", b"for the next attempt")


def _make_outputs_synchronous(sandbox: Path, outside: Path) -> None:
    fd = os.open(sandbox / "staged" / "outputs", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("i", _FS_SYNC_FL))
    finally:
        os.close(fd)


def _put_a_file_for_downloads(sandbox: Path, outside: Path) -> None:
    (sandbox / "staged" / "downloads" / "left-behind").unlink()
    (sandbox / "staged" / "downloads").rmdir()
    (sandbox / "staged" / "downloads").write_text("not a directory")


@pytest.mark.parametrize(
    "mark",
    [
        _swap_staged_for_a_link,
        _mark_tmp_with_an_xattr,
        _make_outputs_synchronous,
        _put_a_file_for_downloads,
    ],
    ids=["link-in-place", "xattr", "inode-flag", "file-in-place"],
)
def test_a_sandbox_its_task_marked_or_rearranged_is_deleted_not_kept(
    tmp_path: Path, outside: Path, mark: Callable[[Path, Path], None]
) -> None:
    skeletons = SandboxSkeletons(tmp_path / "sandboxes" / ".skeletons", LAYOUT)
    sandbox = sandbox_with_litter(tmp_path / "sandboxes", outside)
    mark(sandbox, outside)

    skeletons.recycle(sandbox)

    assert len(skeletons) == 0
    assert not skeletons.take(tmp_path / "sandboxes" / "att-2")
    assert not sandbox.exists()
    assert list((tmp_path / "sandboxes" / ".skeletons").iterdir()) == [], "left behind"
    assert tree(outside.parent) == ["precious"]
    assert outside.read_text() == "keep me"


def test_no_more_than_the_capacity_is_kept(tmp_path: Path, outside: Path) -> None:
    skeletons = SandboxSkeletons(tmp_path / "sandboxes" / ".skeletons", LAYOUT, capacity=2)
    for number in range(3):
        sandbox = tmp_path / "sandboxes" / f"att-{number}"
        for relative in ("", *LAYOUT):
            (sandbox / relative).mkdir(parents=True)
        skeletons.recycle(sandbox)

    assert len(skeletons) == 2
    assert len(list((tmp_path / "sandboxes" / ".skeletons").iterdir())) == 2
    skeletons.drop()
    assert not (tmp_path / "sandboxes" / ".skeletons").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="a sandbox is kept only for tasks of their own uid")
@pytest.mark.parametrize("warm", [True, False], ids=["warm", "exec"])
async def test_the_next_attempt_finds_nothing_of_the_last_in_the_sandbox_it_inherits(
    tmp_path: Path, warm: bool
) -> None:
    blobs = Blobs(tmp_path / "blobs")
    executor = LocalProcessExecutor(tmp_path / "agent", kill_grace_seconds=1.0, warm_runtime=warm)
    try:
        litter = blobs.assignment("att-litter", "litter_sandbox", {})
        assert (await finish(executor, litter)).state is AttemptState.SUCCEEDED
        first_inode = blobs.outputs(litter)["o0"]
        await wait_until_async(
            lambda: len(executor.sandbox_skeletons) == 1,
            timeout=DEADLINE_SECONDS,
            message="the first sandbox kept",
        )

        survey = blobs.assignment("att-survey", "survey_sandbox", {})
        done = await finish(executor, survey)
        assert done.state is AttemptState.SUCCEEDED, done.message
        seen = blobs.outputs(survey)["o0"]
    finally:
        await executor.shutdown("test over")

    assert seen["inode"] == first_inode, "the second attempt did not get the kept sandbox"
    # A fresh sandbox's layout (no checkpoint: these attempts have none), nothing else.
    assert seen["entries"] == [
        "staged",
        "staged/downloads",
        "staged/inputs.json",
        "staged/outputs",
        "tmp",
    ]
    assert seen["owners"] == [seen["me"]], "something of the sandbox is not the task's own"
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert seen["tmp_mode"] == oct(stat.S_IMODE(fresh.stat().st_mode)), "tmp's mode was kept"
