"""What `fleetflow run --remote` and `executions wait` show while an execution runs: elapsed
time per attempt, done/total per map node, and the last lines of a failed attempt's output."""

from __future__ import annotations

import io
import re
from typing import Any

from rich.console import Console

from fleetflow.cli.remote import AttemptProgress, describe_attempt, elapsed

START = "2026-11-29T10:00:00Z"


def attempt(
    node: str,
    index: int | None,
    status: str,
    *,
    number: int = 1,
    seconds: int | None = None,
) -> dict[str, Any]:
    """An attempt as the API shows it; `seconds`: it ran that long and ended."""
    finished = None
    if seconds is not None:
        finished = f"2026-11-29T10:{seconds // 60:02d}:{seconds % 60:02d}Z"
    return {
        "id": f"at-{node}-{index}-{number}",
        "node_id": node,
        "map_index": index,
        "attempt_number": number,
        "status": status,
        "cache_hit": False,
        "cluster": "local",
        "pending_reason": None,
        "started_at": START if status != "PENDING" else None,
        "finished_at": finished,
    }


def execution(*attempts: dict[str, Any]) -> dict[str, Any]:
    return {"id": "ex-1", "status": "RUNNING", "attempts": list(attempts)}


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=160, color_system=None), out


def last_table(text: str) -> str:
    return text[text.rindex("NODE") :]


def test_elapsed_is_to_the_end_or_to_now() -> None:
    assert elapsed(attempt("n0", None, "SUCCEEDED", seconds=125)) == "2m05s"
    assert elapsed(attempt("n0", None, "SUCCEEDED", seconds=3)) == "3.0s"
    running = attempt("n0", None, "RUNNING")
    assert elapsed(running) == ""  # not ended, and no clock given
    from datetime import UTC, datetime

    assert elapsed(running, now=datetime(2026, 11, 29, 11, 30, tzinfo=UTC)) == "1h30m"
    assert elapsed(attempt("n0", None, "PENDING")) == ""
    line = describe_attempt(attempt("n0-train", None, "SUCCEEDED", seconds=42))
    assert line == "n0-train (attempt 1) SUCCEEDED on local after 42s"


def test_the_live_table_shows_elapsed_time_and_map_progress() -> None:
    console, out = terminal()
    elements = [
        attempt("n1-square", 0, "SUCCEEDED", seconds=12),
        attempt("n1-square", 1, "SUCCEEDED", seconds=15),
        attempt("n1-square", 2, "SUCCEEDED", seconds=11),
        attempt("n1-square", 3, "FAILED", seconds=5),
        attempt("n1-square", 3, "RUNNING", number=2),
        attempt("n1-square", 4, "PENDING"),
    ]
    with AttemptProgress(console) as progress:
        progress.update(execution(attempt("n0-prep", None, "SUCCEEDED", seconds=90), *elements))
    table = last_table(out.getvalue())
    assert "ELAPSED" in table
    assert re.search(r"n0-prep\s+1\s+SUCCEEDED\s+local\s+1m30s", table), table
    # Element 3's retry is what counts: 3 of 5 elements done, one running, one waiting.
    assert re.search(r"n1-square\s+3/5 done\s+1 RUNNING 1 PENDING", table), table
    assert re.search(r"n1-square\s+0\s+1\s+SUCCEEDED\s+local\s+12s", table), table
    assert re.search(r"n1-square\s+3\s+1\s+FAILED\s+local\s+5.0s", table), table


def test_a_skipped_node_shows_as_skipped() -> None:
    """A conditional's branch not taken: its node is SKIPPED, never ran, on no cluster."""
    skipped = {
        **attempt("n1-big", None, "SKIPPED"),
        "cluster": None,
        "started_at": None,
        "finished_at": START,
    }
    console, out = terminal()
    with AttemptProgress(console) as progress:
        progress.update(execution(attempt("n0-prep", None, "SUCCEEDED", seconds=5), skipped))
    table = last_table(out.getvalue())
    row = next(line for line in table.splitlines() if "n1-big" in line)
    assert re.fullmatch(r"n1-big\s+1\s+SKIPPED\s*", row), table
    assert describe_attempt(skipped) == (
        "n1-big SKIPPED (its branch of a conditional was not taken)"
    )


def test_a_large_map_node_shows_only_its_elements_not_done() -> None:
    console, out = terminal()
    elements = [attempt("n1-square", i, "SUCCEEDED", seconds=1) for i in range(28)]
    elements += [attempt("n1-square", 28, "RUNNING"), attempt("n1-square", 29, "FAILED", seconds=2)]
    with AttemptProgress(console) as progress:
        progress.update(execution(*elements))
    table = last_table(out.getvalue())
    assert re.search(r"n1-square\s+28/30 done\s+1 RUNNING 1 FAILED", table), table
    assert re.search(r"n1-square\s+28\s+1\s+RUNNING", table), table
    assert not re.search(r"n1-square\s+27\s+1\s+SUCCEEDED", table), table
    assert "(28 more attempts)" in table


OUTPUT = "".join(f"step {i}\n" for i in range(20)) + "Traceback...\nValueError: bad row 7\n"


def test_a_failed_attempt_shows_the_end_of_its_output() -> None:
    failed = attempt("n0-load", None, "FAILED", seconds=4)
    asked: list[str] = []

    def fetch_log(entry: dict[str, Any]) -> str | None:
        asked.append(entry["id"])
        return OUTPUT

    # Not a terminal: the lines follow the attempt's own line.
    out = io.StringIO()
    plain = Console(file=out, force_terminal=False, width=200)
    with AttemptProgress(plain, fetch_log=fetch_log) as progress:
        progress.update(execution(attempt("n0-load", None, "RUNNING")))
        progress.update(execution(failed))
        progress.update(execution(failed, attempt("n0-load", None, "RUNNING", number=2)))
    lines = out.getvalue().splitlines()
    assert lines[0] == "  n0-load (attempt 1) RUNNING on local"
    assert lines[1] == "  n0-load (attempt 1) FAILED on local after 4.0s"
    assert lines[2:12] == [f"    | {text}" for text in OUTPUT.splitlines()[-10:]]
    assert lines[11] == "    | ValueError: bad row 7"
    assert lines[12] == "  n0-load (attempt 2) RUNNING on local"
    assert asked == [failed["id"]]  # read once

    # On a terminal: under the table.
    console, screen = terminal()
    with AttemptProgress(console, fetch_log=fetch_log) as progress:
        progress.update(execution(failed))
    shown = screen.getvalue()
    tail = shown[shown.rindex("last lines of its output") :]
    assert "| ValueError: bad row 7" in tail and "| step 12" in tail and "step 11" not in tail


def test_a_failed_attempt_whose_output_is_not_stored_yet_is_read_again() -> None:
    failed = attempt("n0-load", None, "FAILED", seconds=4)
    answers: list[str | None] = [None, "late line\n"]

    def fetch_log(entry: dict[str, Any]) -> str | None:
        return answers.pop(0) if answers else "late line\n"

    console, screen = terminal()
    with AttemptProgress(console, fetch_log=fetch_log) as progress:
        progress.update(execution(failed))
        assert "late line" not in screen.getvalue()
        progress.update({**execution(failed), "status": "FAILED"})
    assert "| late line" in screen.getvalue()
