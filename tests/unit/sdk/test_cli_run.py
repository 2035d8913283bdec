"""`fleetflow run` locally: the workflow's own `--help`, outputs as one line of JSON, the opt-in
local cache; and how remote progress is shown. (Remote runs themselves are in
tests/integration/test_client.py.)"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from fleetflow.cache import CACHE_DIR_ENV
from fleetflow.cli.remote import AttemptProgress
from tests.unit.cli_harness import Invoke, cli_invoker, user_environment

FLOW = '''
"""Squares and stats."""

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional

from fleetflow import File, map_task, task, workflow


@dataclass
class Stats:
    total: int
    mean: float


class Summary(NamedTuple):
    stats: Stats
    squares: list[int]


@task
def square(x: int, offset: int) -> int:
    return x * x + offset


@task(cache=True, cache_version="1")
def stats(values: list[int], marker: str) -> Stats:
    with open(marker, "a") as f:
        f.write("ran\\n")
    return Stats(total=sum(values), mean=sum(values) / max(len(values), 1))


@task
def count_lines(data: File) -> int:
    return len(data.path.read_text().splitlines())


@workflow
def summarize(
    xs: list[int], marker: str, offset: int = 0, label: Optional[str] = None
) -> Summary:
    """Square every x, then sum them up.

    Two lines of docstring.
    """
    squares = map_task(square, concurrency=2)(x=xs, offset=offset)
    return Summary(stats=stats(values=squares, marker=marker), squares=squares)


@workflow
def lines(data: File) -> int:
    return count_lines(data=data)
'''


@pytest.fixture(autouse=True)
def _user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    (tmp_path / "cli_flow.py").write_text(FLOW)
    yield from user_environment(monkeypatch, tmp_path)


@pytest.fixture
def fleetflow(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Invoke:
    return cli_invoker(monkeypatch, capsys)


@pytest.mark.parametrize(
    "args",
    [
        ("run", "cli_flow.py", "summarize", "--help"),
        ("run", "cli_flow.py", "summarize", "-h"),
        ("run", "--remote", "cli_flow.py", "summarize", "--help"),
        ("run", "--timeout", "5", "cli_flow.py", "summarize", "--offset", "2", "--help"),
    ],
)
def test_help_after_the_workflow_lists_its_typed_inputs(
    fleetflow: Invoke, args: tuple[str, ...]
) -> None:
    result = fleetflow(*args)
    assert result.code == 0, result
    lines = [line.rstrip() for line in result.out.splitlines()]
    assert lines[0] == ("Usage: fleetflow run [--remote] cli_flow.py summarize [--INPUT VALUE ...]")
    assert "Square every x, then sum them up." in result.out
    assert "Inputs of workflow cli_flow.summarize:" in lines
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in lines if line.startswith("  --")}
    assert rows == {
        "--xs": ["list[int]", "[required]"],
        "--marker": ["str", "[required]"],
        "--offset": ["int", "[default: 0]"],
        "--label": ["Optional[str]", "[default: null]"],
    }
    assert "Outputs (printed as JSON): stats: Stats, squares: list[int]" in result.out
    assert "running" not in result.out  # nothing ran


def test_plain_run_help_is_still_the_commands_own(fleetflow: Invoke) -> None:
    for args in (("run", "--help"), ("run", "cli_flow.py", "--help")):
        result = fleetflow(*args)
        assert result.code == 0, result
        assert "--cache-dir" in result.out and "--no-wait" in result.out
        assert "Inputs of workflow" not in result.out


def test_help_for_a_workflow_that_does_not_exist_is_an_error(
    fleetflow: Invoke,
) -> None:
    result = fleetflow("run", "cli_flow.py", "nope", "--help")
    assert result.code == 2
    assert result.err.startswith(
        "error: cli_flow.py has no @workflow named 'nope'; workflows in cli_flow.py: lines, "
        "summarize"
    )


def test_local_outputs_are_json_by_output_name(fleetflow: Invoke, tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    result = fleetflow(
        "run", "cli_flow.py", "summarize", "--xs", "[1, 2, 3]", "--marker", str(marker)
    )
    assert result.code == 0, result
    assert result.out.splitlines()[:2] == ["running cli_flow.summarize locally", "outputs:"]
    assert result.outputs() == {"stats": {"total": 14, "mean": 14 / 3}, "squares": [1, 4, 9]}


def test_a_file_input_is_a_local_path(fleetflow: Invoke, tmp_path: Path) -> None:
    data = tmp_path / "data.txt"
    data.write_text("a\nb\n")
    result = fleetflow("run", "cli_flow.py", "lines", "--data", "data.txt")
    assert result.code == 0, result
    assert result.outputs() == {"o0": 2}


@pytest.mark.parametrize("how", ["flag", "env"])
def test_cache_dir_reuses_cached_task_outputs(
    fleetflow: Invoke,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    marker = tmp_path / "ran.txt"
    cache_dir = tmp_path / "cache"
    flags = ["--cache-dir", str(cache_dir)] if how == "flag" else []
    if how == "env":
        monkeypatch.setenv(CACHE_DIR_ENV, str(cache_dir))
    args = ("run", *flags, "cli_flow.py", "summarize", "--xs", "[2, 3]", "--marker", str(marker))
    first = fleetflow(*args)
    assert first.code == 0, first
    assert f"local cache {cache_dir}: 0 hit(s), 1 miss(es)" in first.out
    second = fleetflow(*args)
    assert second.code == 0, second
    assert f"local cache {cache_dir}: 1 hit(s), 0 miss(es)" in second.out
    assert second.outputs() == first.outputs()
    assert marker.read_text().count("ran") == 1

    # Without a cache directory the task runs again.
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    plain = fleetflow("run", "cli_flow.py", "summarize", "--xs", "[2, 3]", "--marker", str(marker))
    assert plain.code == 0 and "local cache" not in plain.out
    assert marker.read_text().count("ran") == 2


def snapshot(*attempts: tuple[str, int | None, str, bool]) -> dict[str, object]:
    return {
        "id": "ex-1",
        "status": "RUNNING",
        "attempts": [
            {
                "id": f"at-{node}-{index}",
                "node_id": node,
                "map_index": index,
                "attempt_number": 1,
                "status": status,
                "cache_hit": hit,
                "cluster": None if hit else "local",
            }
            for node, index, status, hit in attempts
        ],
    }


def test_remote_progress_is_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    with AttemptProgress(Console(file=out, force_terminal=False, width=200)) as progress:
        progress.update(snapshot(("n0-prep", None, "SUCCEEDED", True)))
        progress.update(
            snapshot(("n0-prep", None, "SUCCEEDED", True), ("n1-square", 0, "RUNNING", False))
        )
        progress.update(
            snapshot(("n0-prep", None, "SUCCEEDED", True), ("n1-square", 0, "SUCCEEDED", False))
        )
    assert out.getvalue().splitlines() == [
        "  n0-prep (attempt 1) SUCCEEDED (cache hit)",
        "  n1-square[0] (attempt 1) RUNNING on local",
        "  n1-square[0] (attempt 1) SUCCEEDED on local",
    ]


def test_remote_progress_is_a_live_table_on_a_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)
    with AttemptProgress(console) as progress:
        progress.update(snapshot(("n1-square", 3, "RUNNING", False)))
        progress.update(snapshot(("n1-square", 3, "SUCCEEDED", False)))
    text = out.getvalue()
    for column in ("NODE", "ELEMENT", "ATTEMPT", "STATUS", "CLUSTER"):
        assert column in text
    final = text[text.rindex("NODE") :]
    assert re.search(r"n1-square\s+3\s+1\s+SUCCEEDED\s+local", final), text


def test_cache_dir_is_refused_for_remote_runs(fleetflow: Invoke) -> None:
    args = ("run", "--remote", "--cache-dir", "c", "cli_flow.py", "summarize")
    result = fleetflow(*args, "--xs", "[1]", "--marker", "m")
    assert result.code == 2
    assert result.err == (
        "error: --cache-dir is for local runs; remote runs use the control plane's task cache\n"
    )
