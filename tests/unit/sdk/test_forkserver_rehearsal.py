"""The fork server's rehearsal (`fleetflow.forkserver._rehearse`) and its spares' writing ahead.

A fork shares every page until one side writes it. The server learns once, from a child that
runs a no-op attempt, which of its pages an attempt writes; each spare copies those while it
waits, so the attempt does not fault on them. These tests run the rehearsal from the test
process (the server's role) and check the mechanism on real pages: what is learnt, what writing
ahead does (and does not change), and what happens when the rehearsal fails or is meddled with.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

import pytest

from fleetflow import forkserver

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="the fork server writes pages ahead on Linux only"
)
PAGE = os.sysconf("SC_PAGE_SIZE")


def pages(runs: list[tuple[int, int]]) -> set[int]:
    return {address for start, end in runs for address in range(start, end, PAGE)}


def test_the_rehearsal_learns_pages_of_the_servers_own_that_an_attempt_writes() -> None:
    writable = forkserver._private_writable_ranges()

    runs = forkserver._rehearse()

    assert runs, "a no-op attempt writes some of the server's pages"
    assert all(start % PAGE == 0 and end % PAGE == 0 and start < end for start, end in runs)
    assert all(any(low <= a < high for low, high in writable) for a in pages(runs))
    assert len(pages(runs)) <= forkserver.MAX_PREFAULT_PAGES


def test_writing_ahead_copies_the_pages_and_leaves_what_they_hold() -> None:
    data = bytearray(os.urandom(16 * PAGE))
    address = ctypes.addressof((ctypes.c_char * len(data)).from_buffer(data))
    start = -(-address // PAGE) * PAGE  # the whole pages inside `data`
    runs = [(start, start + 8 * PAGE)]
    expected = bytes(data)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # a spare: shares the pages until it writes them
        try:
            before = forkserver._held_alone(runs)
            forkserver._write_ahead(runs)
            after = forkserver._held_alone(runs)
            verdict = (not before, after == pages(runs), bytes(data) == expected)
            os.write(write_end, repr(verdict).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with open(read_end, "rb") as pipe:
        verdict = pipe.read().decode()
    os.waitpid(pid, 0)

    assert verdict == repr((True, True, True)), "(shared before, its own after, unchanged)"


def test_a_run_the_process_no_longer_maps_is_skipped() -> None:
    gone = forkserver._private_writable_ranges()[-1][1] + 1024 * PAGE  # nothing mapped there

    forkserver._write_ahead([(gone, gone + PAGE)])  # no exception, nothing mapped


def test_a_failed_rehearsal_is_said_and_nothing_is_written_ahead(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        forkserver,
        "REHEARSAL_SOURCE",
        "import fleetflow\n\n@fleetflow.task\n"
        "def rehearsal(x: int) -> int:\n    raise OSError(5)\n",
    )

    assert forkserver._rehearse() == []
    said = capfd.readouterr().err
    assert "the rehearsal attempt failed" in said
    assert "OSError" in said
    assert "copies the pages it writes as it goes" in said


def test_a_module_planted_where_the_rehearsal_runs_is_not_what_it_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A task of an earlier server may write to the tasks' temporary directory and to the
    # server's working directory: neither is where the rehearsal imports its task from.
    marker = tmp_path / "planted-module-ran"
    planted = (
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "import fleetflow\n\n@fleetflow.task\ndef rehearsal(x: int) -> int:\n    return x\n"
    )
    for directory in (tmp_path / "tmp", tmp_path / "cwd"):
        directory.mkdir()
        (directory / f"{forkserver.REHEARSAL_MODULE}.py").write_text(planted)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr("tempfile.tempdir", None)
    monkeypatch.chdir(tmp_path / "cwd")

    assert forkserver._rehearse()
    assert not marker.exists()
    assert not list((tmp_path / "tmp").glob("fleetflow-rehearsal-*")), "its scratch is removed"
