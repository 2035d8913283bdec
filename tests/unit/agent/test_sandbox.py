"""Task users and sandboxes of the local-process executor (data_plane_agent/sandbox.py)."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from data_plane_agent import sandbox
from data_plane_agent.executors.base import ExecutorStartError
from data_plane_agent.sandbox import (
    TaskUsers,
    UidRange,
    read_regular_file,
    resolve_isolation,
    traversable_by_others,
)
from fleetflow.child_processes import as_user_argv
from tests.polling import wait_until

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@pytest.mark.parametrize(
    ("text", "problem"),
    [("abc", "expected FIRST-LAST"), ("0-10", "0 < FIRST"), ("20-10", "FIRST <= LAST")],
)
def test_a_bad_uid_range_is_refused_with_the_expected_form(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        UidRange.parse(text)


def test_uids_are_never_shared_by_running_attempts_nor_an_accounts() -> None:
    accounts = {entry.pw_uid for entry in pwd.getpwall()} | {g.gr_gid for g in grp.getgrall()}
    named = next(uid for uid in sorted(accounts) if uid > 0 and not {uid + 1, uid + 2} & accounts)
    users = TaskUsers(UidRange(named, named + 2))

    first, second = users.acquire(), users.acquire()

    assert named not in (first, second), "a uid naming an account was handed out"
    assert first != second
    with pytest.raises(ExecutorStartError, match="no free task uid"):
        users.acquire()
    users.release(first)
    assert users.acquire() == first


def test_two_agents_of_one_machine_never_hand_out_the_same_uid(tmp_path: Path) -> None:
    # Both draw from the default range: a uid is locked machine-wide while an attempt holds
    # it, or one agent would kill the other's task when its own attempt of that uid ends.
    east, west = (
        TaskUsers(UidRange(60000, 60001), tmp_path),
        TaskUsers(UidRange(60000, 60001), tmp_path),
    )

    first = east.acquire()
    second = west.acquire()

    assert first != second
    with pytest.raises(ExecutorStartError, match="no free task uid"):
        west.acquire()
    east.release(first)
    assert west.acquire() == first


@contextlib.contextmanager
def leftover_of(uid: int) -> Iterator[subprocess.Popen[bytes]]:
    """A process running as `uid`, as an agent that died holding it would leave one."""
    leftover = subprocess.Popen(as_user_argv(uid, ["sleep", "600"]))
    try:
        wait_until(
            lambda: uid in _uids(leftover.pid),
            timeout=30,
            interval=0.02,
            message="the leftover to switch to its uid",
        )
        yield leftover
    finally:
        leftover.kill()
        leftover.wait()


@as_root
def test_a_uid_is_handed_out_only_once_nothing_runs_as_it(tmp_path: Path) -> None:
    # A task of an agent that died (and so never killed it) still runs as the uid: the next
    # attempt given that uid must not share it with that task.
    with leftover_of(60010) as leftover:
        assert TaskUsers(UidRange(60010, 60010), tmp_path).acquire() == 60010

        assert leftover.wait(timeout=30) == -signal.SIGKILL


def test_only_a_uid_given_up_swept_is_handed_out_without_a_look_at_every_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked: list[int] = []
    monkeypatch.setattr(sandbox, "kill_processes_of", lambda uid: looked.append(uid) or True)
    users = TaskUsers(UidRange(60030, 60030), tmp_path)

    assert users.acquire() == 60030
    assert looked == [60030], "a uid never given up swept was handed out unswept"
    users.release(60030, swept=True)
    assert users.acquire() == 60030
    assert looked == [60030], "a uid given up swept was swept again"
    users.release(60030)  # unswept (a failed launch, a cancelled watcher)
    assert users.acquire() == 60030
    assert looked == [60030, 60030]

    # Its holder dies: the kernel drops the lock, the file still says held.
    os.close(users._held.pop(60030))
    assert TaskUsers(UidRange(60030, 60030), tmp_path).acquire() == 60030
    assert looked == [60030] * 3, "the uid of a holder that died was handed out unswept"


@as_root
def test_a_process_left_by_an_agent_that_died_after_a_swept_release_is_killed(
    tmp_path: Path,
) -> None:
    # The dead agent had taken the uid after a swept release (its file said swept, then
    # held): the next holder must still look.
    users = TaskUsers(UidRange(60040, 60040), tmp_path)
    users.release(users.acquire(), swept=True)
    assert users.acquire() == 60040
    with leftover_of(60040) as leftover:
        os.close(users._held.pop(60040))  # the agent dies holding it

        assert TaskUsers(UidRange(60040, 60040), tmp_path).acquire() == 60040

        assert leftover.wait(timeout=30) == -signal.SIGKILL


@as_root
def test_a_process_that_is_the_uid_only_in_its_real_or_saved_uid_is_killed(
    tmp_path: Path,
) -> None:
    # Effective uid elsewhere, the task's uid kept as the real and saved ones: it could take
    # the uid back at any time, so it counts as running as it.
    for ids in ((60020, 60021, 60021), (60021, 60021, 60020)):
        switch = f"import os, time; os.setresuid{ids}; time.sleep(600)"
        leftover = subprocess.Popen(["python3", "-c", switch])
        try:
            wait_until(
                lambda: 60021 in _uids(leftover.pid),  # noqa: B023 - waited on here
                timeout=30,
                interval=0.02,
                message="the leftover to switch its uids",
            )

            users = TaskUsers(UidRange(60020, 60020), tmp_path)
            assert users.acquire() == 60020
            users.release(60020)

            assert leftover.wait(timeout=30) == -signal.SIGKILL
        finally:
            leftover.kill()
            leftover.wait()


def _uids(pid: int) -> set[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return {int(part) for part in line.split()[1:]}
    return set()


@as_root
def test_an_agent_running_as_root_refuses_to_run_tasks_as_itself(tmp_path: Path) -> None:
    with pytest.raises(ExecutorStartError, match="must run tasks as other"):
        resolve_isolation(tmp_path / "agent", task_uids="off")


@as_root
def test_sandboxes_leave_an_owner_only_work_dir_for_a_reachable_place(tmp_path: Path) -> None:
    work_dir = tmp_path / "agent"  # below pytest's owner-only directory
    isolation = resolve_isolation(work_dir)

    assert isolation.users is not None
    assert not isolation.sandbox_root.is_relative_to(tmp_path)
    assert traversable_by_others(isolation.sandbox_root)
    assert isolation.sandbox_root.stat().st_mode & 0o777 == 0o711  # passable, not listable


def test_a_link_or_someone_elses_file_is_not_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("only the agent's")
    link = tmp_path / "result.json"
    link.symlink_to(secret)

    assert read_regular_file(link, None, 100) is None
    assert read_regular_file(secret, os.geteuid() + 1, 100) is None
    assert read_regular_file(secret, os.geteuid(), 100) == b"only the agent's"
