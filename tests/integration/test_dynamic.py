"""Dynamic tasks through the whole stack: the sub-DAG built at run time runs on the agents
as the local run runs it (same outputs), its nodes show in `executions get`, a control-plane
restart mid sub-DAG loses nothing, and a mistyped body, a nesting too deep and forged
sub-DAGs fail the execution with a clear message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleetflow.loader import load_workflow
from tests.integration.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.stacks("sqlite", "postgres-split-worker")]

WORKFLOWS = Path(__file__).parent / "workflows" / "dynamic_flows.py"


def run(stack: Stack, workflow: str, **inputs: Any) -> Any:
    execution_id = stack.launch(WORKFLOWS, workflow, **inputs)
    return stack.client().wait_for_execution(execution_id, timeout=120)


def local(workflow: str, **inputs: Any) -> Any:
    wf, _ = load_workflow(WORKFLOWS, workflow)
    return wf.run_local(inputs)


def test_a_dynamic_run_matches_the_local_run(stack: Stack) -> None:
    final = run(stack, "squares", n=3)
    assert final.status == "SUCCEEDED", stack.logs()
    assert final.outputs == local("squares", n=3) == {"o0": 20}
    nodes = {attempt.node_id for attempt in final.attempts}
    # The workflow's nodes, the sub-DAGs' (nested ones too) named under their dynamic node.
    assert {"n1-sum_squares", "n1-sum_squares/n0-square", "n1-sum_squares/n5-add"} <= nodes
    assert "n2-nested/n1-sum_squares/n1-add" in nodes
    maps = [a for a in final.attempts if a.node_id == "n2-nested/n2-square"]
    assert sorted(a.map_index for a in maps) == [0, 1, 2]  # a map node in a sub-DAG
    assert all(str(a.status) == "SUCCEEDED" for a in final.attempts)
    shown = stack.cli("executions", "get", final.id)
    assert shown.returncode == 0, shown.stderr
    # The sub-DAG's nodes follow their dynamic node's own attempt, one level deeper.
    assert "\n  n1-sum_squares (attempt 1) SUCCEEDED" in shown.stdout
    assert "\n    n4-square (attempt 1) SUCCEEDED" in shown.stdout
    assert "n1-sum_squares (sub-workflow)" not in shown.stdout


def test_a_conditional_in_a_sub_dag(stack: Stack) -> None:
    for n, skipped in ((3, "n0-by_sign/n2-add"), (-2, "n0-by_sign/n1-square")):
        final = run(stack, "signs", n=n)
        assert final.status == "SUCCEEDED", stack.logs()
        assert final.outputs == local("signs", n=n)
        status = {a.node_id: str(a.status) for a in final.attempts}
        assert status[skipped] == "SKIPPED"


def test_control_plane_restart_mid_sub_dag(exchange_dir: Path, stack: Stack) -> None:
    marker = exchange_dir / "dynamic.txt"
    client = stack.client()
    execution_id = stack.launch(WORKFLOWS, "slow", n=4, seconds=3.0, marker=str(marker))
    stack.wait_for(marker.exists, "the sub-DAG's first task to run")
    stack.restart_control_plane()  # SIGKILL and start again while the sub-DAG runs
    final = client.wait_for_execution(execution_id, timeout=120)
    assert final.status == "SUCCEEDED", stack.logs()
    assert final.outputs == {"o0": 8}
    assert "n0-slow_steps/n1-pause" in {a.node_id for a in final.attempts}


def test_cancelling_mid_sub_dag_cancels_its_attempts(exchange_dir: Path, stack: Stack) -> None:
    marker = exchange_dir / "cancelled.txt"
    client = stack.client()
    execution_id = stack.launch(WORKFLOWS, "slow", n=4, seconds=60.0, marker=str(marker))
    stack.wait_for(marker.exists, "the sub-DAG's first task to run")
    client.executions.cancel(execution_id)
    final = client.wait_for_execution(execution_id, timeout=120)
    assert final.status == "CANCELLED", stack.logs()
    sub = [a for a in final.attempts if a.node_id.startswith("n0-slow_steps/")]
    assert sub and all(str(a.status) == "CANCELLED" for a in sub)


def test_a_mistyped_body_fails_naming_its_line(stack: Stack) -> None:
    final = run(stack, "mistyped_flow", n=2)
    assert final.status == "FAILED", stack.logs()
    message = final.error["message"]
    assert "parameter 'a' of task 'dynamic_flows.add' expects int" in message
    line = next(
        number
        for number, text in enumerate(WORKFLOWS.read_text().splitlines(), 1)
        if "add(a=str(n), b=n)" in text
    )
    assert f"dynamic_flows.py:{line}" in message


def test_nesting_beyond_the_bound_fails_the_execution(stack: Stack) -> None:
    final = run(stack, "deep", level=5)
    assert final.status == "FAILED", stack.logs()
    assert "nested 5 deep; at most 4 levels" in final.error["message"]
    assert run(stack, "deep", level=3).outputs == {"o0": 1}


@pytest.mark.parametrize(
    ("workflow", "reason"),
    [
        ("foreign_flow", "is not in the execution's code bundle (no module 'not_in_the_bundle')"),
        ("too_many_flow", "built a sub-DAG of 1001 nodes; the limit is 1000"),
    ],
)
def test_a_forged_sub_dag_is_refused(stack: Stack, workflow: str, reason: str) -> None:
    final = run(stack, workflow, n=2)
    assert final.status == "FAILED", stack.logs()
    message = final.error["message"]
    assert message.startswith("n0-") and "is refused" in message and reason in message
    assert not [a for a in final.attempts if "/" in a.node_id]  # none of its nodes ran
