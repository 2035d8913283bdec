"""`fleetflow run FILE TASK`: a single task run locally as a workflow of one node, with the
same input flags, outputs and errors as a workflow (its remote run is in
tests/integration/test_task_context.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.cli_harness import Invoke, cli_invoker, user_environment

TASKS = '''
"""Tasks to run alone."""

from typing import NamedTuple

from fleetflow import current_context, task, workflow


class Split(NamedTuple):
    low: list[int]
    high: list[int]


@task(retries=1)
def scale(xs: list[int], factor: float = 2.0) -> list[float]:
    """Multiply every x by the factor."""
    ctx = current_context()
    ctx.logger.info("scaling in %s, attempt %d", ctx.node_id, ctx.attempt_number)
    print("printed by the task")
    if ctx.attempt_number == 1 and ctx.checkpoint.read() is None:
        ctx.checkpoint.write(b"half done")
        raise RuntimeError("first attempt fails")
    return [x * factor for x in xs]


@task
def split(xs: list[int], at: int) -> Split:
    return Split(low=[x for x in xs if x < at], high=[x for x in xs if x >= at])


@task
def shout(message: str) -> None:
    print(message.upper())


@workflow
def pipeline(xs: list[int]) -> list[float]:
    return scale(xs=xs)
'''


@pytest.fixture(autouse=True)
def _user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    (tmp_path / "single_tasks.py").write_text(TASKS)
    yield from user_environment(monkeypatch, tmp_path)


@pytest.fixture
def fleetflow(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Invoke:
    return cli_invoker(monkeypatch, capsys)


def test_a_task_runs_alone_with_typed_flags_and_prints_its_outputs(fleetflow: Invoke) -> None:
    result = fleetflow("run", "single_tasks.py", "scale", "--xs", "[1, 2]", "--factor", "1.5")
    assert result.code == 0, result
    assert result.out.splitlines()[:2] == ["running task single_tasks.scale locally", "outputs:"]
    assert result.outputs() == {"o0": [1.5, 3.0]}
    # Retried as in a workflow, its context and logger as in a workflow's node.
    assert "task single_tasks.scale failed (attempt 1 of 2), retrying" in result.err
    assert "INFO single_tasks.scale: scaling in n0-scale, attempt 2" in result.err
    assert "printed by the task" in result.err  # what tasks print stays off stdout


def test_defaults_named_outputs_and_no_output(fleetflow: Invoke) -> None:
    defaults = fleetflow("run", "single_tasks.py", "scale", "--xs", "[3]")
    assert (defaults.code, defaults.outputs()) == (0, {"o0": [6.0]})
    named = fleetflow("run", "single_tasks.py", "split", "--xs", "[1, 5, 9]", "--at", "5")
    assert (named.code, named.outputs()) == (0, {"low": [1], "high": [5, 9]})
    nothing = fleetflow("run", "single_tasks.py", "shout", "--message", "hi")
    assert (nothing.code, nothing.outputs()) == (0, {})
    assert "HI" in nothing.err


def test_workflows_still_run_by_name(fleetflow: Invoke) -> None:
    result = fleetflow("run", "single_tasks.py", "pipeline", "--xs", "[1]")
    assert result.code == 0, result
    assert result.out.splitlines()[0] == "running single_tasks.pipeline locally"
    assert result.outputs() == {"o0": [2.0]}


def test_an_unknown_name_lists_the_workflows_and_tasks(fleetflow: Invoke) -> None:
    result = fleetflow("run", "single_tasks.py", "scal", "--xs", "[1]")
    assert result.code == 2
    assert result.out == ""
    assert result.err.strip() == (
        "error: single_tasks.py has no @workflow named 'scal'; workflows in single_tasks.py: "
        "pipeline; tasks in single_tasks.py: scale, shout, split; did you mean 'scale'?"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [],
            "error: task 'single_tasks.scale' needs --xs (list[int]); its inputs: "
            "--xs list[int], --factor float (default 2.0)",
        ),
        (["--xs", "[1]", "--factor", "big"], "error: input 'factor': expected float, got 'big'"),
        (
            ["--xs", "[1]", "--facter", "2"],
            "error: task 'single_tasks.scale' has no input 'facter'; its inputs are: xs, "
            "factor; did you mean --factor?",
        ),
    ],
)
def test_missing_and_ill_typed_arguments_are_usage_errors(
    fleetflow: Invoke, args: list[str], message: str
) -> None:
    result = fleetflow("run", "single_tasks.py", "scale", *args)
    assert result.code == 2, result
    assert result.err.strip() == message
    assert "Traceback" not in result.err


def test_help_after_a_task_lists_its_inputs(fleetflow: Invoke) -> None:
    result = fleetflow("run", "single_tasks.py", "scale", "--help")
    assert result.code == 0, result
    lines = [line.rstrip() for line in result.out.splitlines()]
    assert lines[0] == "Usage: fleetflow run [--remote] single_tasks.py scale [--INPUT VALUE ...]"
    assert "Multiply every x by the factor." in lines
    assert "Inputs of task single_tasks.scale:" in lines
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in lines if line.startswith("  --")}
    assert rows == {"--xs": ["list[int]", "[required]"], "--factor": ["float", "[default: 2.0]"]}


def test_a_failing_task_is_reported_as_the_task(fleetflow: Invoke, tmp_path: Path) -> None:
    (tmp_path / "failing_task.py").write_text(
        "from fleetflow import task\n\n\n@task\ndef boom(x: int) -> int:\n"
        "    raise ValueError(f'bad x {x}')\n"
    )
    result = fleetflow("run", "failing_task.py", "boom", "--x", "3")
    assert result.code == 1
    assert "error: task 'failing_task.boom' failed locally: ValueError: bad x 3" in result.err
    assert "raise ValueError(f'bad x {x}')" in result.err  # the task's own traceback
