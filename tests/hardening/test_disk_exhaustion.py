"""Disk exhaustion (issue 13, finding 8): what the agent writes to disk is bounded over time.

A code bundle refused part-way through extraction leaves nothing behind (it is unpacked beside
its destination and renamed into place only when complete), and finished attempts' directories
are deleted by the local-process executor's retention policy, oldest first, never a running
attempt's. Time is injected (file modification times and the executor's clock), not waited for.
"""

from __future__ import annotations

import gzip
import io
import os
import random
import tarfile
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

import fleetflow.bundle
from data_plane_agent.executors.local_process import (
    AttemptDirRetention,
    LocalProcessExecutor,
    MeasuredDirs,
    retention_from_settings,
    sweep_finished_attempt_dirs,
)
from data_plane_agent.settings import AgentSettings
from fleetflow.bundle import BundleError, extract_bundle
from fleetflow.states import AttemptState
from tests.polling import wait_until_async
from tests.unit.agent.test_local_process_executor import Blobs, next_event

HOUR = 3600.0
DEADLINE_SECONDS = 60.0


def tarball(*members: tuple[str, bytes | None], truncate: int = 0) -> bytes:
    """A tar.gz of regular files (bytes) and symlinks (None, pointing to /etc)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.SYMTYPE
                info.linkname = "/etc"
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    packed = gzip.compress(raw.getvalue())
    return packed[: len(packed) - truncate] if truncate else packed


def many_files(count: int, size: int = 1024) -> list[tuple[str, bytes | None]]:
    return [(f"pkg/f{i:06d}.py", b"#" * size) for i in range(count)]


@pytest.mark.parametrize(
    ("archive", "max_bytes", "reason"),
    [
        # 40 files fit, the 41st trips the size bound: 40 KiB were already written.
        (tarball(*many_files(60)), 40 * 1024 + 10, "unpacks to more than"),
        (tarball(*many_files(30), ("pkg/link", None)), 10**6, "not a regular file"),
        (tarball(*many_files(30), ("../evil.py", b"x")), 10**6, "escapes the destination"),
        (tarball(*many_files(200, size=4096), truncate=64), 10**7, "not a valid code bundle"),
    ],
    ids=["too-large", "symlink", "dotdot", "truncated"],
)
def test_a_refused_bundle_leaves_nothing_behind(
    archive: bytes, max_bytes: int, reason: str, tmp_path: Path
) -> None:
    attempt = tmp_path / "attempt"
    attempt.mkdir()
    with pytest.raises(BundleError, match=reason):
        extract_bundle(archive, attempt / "code", max_bytes=max_bytes)
    assert list(attempt.iterdir()) == []
    assert not (tmp_path / "evil.py").exists()


def test_too_many_entries_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fleetflow.bundle, "MAX_BUNDLE_ENTRIES", 50)
    with pytest.raises(BundleError, match="more than 50 entries"):
        extract_bundle(tarball(*many_files(80, size=16)), tmp_path / "code")
    assert list(tmp_path.iterdir()) == []


def test_a_refused_bundle_leaves_the_previous_extraction_as_it_was(tmp_path: Path) -> None:
    dest = tmp_path / "code"
    extract_bundle(tarball(("old.py", b"OLD = 1\n")), dest)
    with pytest.raises(BundleError):
        extract_bundle(tarball(*many_files(60)), dest, max_bytes=40 * 1024)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["code"]
    assert [p.name for p in dest.iterdir()] == ["old.py"]
    # An accepted bundle replaces the earlier tree as a whole: no stale files survive.
    extract_bundle(tarball(("new.py", b"NEW = 1\n")), dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["code"]
    assert [p.name for p in dest.iterdir()] == ["new.py"]


def attempt_dir(root: Path, attempt_id: str, *, written: float, size: int = 100) -> Path:
    """An attempt directory as the executor leaves it, last written at `written`."""
    directory = root / attempt_id
    (directory / "code" / "pkg").mkdir(parents=True)
    (directory / "code" / "pkg" / "data.bin").write_bytes(b"\0" * size)
    (directory / "log.txt").write_text("log\n")
    for path in sorted(directory.rglob("*"), reverse=True) + [directory]:  # deepest first
        os.utime(path, (written, written))
    return directory


def remaining(root: Path) -> set[str]:
    return {p.name for p in root.iterdir()}


def test_retention_deletes_old_finished_dirs_and_keeps_running_and_young_ones(
    tmp_path: Path,
) -> None:
    now = 1_000_000_000.0
    root = tmp_path / "attempts"
    attempt_dir(root, "old", written=now - 25 * HOUR)
    attempt_dir(root, "older", written=now - 100 * HOUR)
    attempt_dir(root, "young", written=now - 23 * HOUR)
    attempt_dir(root, "running-long", written=now - 200 * HOUR)  # still running: kept
    retention = AttemptDirRetention(keep_seconds=24 * HOUR, max_total_bytes=0)

    deleted = sweep_finished_attempt_dirs(root, {"running-long"}, retention, now=now)

    assert deleted == ["older", "old"]  # oldest first
    assert remaining(root) == {"young", "running-long"}
    # A later sweep, once "young" has aged too.
    assert sweep_finished_attempt_dirs(root, {"running-long"}, retention, now=now + HOUR) == [
        "young"
    ]
    assert remaining(root) == {"running-long"}


def test_retention_honours_the_size_cap_oldest_first(tmp_path: Path) -> None:
    now = 1_000_000_000.0
    root = tmp_path / "attempts"
    size = 10_000
    for age, name in enumerate(["e", "d", "c", "b", "a"]):  # "a" the oldest
        attempt_dir(root, name, written=now - (age + 1) * 60, size=size)
    attempt_dir(root, "running", written=now - 10 * HOUR, size=size)
    # Six directories of a little over 10 kB; room for three and a half.
    retention = AttemptDirRetention(keep_seconds=24 * HOUR, max_total_bytes=35_000)

    deleted = sweep_finished_attempt_dirs(root, {"running"}, retention, now=now)

    assert deleted == ["a", "b", "c"]  # the running attempt counts, but is never deleted
    assert remaining(root) == {"d", "e", "running"}
    # Even when running attempts alone exceed the cap, they stay.
    tight = AttemptDirRetention(keep_seconds=24 * HOUR, max_total_bytes=1)
    assert sweep_finished_attempt_dirs(root, {"running"}, tight, now=now) == ["d", "e"]
    assert remaining(root) == {"running"}


def test_a_finished_directory_is_measured_once_across_sweeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The executor sweeps after every attempt: with thousands of finished directories (a
    large map), walking each of them every time would make every attempt cost O(n)."""
    import data_plane_agent.executors.local_process as local_process

    now = 1_000_000_000.0
    root = tmp_path / "attempts"
    for name in ("a", "b", "c"):
        attempt_dir(root, name, written=now - 60, size=10_000)
    attempt_dir(root, "running", written=now, size=10_000)
    walked: list[str] = []
    tree_bytes = local_process._tree_bytes  # noqa: SLF001

    def counting(directory: Path) -> int:
        walked.append(directory.name)
        return tree_bytes(directory)

    monkeypatch.setattr(local_process, "_tree_bytes", counting)
    measured: dict[str, tuple[float, int]] = {}
    keep = AttemptDirRetention(keep_seconds=24 * HOUR, max_total_bytes=0)
    assert sweep_finished_attempt_dirs(root, {"running"}, keep, now=now, measured=measured) == []
    assert sorted(walked) == ["a", "b", "c", "running"]
    walked.clear()
    attempt_dir(root, "d", written=now, size=10_000)  # finished since
    # The cap counts what was measured before: room for three of the five, oldest go first.
    tight = AttemptDirRetention(keep_seconds=24 * HOUR, max_total_bytes=35_000)
    deleted = sweep_finished_attempt_dirs(root, {"running"}, tight, now=now, measured=measured)
    assert sorted(walked) == ["d", "running"]  # only the new one and the running one
    assert deleted == ["a", "b"] and remaining(root) == {"c", "d", "running"}
    assert sorted(measured) == ["c", "d"]


def test_the_sweep_after_an_attempt_lists_the_directories_only_when_one_may_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import data_plane_agent.executors.local_process as local_process

    now = [1_000_000_000.0]
    executor = LocalProcessExecutor(
        tmp_path / "agent",
        retention=AttemptDirRetention(keep_seconds=HOUR, max_total_bytes=55_000),
        clock=lambda: now[0],
    )
    root = tmp_path / "agent" / "attempts"
    listed: list[int] = []
    full_sweep = local_process.sweep_finished_attempt_dirs

    def counting(*args: object, **kwargs: object) -> list[str]:
        listed.append(1)
        return full_sweep(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(local_process, "sweep_finished_attempt_dirs", counting)
    attempt_dir(root, "a", written=now[0] - 60, size=10_000)
    assert executor._sweep(set(), None) == []  # noqa: SLF001 - the periodic sweep: lists
    assert len(listed) == 1
    attempt_dir(root, "b", written=now[0], size=10_000)
    assert executor._sweep({"b"}, "b") == []  # noqa: SLF001 - young, under the cap: no listing
    assert len(listed) == 1
    now[0] += HOUR - 30  # "a" expired, "b" not yet
    attempt_dir(root, "c", written=now[0], size=10_000)
    assert executor._sweep({"c"}, "c") == ["a"]  # noqa: SLF001
    assert len(listed) == 2
    attempt_dir(root, "d", written=now[0], size=40_000)  # over the cap
    assert executor._sweep({"d"}, "d") == ["b"]  # noqa: SLF001
    assert len(listed) == 3


def test_the_measured_directories_keep_their_total_and_oldest_write_as_they_change() -> None:
    """What the sweep after every attempt asks (`_none_may_go`) is kept up to date, not summed
    over thousands of entries each time; checked against the sum and minimum after every change
    of a random sequence, as the executor and the sweep make them."""
    rng = random.Random(15)
    measured = MeasuredDirs()
    reference: dict[str, tuple[float, int]] = {}
    for _ in range(3000):
        attempt_id = f"at-{rng.randrange(40)}"
        if attempt_id in reference and rng.random() < 0.4:
            del measured[attempt_id], reference[attempt_id]
        else:
            entry = (float(rng.randrange(100)), rng.randrange(1, 10_000))
            measured[attempt_id] = reference[attempt_id] = entry
        assert dict(measured) == reference
        assert measured.total_bytes == sum(size for _, size in reference.values())
        assert measured.oldest_write(default=-1.0) == min(
            (written for written, _ in reference.values()), default=-1.0
        )


def test_retention_settings_and_defaults() -> None:
    assert AttemptDirRetention() == AttemptDirRetention(
        keep_seconds=24 * HOUR, max_total_bytes=5 * 1024**3, sweep_interval_seconds=600.0
    )
    settings = AgentSettings(token="t", attempt_dirs_keep_hours=2, attempt_dirs_max_gib=0.5)
    retention = retention_from_settings(settings)
    assert retention.keep_seconds == 2 * HOUR
    assert retention.max_total_bytes == 512 * 1024**2
    defaults = retention_from_settings(AgentSettings(token="t"))
    assert (defaults.keep_seconds, defaults.max_total_bytes) == (24 * HOUR, 5 * 1024**3)


async def test_the_executor_sweeps_finished_attempts_and_never_a_running_one(
    exchange_dir: Path,
    tmp_path: Path,
) -> None:
    blobs = Blobs(tmp_path / "blobs")
    # The executor's clock runs two days ahead: every finished attempt is past its time.
    executor = LocalProcessExecutor(
        tmp_path / "agent",
        kill_grace_seconds=1.0,
        clock=lambda: time.time() + 48 * HOUR,
    )
    never = str(exchange_dir / "never-created")
    waiting = blobs.assignment(
        "at-running", "wait_for_file", {"path": never, "deadline_seconds": 600}
    )
    try:
        await executor.launch(waiting)
        assert (await next_event(executor)).state is AttemptState.RUNNING
        await executor.sweep_attempt_dirs()
        assert executor.attempt_dir("at-running").is_dir()

        quick = blobs.assignment("at-quick", "add", {"a": 1, "b": 2})
        await executor.launch(quick)
        assert (await next_event(executor)).state is AttemptState.RUNNING
        assert (await next_event(executor)).state is AttemptState.SUCCEEDED
        # The sweep when an attempt finishes spares that one (its log is still to be
        # uploaded), but not those that finished before it.
        second = blobs.assignment("at-quick-2", "add", {"a": 3, "b": 4})
        await executor.launch(second)
        assert (await next_event(executor)).state is AttemptState.RUNNING
        assert (await next_event(executor)).state is AttemptState.SUCCEEDED
        quick_dir = executor.attempt_dir("at-quick")
        await wait_until_async(
            lambda: not quick_dir.exists(),
            timeout=DEADLINE_SECONDS,
            message=f"{quick_dir} to be deleted",
        )
        assert executor.attempt_dir("at-running").is_dir()
        assert await executor.sweep_attempt_dirs() == ["at-quick-2"]
        assert executor.attempt_dir("at-running").is_dir()
    finally:
        await executor.shutdown("test over")
    assert (await next_event(executor)).state is AttemptState.CANCELLED
    assert executor.attempt_dir("at-running").is_dir()  # spared by its own finish
    assert await executor.sweep_attempt_dirs() == ["at-running"]


def test_the_agents_settings_reach_its_executor(tmp_path: Path) -> None:
    """`--keep-attempt-dirs-hours` / `--attempt-dirs-max-gib` (their settings) configure the
    executor the agent builds, not only the policy object."""
    from data_plane_agent.agent import default_executor

    settings = AgentSettings(
        work_dir=tmp_path,
        attempt_dirs_keep_hours=2,
        attempt_dirs_max_gib=1,
        token=SecretStr("t"),
    )
    executor = default_executor(settings)
    assert isinstance(executor, LocalProcessExecutor)
    assert executor._retention == AttemptDirRetention(  # noqa: SLF001
        keep_seconds=7200, max_total_bytes=1024**3
    )
