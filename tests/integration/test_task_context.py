"""`fleetflow.current_context()` on the platform has the shape it has locally: the execution's
id, the node ids as compiled, attempt numbers counting retries, map indexes, a fresh working
directory, a logger writing into the attempt's log; and `fleetflow run --remote FILE TASK`
runs a single task as a workflow of one node."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from fleetflow.client import ExecutionResult
from fleetflow.loader import load_workflow
from tests.integration.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.stacks("sqlite", "postgres-split-worker")]

WORKFLOWS = Path(__file__).parent / "workflows" / "context_tasks.py"


def _fields(report: Any) -> dict[str, Any]:
    return dataclasses.asdict(report)


def test_a_tasks_context_has_the_same_shape_remotely_as_locally(stack: Stack) -> None:
    flow, _ = load_workflow(WORKFLOWS, "context_flow")
    local = flow(x=1, xs=[5, 6, 7])
    with stack.client() as client:
        result = client.run(flow, x=1, xs=[5, 6, 7], timeout=120)
        assert isinstance(result, ExecutionResult)
        assert result.status == "SUCCEEDED", f"{result.error}\n{stack.logs()}"
        remote = result.outputs
        logs = client.executions.logs(result.id, node="n0-fails_once", attempt=2)

    # The same fields, of the same types, wherever the task ran.
    for here, there in [
        (local.retried, remote.retried),
        *zip(local.elements, remote.elements, strict=True),
    ]:
        mine, theirs = _fields(here), _fields(there)
        assert mine.keys() == theirs.keys()
        assert {k: type(v) for k, v in mine.items()} == {k: type(v) for k, v in theirs.items()}
        for same in (
            "node_id",
            "attempt_number",
            "map_index",
            "task_name",
            "workdir_was_empty",
            "checkpoint",
        ):
            assert mine[same] == theirs[same], same
        assert (mine["local"], theirs["local"]) == (True, False)

    assert local.retried.execution_id.startswith("local-")
    assert {r.execution_id for r in [remote.retried, *remote.elements]} == {result.id}
    assert (remote.retried.node_id, remote.retried.attempt_number) == ("n0-fails_once", 2)
    assert remote.retried.map_index is None
    assert [(e.node_id, e.map_index, e.attempt_number) for e in remote.elements] == [
        ("n1-element", 0, 1),
        ("n1-element", 1, 1),
        ("n1-element", 2, 1),
    ]
    assert remote.retried.workdir_was_empty
    # Each report names the attempt the control plane recorded for it.
    attempts = {(a.node_id, a.map_index, a.attempt_number): a.id for a in result.execution.attempts}
    for report in [remote.retried, *remote.elements]:
        key = (report.node_id, report.map_index, report.attempt_number)
        assert report.attempt_id == attempts[key]
    # The retry read what the first attempt checkpointed; another unit sees none of it.
    assert remote.retried.checkpoint == "from attempt 1"
    assert {e.checkpoint for e in remote.elements} == {"none"}
    # The context's logger writes into the attempt's log.
    (log,) = logs
    assert log.log is not None
    assert "INFO context_tasks.fails_once: context of n0-fails_once attempt 2" in log.log


def test_a_hostile_tasks_planted_checkpoint_link_is_not_followed(
    stack: Stack, tmp_path: Path
) -> None:
    secret = tmp_path / "agent-only.key"
    secret.write_text("the agent's secret")
    secret.chmod(0o600)
    flow, _ = load_workflow(WORKFLOWS, "hostile_checkpoint")
    with stack.client() as client:
        result = client.run(flow, secret=str(secret), timeout=120)
    assert isinstance(result, ExecutionResult)
    assert result.status == "SUCCEEDED", f"{result.error}\n{stack.logs()}"
    # The agent refused to upload the link's target: the retry got no checkpoint at all.
    assert result.outputs == "none"
    assert "checkpoint checkpoint.bin not kept" in stack.logs()


def test_cli_runs_a_single_task_remotely(stack: Stack) -> None:
    run = stack.cli("run", "--remote", str(WORKFLOWS), "element", "--x", "3")
    assert run.returncode == 0, run.stdout + run.stderr + stack.logs()
    assert "task context_tasks.element runs on the control plane as a workflow of one" in run.stdout
    assert re.search(r"n0-element \(attempt 1\) SUCCEEDED on local", run.stdout), run.stdout
    report = json.loads(run.stdout.strip().splitlines()[-1])["o0"]
    assert re.fullmatch(r"ex-[0-9a-f]+", report["execution_id"])
    assert (report["node_id"], report["attempt_number"], report["map_index"]) == (
        "n0-element",
        1,
        None,
    )
    assert report["local"] is False
