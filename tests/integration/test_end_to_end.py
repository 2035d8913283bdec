"""The walking skeleton end to end: SDK -> REST API -> Temporal -> agent -> local process ->
blob store -> back, on SQLite and on PostgreSQL, with real servers as subprocesses."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client as TemporalClient

from control_plane.orchestration.payloads import DATA_CONVERTER
from fleetflow.api_models.executions import ExecutionPublic
from fleetflow.bundle import build_bundle
from fleetflow.loader import load_workflow
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WORKFLOWS = Path(__file__).parent / "workflows"


def submit(stack: Stack, file: str, workflow: str, **inputs: object) -> ExecutionPublic:
    wf, root = load_workflow(EXAMPLES / file, workflow)
    digest, data = build_bundle(root)
    with stack.client() as client:
        client.workflows.upload_bundle(digest, data)
        version = client.workflows.register_spec(wf.spec, digest).version
        execution = client.executions.create(
            wf.spec.name, wf.inputs_to_literals(inputs), version=version
        )
        return client.wait_for_execution(execution.id, timeout=120)


def test_typed_pipeline_runs_remotely_and_matches_local_run(stack: Stack) -> None:
    wf, _ = load_workflow(EXAMPLES / "hello.py", "hello_pipeline")
    final = submit(stack, "hello.py", "hello_pipeline", n=12, epochs=300)
    assert final.status == "SUCCEEDED", stack.logs()
    assert [a.node_id.split("-", 1)[-1] for a in final.attempts] == [
        "make_data",
        "train",
        "evaluate",
    ]
    assert {a.status for a in final.attempts} == {"SUCCEEDED"}
    assert {a.cluster for a in final.attempts} == {"local"}
    # A step's success starts the next step as its report is applied, before the workflow
    # hears of it (its own start then finds the attempt); a rare race may leave one to it.
    ahead = [line for line in stack.logs().splitlines() if "ahead of the workflow" in line]
    assert any(a.id in line for a in final.attempts[1:] for line in ahead), stack.logs()
    remote = wf.outputs_to_python(final.outputs)
    assert remote == wf(n=12, epochs=300)
    assert remote.n_points == 12
    assert abs(remote.model.slope - 3) < 0.5


def test_cli_run_remote_prints_outputs_and_skips_unchanged_bundle(stack: Stack) -> None:
    args = ("run", "--remote", str(EXAMPLES / "hello.py"), "hello_pipeline", "--n", "8")
    first = stack.cli(*args)
    assert first.returncode == 0, first.stderr + stack.logs()
    assert "SUCCEEDED" in first.stdout
    outputs = json.loads(first.stdout.strip().splitlines()[-1])  # last line: outputs as JSON
    assert set(outputs) == {"o0"} and "mse" in outputs["o0"] and outputs["o0"]["n_points"] == 8
    second = stack.cli(*args)
    assert second.returncode == 0, second.stderr
    assert "already on the control plane" in second.stdout


def test_wrong_input_type_is_a_422_naming_the_field(stack: Stack) -> None:
    wf, root = load_workflow(EXAMPLES / "hello.py", "hello_pipeline")
    digest, data = build_bundle(root)
    with stack.client() as client:
        client.workflows.upload_bundle(digest, data)
        client.workflows.register_spec(wf.spec, digest)
    response = httpx.post(
        f"{stack.api_url}/api/v1/executions",
        json={"workflow": wf.spec.name, "inputs": {"n": "abc"}},
        headers={"Authorization": f"Bearer {stack.admin_token}"},
    )
    assert response.status_code == 422
    assert "inputs.n" in response.text and "int" in response.text

    cli = stack.cli("run", "--remote", str(EXAMPLES / "hello.py"), "hello_pipeline", "--n", "abc")
    assert cli.returncode != 0
    assert "'n'" in cli.stderr or "inputs.n" in cli.stderr
    assert "Traceback" not in cli.stderr + cli.stdout


def test_failing_task_fails_the_execution_with_its_traceback(stack: Stack) -> None:
    final = submit(stack, "failing.py", "failing_pipeline", n=3)
    assert final.status == "FAILED", stack.logs()
    error = final.error
    assert error["node_id"].endswith("explode")
    assert "ValueError: cannot handle 3 values" in error["message"]
    assert 'raise ValueError(f"cannot handle' in error["traceback"]
    statuses = {a.node_id.split("-", 1)[-1]: a.status for a in final.attempts}
    assert statuses == {"load": "SUCCEEDED", "explode": "FAILED"}

    cli = stack.cli("run", "--remote", str(EXAMPLES / "failing.py"), "failing_pipeline")
    assert cli.returncode == 1
    assert "FAILED" in cli.stdout and "cannot handle 3 values" in cli.stdout


def test_ml_pipeline_gives_identical_outputs_locally_and_remotely(stack: Stack) -> None:
    """Dataclasses, a File split as a NamedTuple, a map_task fan-out and an Optional input."""
    wf, _ = load_workflow(EXAMPLES / "ml_pipeline.py", "ml_pipeline")
    inputs = {"n": 24, "learning_rates": [0.2, 0.8], "max_mse": 1e-9}
    local = wf(**inputs)
    with stack.client() as client:
        result = client.run(wf, timeout=120, **inputs)
    assert result.status == "SUCCEEDED", f"{result.error}\n{stack.logs()}"
    assert result.outputs == local
    assert local.note is not None and local.best.learning_rate in (0.2, 0.8)
    trains = [a for a in result.execution.attempts if a.map_index is not None]
    assert sorted(a.map_index for a in trains) == [0, 1]


def test_plain_successes_reach_the_workflow_in_fewer_signals_than_attempts(stack: Stack) -> None:
    """Five independent plain tasks, then their sum: the successes whose execution still has
    attempts active are held (no signal each), and the workflow reads them when told."""
    execution_id = stack.launch(WORKFLOWS / "quiet_fan.py", "fan", x=1)
    with stack.client() as client:
        final = client.wait_for_execution(execution_id, timeout=120)
    assert final.status == "SUCCEEDED", stack.logs()
    assert final.outputs == {"o0": 10}
    assert len(final.attempts) == 6

    async def signals() -> list[str]:
        temporal = await TemporalClient.connect(
            stack.env["FLEETFLOW_TEMPORAL_ADDRESS"], data_converter=DATA_CONVERTER
        )
        history = await temporal.get_workflow_handle(execution_id).fetch_history()
        return [
            event.workflow_execution_signaled_event_attributes.signal_name
            for event in history.events
            if event.HasField("workflow_execution_signaled_event_attributes")
        ]

    names = asyncio.run(signals())
    assert "attempts_finished_quietly" in names, names
    assert names.count("attempt_finished") < len(final.attempts), names
