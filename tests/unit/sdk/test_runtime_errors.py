"""Runtime failures point at the task author's code, locally and in the task runtime alike: a
result that does not match its annotation names the task's `def`, and a task's traceback shows
the author's frames with the paths of their bundle, none of Fleetflow's."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from fleetflow import map_task, task, workflow
from fleetflow.bundle import build_bundle
from fleetflow.errors import (
    LiteralValidationError,
    TaskOutputError,
    format_user_traceback,
    shown_path,
)
from fleetflow.storage import LocalBlobStore
from tests.unit.cli_harness import Invoke, cli_invoker, user_environment

HERE = Path(__file__)


def def_location(name: str) -> str:
    """`file:line` of `def <name>(` in this file, as the errors show it."""
    lines = HERE.read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if text.startswith(f"def {name}("))
    return f"{shown_path(str(HERE))}:{line}"


# ------------------------------------------------------------------ results of the wrong type


@task
def lies(n: int) -> int:
    return "not an int"  # type: ignore[return-value]


@workflow
def lying(n: int = 1) -> int:
    return lies(n=n)


class Split(NamedTuple):
    train: list[float]
    test: list[float]


@task
def split_badly(xs: list[float]) -> Split:
    return Split(train=xs, test="x")  # type: ignore[arg-type]


@task
def split_short(xs: list[float]) -> Split:
    return ([1.0],)  # type: ignore[return-value]


@task
def fit(xs: list[float]) -> list[float]:
    return [*xs, "x"]  # type: ignore[list-item]


@workflow
def splitting_badly(xs: list[float]) -> Split:
    return split_badly(xs=xs)


@workflow
def splitting_short(xs: list[float]) -> Split:
    return split_short(xs=xs)


@workflow
def fitting(xs: list[float]) -> list[float]:
    return fit(xs=xs)


@workflow
def lying_map(ns: list[int]) -> list[int]:
    return map_task(lies)(n=ns)


def test_a_result_of_the_wrong_type_names_the_task_and_its_def() -> None:
    with pytest.raises(TaskOutputError) as info:
        lying()
    error = info.value
    assert (
        str(error) == f"task lies ({def_location('lies')}) returned str 'not an int', expected int"
    )
    assert (error.task, error.location) == (lies.spec.name, def_location("lies"))
    assert (error.returned, error.expected, error.output, error.detail) == (
        "str 'not an int'",
        "int",
        None,
        None,
    )
    # Still a LiteralValidationError saying where the value was checked.
    assert isinstance(error, LiteralValidationError)
    assert error.path == "n0-lies.outputs.o0"
    assert error.__notes__ == [
        f"in node 'n0-lies' (task '{lies.spec.name}') of workflow '{lying.spec.name}', run locally"
    ]


@pytest.mark.parametrize(
    ("run", "message"),
    [
        (
            lambda: splitting_badly(xs=[1.0]),
            "task split_badly ({split_badly}) returned str 'x' as output 'test', "
            "expected list[float]",
        ),
        (
            lambda: splitting_short(xs=[1.0]),
            "task split_short ({split_short}) returned tuple ([1.0],), "
            "expected Split (2 outputs: train, test)",
        ),
        (
            lambda: fitting(xs=[1.0]),
            "task fit ({fit}) returned list [1.0, 'x'], expected list[float]; "
            "at [1]: expected float, got str 'x'",
        ),
    ],
    ids=["named-tuple-field", "named-tuple-shape", "nested"],
)
def test_named_tuple_fields_and_nested_values(run: Any, message: str) -> None:
    with pytest.raises(TaskOutputError) as info:
        run()
    where = {name: def_location(name) for name in ("split_badly", "split_short", "fit")}
    assert str(info.value) == message.format(**where)


def test_a_map_element_of_the_wrong_type_names_the_element() -> None:
    with pytest.raises(TaskOutputError) as info:
        lying_map(ns=[1, 2])
    assert str(info.value).startswith(f"task lies ({def_location('lies')}) returned str")
    assert any("in element " in note and "n0-lies" in note for note in info.value.__notes__)

    with pytest.raises(TaskOutputError, match=r"^task lies \(.*\) returned str 'not an int'"):
        map_task(lies)(n=[1])  # outside a workflow


# ------------------------------------------------------------------ local tracebacks


def _inner(value: int) -> int:
    raise ValueError(f"cannot handle {value}")


@task
def explode(n: int) -> int:
    return _inner(n)


@workflow
def exploding(n: int = 3) -> int:
    return explode(n=n)


def test_a_local_traceback_keeps_only_the_authors_frames() -> None:
    with pytest.raises(ValueError, match="cannot handle 3") as info:
        exploding()
    shown = format_user_traceback(info.value)
    frames = re.findall(r'File "([^"]+)", line \d+, in (\w+)', shown)
    # The caller, then the task: the workflow call and the local runner in between are gone.
    assert frames == [
        (str(HERE), "test_a_local_traceback_keeps_only_the_authors_frames"),
        (str(HERE), "explode"),
        (str(HERE), "_inner"),
    ]
    assert shown.startswith("Traceback (most recent call last):\n")
    assert shown.rstrip().endswith(f"of workflow '{exploding.spec.name}', run locally")


def test_a_chained_exception_keeps_both_parts() -> None:
    def convert(text: str) -> int:
        try:
            return int(text)
        except ValueError as exc:
            raise RuntimeError("bad config") from exc

    with pytest.raises(RuntimeError) as info:
        convert("x")
    shown = format_user_traceback(info.value)
    assert "The above exception was the direct cause" in shown
    assert "invalid literal for int()" in shown and "RuntimeError: bad config" in shown


# ------------------------------------------------------------------ `fleetflow run`


@pytest.fixture
def user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A user with nothing configured, working in `tmp_path`."""
    for _ in user_environment(monkeypatch, tmp_path):
        yield tmp_path


@pytest.fixture
def fleetflow(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Invoke:
    return cli_invoker(monkeypatch, capsys)


def test_fleetflow_run_names_the_task_that_returned_the_wrong_type(
    user: Path, fleetflow: Invoke
) -> None:
    (user / "wrong.py").write_text(
        textwrap.dedent(
            """
            from fleetflow import task, workflow


            @task
            def train(n: int) -> int:
                return str(n)


            @workflow
            def pipe(n: int = 2) -> int:
                return train(n=n)
            """
        )
    )
    result = fleetflow("run", "wrong.py", "pipe")
    assert result.code == 1
    message = "task train (wrong.py:6) returned str '2', expected int"
    assert result.err.strip().splitlines()[-1] == (
        f"error: workflow 'wrong.pipe' failed locally: TaskOutputError: {message}"
    )
    assert "in node 'n0-train' (task 'wrong.train')" in result.err
    assert "Traceback" not in result.err  # no frame of the author's to show


# ------------------------------------------------------------------ the task runtime

BUNDLE_TASKS = """
import logging

from fleetflow import task
from helpers.maths import divide


@task
def explode(n: int) -> float:
    print(f"dividing {n} by zero")
    logging.getLogger("user_tasks").info("about to divide")
    return divide(n, 0)


@task
def wrong(n: int) -> int:
    return f"{n}"


@task
def missing_data() -> str:
    with open("data/missing.csv") as f:
        return f.read()
"""

BUNDLE_HELPER = """
def divide(a: int, b: int) -> float:
    return a / b
"""


@dataclass
class RuntimeRun:
    returncode: int
    stdout: str
    stderr: str
    result: dict[str, Any]
    workdir: Path


@pytest.fixture
def run_in_runtime(tmp_path: Path) -> Any:
    """Run one task of a small bundle with `python -m fleetflow.runtime`, as an agent does."""
    source = tmp_path / "project"
    (source / "helpers").mkdir(parents=True)
    (source / "user_tasks.py").write_text(BUNDLE_TASKS)
    (source / "helpers" / "__init__.py").write_text("")
    (source / "helpers" / "maths.py").write_text(BUNDLE_HELPER)
    store = LocalBlobStore(tmp_path / "blobs")
    digest, data = build_bundle(source)
    bundle_uri = store.put(f"bundles/{digest}.tar.gz", data)

    def run(function: str, inputs: dict[str, Any]) -> RuntimeRun:
        inputs_uri = store.put(f"e1/{function}/inputs.json", json.dumps(inputs).encode())
        attempt = tmp_path / "agent" / "attempts" / f"at-{function}"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "fleetflow.runtime",
                *("--bundle-uri", bundle_uri, "--inputs-uri", inputs_uri),
                *("--outputs-uri", store.uri(f"e1/{function}/outputs.json")),
                *("--module", "user_tasks", "--function", function),
                *("--result-file", str(attempt / "result.json")),
                *("--workdir", str(attempt / "code")),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        result = json.loads((attempt / "result.json").read_text())
        return RuntimeRun(proc.returncode, proc.stdout, proc.stderr, result, attempt / "code")

    return run


def test_runtime_traceback_shows_the_bundle_paths_and_no_runtime_frame(
    run_in_runtime: Any,
) -> None:
    run = run_in_runtime("explode", {"n": 3})
    assert run.returncode == 1
    assert run.result["message"] == "ZeroDivisionError: division by zero"
    traceback = run.result["traceback"]
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\w+)', traceback)
    assert frames == [("user_tasks.py", "12", "explode"), ("helpers/maths.py", "3", "divide")]
    assert "return divide(n, 0)" in traceback and "return a / b" in traceback
    assert str(run.workdir) not in traceback and "attempts" not in traceback
    assert "fleetflow" not in traceback
    # The log: the task's output untouched; on stderr, the runtime's own lines marked as such,
    # then the task's logging record and the same traceback as the result's, as they are.
    assert run.stdout == "dividing 3 by zero\n"
    lines = run.stderr.splitlines()
    ours = [line for line in lines if line.startswith("[fleetflow] ")]
    theirs = [line for line in lines if not line.startswith("[fleetflow] ")]
    assert re.fullmatch(r"\S+ \S+ INFO user_tasks: about to divide", theirs[0])
    assert theirs[1:] == traceback.splitlines()
    assert any(line.endswith(" INFO running user_tasks.explode") for line in ours)
    assert ours[-1].endswith(" ERROR task failed: ZeroDivisionError: division by zero")


def test_runtime_names_the_task_that_returned_the_wrong_type(run_in_runtime: Any) -> None:
    run = run_in_runtime("wrong", {"n": 4})
    assert run.returncode == 1
    assert run.result["message"] == (
        "TaskOutputError: task wrong (user_tasks.py:16) returned str '4', expected int"
    )
    # Raised after the task's code returned: no frame of the author's, no runtime frames.
    assert run.result["traceback"] == (
        "fleetflow.errors.TaskOutputError: task wrong (user_tasks.py:16) returned str '4', "
        "expected int\n"
    )


def test_runtime_messages_name_bundle_paths_relative_to_it(run_in_runtime: Any) -> None:
    run = run_in_runtime("missing_data", {})
    assert run.returncode == 1
    assert "'data/missing.csv'" in run.result["message"]
    assert str(run.workdir) not in run.result["message"] + run.result["traceback"]
    assert 'File "user_tasks.py", line 22, in missing_data' in run.result["traceback"]
