"""A task failing on a cluster points at its author's code: through the real stack (REST API,
Temporal, agent, task process), the execution's error names the author's files as they are in
the code bundle and their lines, with none of the runtime's frames and nothing of the agent's
work directory; a result of the wrong type names the task's `def`; and the attempt's log keeps
the task's own output apart from the runtime's `[fleetflow]` lines."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from fleetflow.api_models.executions import AttemptLog, ExecutionPublic
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

WORKFLOWS = Path(__file__).parent / "workflows" / "remote_errors" / "remote_errors.py"
HELPERS = WORKFLOWS.parent / "remote_errors_lib" / "maths.py"
FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\w+)')


def line_of(path: Path, text: str) -> str:
    """The number of the line of `path` that contains `text`."""
    lines = path.read_text().splitlines()
    return str(next(number for number, line in enumerate(lines, 1) if text in line))


def run(stack: Stack, workflow: str, **inputs: Any) -> tuple[ExecutionPublic, list[AttemptLog]]:
    """Run `workflow` to its end; the execution and its attempts' logs."""
    execution_id = stack.launch(WORKFLOWS, workflow, **inputs)
    with stack.client() as client:
        final = client.wait_for_execution(execution_id, timeout=120)
        return final, client.executions.logs(execution_id)


def test_a_remote_traceback_shows_the_authors_frames_and_files(stack: Stack) -> None:
    final, logs = run(stack, "crashing", n=3)
    assert final.status == "FAILED", stack.logs()
    error = final.error
    assert error["node_id"].endswith("summarise")
    assert error["message"] == "ZeroDivisionError: division by zero"

    traceback = error["traceback"]
    assert FRAME.findall(traceback) == [
        ("remote_errors.py", line_of(WORKFLOWS, "return mean(values[skip:])"), "summarise"),
        ("remote_errors_lib/maths.py", line_of(HELPERS, "return sum(values)"), "mean"),
    ], traceback
    assert traceback.startswith("Traceback (most recent call last):\n")
    assert traceback.rstrip().endswith("ZeroDivisionError: division by zero")
    # Nothing of where the agent unpacked the bundle, no frame of the runtime.
    assert str(stack.home) not in traceback and "/attempts/" not in traceback
    assert "fleetflow" not in traceback

    # The attempt's log: the task's print and logging as they were, the same traceback, and
    # every other line the platform's own, marked as such.
    (attempt,) = [entry for entry in logs if entry.node_id == error["node_id"]]
    lines = attempt.log.splitlines()
    ours = [line for line in lines if line.startswith(("[fleetflow] ", "fleetflow agent: "))]
    theirs = [line for line in lines if line not in ours]
    assert theirs[0] == "summarising 0 of 3 values"
    assert re.fullmatch(r"\S+ \S+ INFO remote_errors: calling mean", theirs[1])
    assert theirs[2:] == traceback.splitlines()
    assert any(line.endswith(" INFO running remote_errors.summarise") for line in ours)
    assert ours[-1].endswith(" ERROR task failed: ZeroDivisionError: division by zero")


def test_a_remote_result_of_the_wrong_type_names_the_task_and_its_def(stack: Stack) -> None:
    final, logs = run(stack, "miscounting", n=2)
    assert final.status == "FAILED", stack.logs()
    error = final.error
    assert error["node_id"].endswith("count")
    where = f"remote_errors.py:{line_of(WORKFLOWS, 'def count(')}"
    message = f"task count ({where}) returned str '2 values', expected int"
    assert error["message"] == f"TaskOutputError: {message}"
    # Raised once the task's code had returned: no frame to show, the runtime's least of all.
    assert error["traceback"] == f"fleetflow.errors.TaskOutputError: {message}\n"
    assert str(stack.home) not in error["traceback"]
