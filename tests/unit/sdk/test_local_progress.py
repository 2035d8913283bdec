"""Local runs tell what they are doing: `fleetflow run` prints each node's progress on stderr,
prefixes what each map element prints with the element, and keeps stdout for the result."""

from __future__ import annotations

import io
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetflow import map_task, task, workflow
from fleetflow.logs import SDK_LOG_PREFIX, sdk_lines_to
from tests.unit.cli_harness import Invoke, cli_invoker, user_environment

FLOW = """
import sys
import threading

from fleetflow import map_task, task, workflow

ELEMENTS = 3
# Every element writes half a line, then waits until all of them have: unless each line is
# written whole, the halves of different elements end up on one line.
HALFWAY = threading.Barrier(ELEMENTS, timeout=60)


@task
def numbers(n: int) -> list[int]:
    print(f"making {n} numbers")
    return list(range(n))


@task
def square(x: int) -> int:
    sys.stdout.write(f"epoch 1 of element {x}")
    HALFWAY.wait()
    print(f", squared: {x * x}")
    print(f"a warning from {x}", file=sys.stderr)
    return x * x


@task
def total(values: list[int]) -> int:
    return sum(values)


@workflow
def squares() -> int:
    return total(values=map_task(square, concurrency=ELEMENTS)(x=numbers(n=ELEMENTS)))


@task
def fragile(x: int) -> int:
    print(f"trying {x}")
    if x == 1:
        raise ValueError(f"cannot take {x}")
    return x


@workflow
def breaks() -> list[int]:
    return map_task(fragile, concurrency=1)(x=[0, 1, 2])
"""


@pytest.fixture
def user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A user with nothing configured, working in `tmp_path` where `flow.py` is."""
    (tmp_path / "flow.py").write_text(FLOW)
    for _ in user_environment(monkeypatch, tmp_path):
        yield tmp_path


@pytest.fixture
def fleetflow(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Invoke:
    return cli_invoker(monkeypatch, capsys)


def test_a_local_run_shows_progress_and_labelled_element_output(
    user: Path, fleetflow: Invoke
) -> None:
    result = fleetflow("run", "flow.py", "squares")
    assert result.code == 0, result

    # Stdout holds only the result; everything else went to stderr.
    assert result.out.splitlines() == ["running flow.squares locally", "outputs:", '{"o0": 5}']
    lines = result.err.splitlines()
    prefix = f"{SDK_LOG_PREFIX} "
    ours = [line.removeprefix(prefix) for line in lines if line.startswith(prefix)]
    theirs = [line for line in lines if not line.startswith(prefix)]

    # Each element's lines whole and labelled, whichever order the elements finished in; a
    # plain node's print as it was written.
    assert sorted(theirs) == sorted(
        [
            "making 3 numbers",
            *(f"[n1-square[{x}]] epoch 1 of element {x}, squared: {x * x}" for x in range(3)),
            *(f"[n1-square[{x}]] a warning from {x}" for x in range(3)),
        ]
    )

    elapsed = r"\d+(\.\d+)?s"
    expected = [
        r"n0-numbers started \(task flow\.numbers\)",
        rf"n0-numbers succeeded in {elapsed}",
        r"n1-square started: 3 element\(s\), up to 3 at a time \(task flow\.square\)",
        *(rf"n1-square\[\d\] succeeded in {elapsed} \({done}/3 done\)" for done in (1, 2, 3)),
        rf"n1-square succeeded in {elapsed} \(3 elements\)",
        r"n2-total started \(task flow\.total\)",
        rf"n2-total succeeded in {elapsed}",
        rf"workflow flow\.squares succeeded in {elapsed}",
    ]
    assert len(ours) == len(expected), ours
    for line, pattern in zip(ours, expected, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)
    finished = {re.match(r"n1-square\[(\d)\]", line)[1] for line in ours[3:6]}  # type: ignore[index]
    assert finished == {"0", "1", "2"}


def test_a_failing_element_is_named_in_the_progress_and_the_error(
    user: Path, fleetflow: Invoke
) -> None:
    result = fleetflow("run", "flow.py", "breaks")
    assert result.code == 1
    assert result.out.splitlines() == ["running flow.breaks locally"]
    lines = result.err.splitlines()
    assert "[n0-fragile[0]] trying 0" in lines and "[n0-fragile[1]] trying 1" in lines
    assert any(
        re.fullmatch(r"\[fleetflow\] n0-fragile\[1\] failed after \S+s \(ValueError\)", line)
        for line in lines
    )
    assert "[fleetflow] n0-fragile failed after" in result.err
    assert "in element 1 of map node 'n0-fragile'" in result.err
    assert lines[-1] == "error: workflow 'flow.breaks' failed locally: ValueError: cannot take 1"


# ------------------------------------------------------------------ from Python


@task
def shout(word: str) -> str:
    print(f"shouting {word}")
    print("twice", file=sys.stderr)
    return word.upper()


@task
def words() -> list[str]:
    print("no element here")
    return ["a", "b"]


@workflow
def shouting() -> list[str]:
    return map_task(shout)(word=words())


def test_map_task_outside_a_workflow_labels_the_elements_output(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stdout, stderr = sys.stdout, sys.stderr
    assert map_task(shout)(word=["a", "b"]) == ["A", "B"]
    captured = capsys.readouterr()
    assert sorted(captured.out.splitlines()) == ["[shout[0]] shouting a", "[shout[1]] shouting b"]
    assert sorted(captured.err.splitlines()) == ["[shout[0]] twice", "[shout[1]] twice"]
    # The streams are the ones the elements found, again.
    assert (sys.stdout, sys.stderr) == (stdout, stderr)
    print("after")
    assert capsys.readouterr().out == "after\n"


def test_a_workflow_called_from_python_logs_its_progress(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="fleetflow.local"):
        assert shouting() == ["A", "B"]
    messages = [r.getMessage() for r in caplog.records if r.name == "fleetflow.local"]
    assert messages[0] == f"n0-words started (task {words.spec.name})"
    assert any(re.fullmatch(r"n1-shout\[[01]\] succeeded in \S+ \(2/2 done\)", m) for m in messages)
    assert messages[-1].startswith(f"workflow {shouting.spec.name} succeeded in ")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "no element here"  # not in a map element: untouched
    assert sorted(out[1:]) == ["[n1-shout[0]] shouting a", "[n1-shout[1]] shouting b"]


def test_sdk_lines_are_prefixed_and_kept_from_the_root_handlers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = io.StringIO()
    sdk = logging.getLogger("fleetflow")
    before = (sdk.level, sdk.propagate, list(sdk.handlers))
    with caplog.at_level(logging.INFO), sdk_lines_to(stream):
        logging.getLogger("fleetflow.local").info("n0-x started")
        logging.getLogger("fleetflow.local").warning("retrying")
        logging.getLogger("user_code").info("the task's own")
    assert stream.getvalue() == "[fleetflow] n0-x started\n[fleetflow] WARNING: retrying\n"
    assert [r.getMessage() for r in caplog.records] == ["the task's own"]
    assert (sdk.level, sdk.propagate, list(sdk.handlers)) == before

    timed = io.StringIO()
    with sdk_lines_to(timed, timestamps=True):
        logging.getLogger("fleetflow.runtime").info("running m.f")
    assert re.fullmatch(r"\[fleetflow\] \S+ \S+ INFO running m\.f\n", timed.getvalue())
