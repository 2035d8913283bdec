"""Sub-workflows through the whole stack: a workflow calling a sub-workflow (itself calling
one, with a map node, a conditional and a `.fail`, and called in a branch) gives the outputs a
local run gives, its nodes show as a tree in `executions get`, a `.fail` inside it ends the
execution, and a control-plane restart mid-run loses nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fleetflow.loader import load_workflow
from tests.integration.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.stacks("sqlite", "postgres-split-worker")]

WORKFLOWS = Path(__file__).parent / "workflows" / "subworkflow_flows.py"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "subworkflows.py"


def statuses(final: Any) -> dict[str, str]:
    """Node id -> the status of its latest attempt (of one of its elements, for a map)."""
    found: dict[str, str] = {}
    for attempt in sorted(final.attempts, key=lambda a: a.attempt_number):
        found[attempt.node_id] = str(attempt.status)
    return found


@pytest.mark.parametrize("n", [4, 2])
def test_remote_outputs_equal_local_ones(stack: Stack, n: int) -> None:
    wf, _ = load_workflow(WORKFLOWS, "pipeline")
    local = wf(n=n)
    with stack.client() as client:
        result = client.run(wf, n=n, timeout=120)
    assert result.status == "SUCCEEDED", f"{result.error}\n{stack.logs()}"
    assert result.outputs == local
    found = statuses(result.execution)
    big = n > 3
    assert found == {
        "n0-make_data": "SUCCEEDED",
        "n1-training/n0-featurize/n0-square": "SUCCEEDED",
        "n1-training/n1-fit": "SUCCEEDED",
        "n1-training/n2-careful_fit": "SKIPPED",
        "n4-training/n0-featurize/n0-square": "SUCCEEDED" if big else "SKIPPED",
        "n4-training/n1-fit": "SKIPPED",
        "n4-training/n2-careful_fit": "SUCCEEDED" if big else "SKIPPED",
        "n7-training/n0-featurize/n0-square": "SKIPPED" if big else "SUCCEEDED",
        "n7-training/n1-fit": "SKIPPED" if big else "SUCCEEDED",
        "n7-training/n2-careful_fit": "SKIPPED",
        "n10-summarize": "SUCCEEDED",
    }
    squares = [
        a.map_index
        for a in result.execution.attempts
        if a.node_id == "n1-training/n0-featurize/n0-square"
    ]
    assert sorted(squares) == list(range(n))
    if not big:
        return
    logs = stack.client().executions.logs(result.execution.id, node="n1-training/n1-fit")
    assert [entry.node_id for entry in logs] == ["n1-training/n1-fit"]
    shown = stack.cli("executions", "get", result.execution.id)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    call = lines.index("  n1-training (sub-workflow)")
    assert lines[call + 1] == "    n0-featurize (sub-workflow)"
    assert lines[call + 2].startswith("      n0-square[")
    assert "    n2-careful_fit SKIPPED (its branch of a conditional was not taken)" in lines
    assert "  n4-training (sub-workflow)" in lines
    assert any(line.startswith("  n10-summarize (attempt 1) SUCCEEDED") for line in lines)


def test_a_fail_branch_inside_a_sub_workflow_ends_the_execution(stack: Stack) -> None:
    client = stack.client()
    execution_id = stack.launch(WORKFLOWS, "bad_mode", n=2, mode="bogus")
    final = client.wait_for_execution(execution_id, timeout=120)
    assert final.status == "FAILED", stack.logs()
    assert final.error is not None and final.error["message"] == "unknown training mode"
    # Its condition reads only inputs: decided at once, before any fit could run.
    found = statuses(final)
    assert found.get("n1-training/n1-fit") in (None, "SKIPPED")
    assert found.get("n1-training/n2-careful_fit") in (None, "SKIPPED")


def test_control_plane_restart_mid_run(exchange_dir: Path, stack: Stack) -> None:
    marker = exchange_dir / "making-data.txt"
    client = stack.client()
    execution_id = stack.launch(WORKFLOWS, "pipeline", n=5, seconds=3.0, marker=str(marker))
    stack.wait_for(marker.exists, "the first task to run")
    stack.restart_control_plane()  # SIGKILL and start again while the task runs
    final = client.wait_for_execution(execution_id, timeout=120)
    assert final.status == "SUCCEEDED", stack.logs()
    wf, _ = load_workflow(WORKFLOWS, "pipeline")
    assert final.outputs == {"o0": wf(n=5)}
    assert statuses(final)["n7-training/n1-fit"] == "SKIPPED"


def test_the_example_runs_remotely_from_the_cli(stack: Stack) -> None:
    # Both runs from the CLI: the example's module name is that of this test's workflows.
    args = [str(EXAMPLE), "retrain_if_drifted", "--n", "60", "--drift", "0.8"]
    local = stack.cli("run", *args)
    assert local.returncode == 0, local.stderr
    ran = stack.cli("run", "--remote", *args)
    assert ran.returncode == 0, ran.stderr + stack.logs()
    outputs = json.loads(ran.stdout.strip().splitlines()[-1])
    assert outputs == json.loads(local.stdout.strip().splitlines()[-1])
    progress = ran.stdout + ran.stderr
    assert "n2-train_and_score/n1-fit (attempt 1) SUCCEEDED" in progress
    assert "n5-reference_error SKIPPED" in progress
