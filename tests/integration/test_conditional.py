"""Conditionals through the whole stack: the branch taken runs, the others show SKIPPED in the
API, `.fail` ends the execution with its message, a control-plane restart mid-run loses
nothing, and a spec with an ill-typed condition is refused at registration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleetflow.bundle import build_bundle
from fleetflow.loader import load_workflow
from tests.integration.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.stacks("sqlite", "postgres-split-worker")]

WORKFLOWS = Path(__file__).parent / "workflows" / "conditional_flows.py"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "conditional.py"


def statuses(final: Any) -> dict[str, str]:
    """Node (without its `n<k>-` prefix) -> the status of its latest attempt."""
    found: dict[str, str] = {}
    for attempt in sorted(final.attempts, key=lambda a: a.attempt_number):
        found[attempt.node_id.split("-", 1)[1]] = str(attempt.status)
    return found


def run(stack: Stack, workflow: str, **inputs: Any) -> Any:
    client = stack.client()
    execution_id = stack.launch(WORKFLOWS, workflow, **inputs)
    return client.wait_for_execution(execution_id, timeout=120)


def test_each_branch_runs_and_the_other_shows_skipped(stack: Stack) -> None:
    taken = run(stack, "branching", n=20)
    assert taken.status == "SUCCEEDED", stack.logs()
    assert taken.outputs == {"o0": "value 2000"}
    assert statuses(taken) == {
        "measure": "SUCCEEDED",
        "big": "SUCCEEDED",
        "small": "SKIPPED",
        "describe": "SUCCEEDED",
    }
    other = run(stack, "branching", n=3)
    assert other.status == "SUCCEEDED", stack.logs()
    assert other.outputs == {"o0": "value -3"}
    assert statuses(other) == {
        "measure": "SUCCEEDED",
        "big": "SKIPPED",
        "small": "SUCCEEDED",
        "describe": "SUCCEEDED",
    }
    skipped = next(a for a in other.attempts if a.status == "SKIPPED")
    assert skipped.cluster is None and skipped.finished_at is not None
    logs = {entry.node_id: entry for entry in stack.client().executions.logs(other.id)}
    assert logs[skipped.node_id].status == "SKIPPED" and logs[skipped.node_id].log is None
    shown = stack.cli("executions", "get", other.id)
    assert shown.returncode == 0, shown.stderr
    assert "n1-big SKIPPED (its branch of a conditional was not taken)" in shown.stdout
    assert "n2-small (attempt 1) SUCCEEDED" in shown.stdout


def test_the_example_runs_remotely_from_the_cli(stack: Stack) -> None:
    small = stack.cli("run", "--remote", str(EXAMPLE), "sized_training", "--n", "20")
    assert small.returncode == 0, small.stderr + stack.logs()
    assert json.loads(small.stdout.strip().splitlines()[-1])["o0"].startswith("small model")
    assert "SKIPPED" in small.stdout + small.stderr  # the big model's node, in the progress
    refused = stack.cli("run", "--remote", str(EXAMPLE), "sized_training", "--n", "0")
    assert refused.returncode != 0
    assert "no data: n must be positive" in refused.stdout + refused.stderr


def test_a_conditional_on_inputs_alone(stack: Stack) -> None:
    loud = run(stack, "on_inputs", n=4, loud=True)
    assert loud.status == "SUCCEEDED", stack.logs()
    assert loud.outputs == {"o0": 400}
    assert statuses(loud) == {"big": "SUCCEEDED", "small": "SKIPPED"}
    quiet = run(stack, "on_inputs", n=4)
    assert quiet.outputs == {"o0": -4}
    assert statuses(quiet) == {"big": "SKIPPED", "small": "SUCCEEDED"}


def test_fail_branch_ends_the_execution_with_its_message(stack: Stack) -> None:
    final = run(stack, "branching", n=-5)
    assert final.status == "FAILED", stack.logs()
    assert final.error is not None
    assert final.error["message"] == "negative sizes are refused"
    found = statuses(final)
    assert found["measure"] == "SUCCEEDED" and "describe" not in found


def test_control_plane_restart_mid_run(exchange_dir: Path, stack: Stack) -> None:
    marker = exchange_dir / "measuring.txt"
    client = stack.client()
    execution_id = stack.launch(WORKFLOWS, "branching", n=11, seconds=3.0, marker=str(marker))
    stack.wait_for(marker.exists, "the first task to run")
    stack.restart_control_plane()  # SIGKILL and start again while the task runs
    final = client.wait_for_execution(execution_id, timeout=120)
    assert final.status == "SUCCEEDED", stack.logs()
    assert final.outputs == {"o0": "value 1100"}
    assert statuses(final)["small"] == "SKIPPED"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda when: {**when, "right": {"kind": "literal", "value": "ten"}}, "cannot compare"),
        (lambda when: {**when, "op": "=~"}, "op"),
        (
            lambda when: {
                **when,
                "left": {"kind": "node_output", "node_id": "nope", "output": "o0"},
            },
            "no node 'nope'",
        ),
        (lambda when: {**when, "right": {"kind": "literal", "value": [1, 2]}}, "constant"),
        (lambda when: {"kind": "and", "conditions": []}, "conditions"),
    ],
)
def test_an_ill_typed_condition_is_refused_at_registration(
    stack: Stack, change: Any, reason: str
) -> None:
    wf, root = load_workflow(WORKFLOWS, "branching")
    digest, data = build_bundle(root)
    with stack.client() as client:
        client.workflows.upload_bundle(digest, data)
    spec = wf.spec.model_dump(mode="json")
    guarded = next(node for node in spec["nodes"] if node.get("when"))
    guarded["when"] = change(guarded["when"])
    response = httpx.post(
        f"{stack.api_url}/api/v1/workflows",
        json={"spec": spec, "bundle_digest": digest},
        headers={"Authorization": f"Bearer {stack.admin_token}"},
    )
    assert response.status_code == 422, response.text
    assert reason in response.text
