"""References to registered workflows (`@reference_workflow`) through the whole stack: the
referenced version runs as a child execution of the caller's (its own row, linked to the
node, shown by `executions get`), its outputs feed the caller; its failure fails the node; a
control-plane restart mid-child loses nothing; cancelling the parent cancels the child; and a
reference to another tenant's workflow, or a stub that does not match, is refused at
registration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fleetflow.bundle import build_bundle
from fleetflow.client import ApiError, Client
from fleetflow.loader import load_workflow
from tests.integration.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.stacks("sqlite", "postgres-split-worker")]

WORKFLOWS = Path(__file__).parent / "workflows" / "reference_flows.py"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "reference_workflow.py"


def register(client: Client, workflow: str, version: str | None = None) -> str:
    """Bundle and register `workflow` of reference_flows.py; its version."""
    wf, root = load_workflow(WORKFLOWS, workflow)
    digest, data = build_bundle(root)
    client.workflows.upload_bundle(digest, data)
    return client.workflows.register_spec(wf.spec, digest, version).version


def launch(client: Client, workflow: str, **inputs: Any) -> str:
    wf, _ = load_workflow(WORKFLOWS, workflow)
    version = register(client, workflow)
    literals = wf.inputs_to_literals(inputs)
    return str(client.executions.create(wf.spec.name, literals, version=version).id)


def test_a_referenced_workflow_runs_as_a_child_execution(stack: Stack) -> None:
    with stack.client() as client:
        register(client, "child", "v1")
        parent_id = launch(client, "parent", x=4)
        final = client.wait_for_execution(parent_id, timeout=120)
        assert final.status == "SUCCEEDED", stack.logs()
        assert final.outputs == {"o0": 11.0}  # 4 * 2.5 by the child, + 1
        (child,) = final.children
        assert (child.node_id, child.workflow, child.version) == (
            "n0-child_v1",
            "reference_flows.child",
            "v1",
        )
        assert str(child.status) == "SUCCEEDED"
        ran = client.executions.get(child.execution_id)  # its own execution, in the tenant
        assert ran.parent_execution_id == parent_id
        assert ran.parent_node_id == "n0-child_v1"
        assert ran.inputs == {"x": 4, "factor": 2.5}
        assert ran.outputs == {"o0": 10.0}
        assert {a.node_id for a in ran.attempts} == {"n0-scale"}
        assert {a.node_id for a in final.attempts} == {"n1-add_one"}  # none for the reference
    shown = stack.cli("executions", "get", parent_id)
    assert shown.returncode == 0, shown.stderr
    assert child.execution_id in shown.stdout
    assert f"n0-child_v1 (reference) SUCCEEDED: child execution {child.execution_id}" in (
        shown.stdout
    )


def test_the_child_runs_within_its_parents_running_execution(stack: Stack) -> None:
    """With one running execution allowed, the child runs as part of its running parent,
    instead of waiting for the parent to end."""
    with stack.client() as admin:
        admin.admin.create_tenant("reference-quota")
        admin.admin.grant_cluster("reference-quota", "*")
        admin.admin.set_quota("reference-quota", max_running_executions=1)
    with stack.client(tenant="reference-quota") as client:
        register(client, "child", "v1")
        parent_id = launch(client, "parent_after_a_task", x=2)
        final = client.wait_for_execution(parent_id, timeout=120)
        assert final.status == "SUCCEEDED", stack.logs()
        assert final.outputs == {"o0": 6.0}


def test_a_failing_child_fails_the_node_with_its_message(stack: Stack) -> None:
    with stack.client() as client:
        register(client, "failing_child", "v1")
        final = client.wait_for_execution(launch(client, "parent_of_failing", x=3), timeout=120)
        assert final.status == "FAILED", stack.logs()
        (child,) = final.children
        assert str(child.status) == "FAILED"
        message = (final.error or {}).get("message", "")
        assert "n0-failing_v1" in message and child.execution_id in message
        assert "the child cannot take 3" in message


def test_control_plane_restart_mid_child(exchange_dir: Path, stack: Stack) -> None:
    marker = exchange_dir / "reference.txt"
    with stack.client() as client:
        register(client, "slow_child", "v1")
        parent_id = launch(client, "parent_of_slow", seconds=3.0, marker=str(marker))
        stack.wait_for(marker.exists, "the child execution's task to run")
        stack.restart_control_plane()  # SIGKILL and start again while the child runs
        final = client.wait_for_execution(parent_id, timeout=120)
        assert final.status == "SUCCEEDED", stack.logs()
        assert final.outputs == {"o0": 7}
        assert len(final.children) == 1  # the same child, not a second one


def test_cancelling_the_parent_cancels_the_child(exchange_dir: Path, stack: Stack) -> None:
    marker = exchange_dir / "cancel-reference.txt"
    with stack.client() as client:
        register(client, "slow_child", "v1")
        parent_id = launch(client, "parent_of_slow", seconds=120.0, marker=str(marker))
        stack.wait_for(marker.exists, "the child execution's task to run")
        client.executions.cancel(parent_id)
        final = client.wait_for_execution(parent_id, timeout=120)
        assert final.status == "CANCELLED", stack.logs()
        (child,) = final.children

        def child_cancelled() -> bool:
            return str(client.executions.get(child.execution_id).status) == "CANCELLED"

        stack.wait_for(child_cancelled, "the child execution to be cancelled")
        attempts = client.executions.get(child.execution_id).attempts
        assert attempts and all(str(a.status) == "CANCELLED" for a in attempts)


def test_another_tenants_workflow_is_never_reachable(stack: Stack) -> None:
    with stack.client() as admin:
        admin.admin.create_tenant("reference-b")
    with stack.client(tenant="reference-b") as tenant_b:
        register(tenant_b, "child", "tenant-b")
    with stack.client() as client:
        with pytest.raises(ApiError) as refused:
            register(client, "hostile")
        assert refused.value.status_code == 422
        assert "reference_flows.child version tenant-b" in str(refused.value)
        assert "not registered in this tenant" in str(refused.value)
        # Nor by launching it by name: another tenant's version is as one that does not exist.
        with pytest.raises(ApiError) as missing:
            client.executions.create(
                "reference_flows.child", {"x": 1, "factor": 1.0}, version="tenant-b"
            )
        assert missing.value.status_code in (404, 422)


def test_a_stub_unlike_the_registered_interface_is_refused(stack: Stack) -> None:
    with stack.client() as client:
        register(client, "child", "v1")
        with pytest.raises(ApiError) as refused:
            register(client, "parent_mistyped")
        assert refused.value.status_code == 422
        assert "input 'x' is int there, str in the stub" in str(refused.value)


def test_the_example_runs_as_its_docstring_says(stack: Stack) -> None:
    """examples/reference_workflow.py, with the CLI: register the referenced version, run the
    caller remotely; it gives what the inlined pipeline gives locally."""
    registered = stack.cli("register", str(EXAMPLE), "train_model", "--version", "v1")
    assert registered.returncode == 0, registered.stderr
    run = stack.cli("run", "--remote", str(EXAMPLE), "nightly", "--n", "20")
    assert run.returncode == 0, run.stdout + run.stderr + stack.logs()
    inlined, _ = load_workflow(EXAMPLE, "nightly_inlined")
    assert json.loads(run.stdout.strip().splitlines()[-1]) == inlined.run_local({"n": 20})
    local = stack.cli("run", str(EXAMPLE), "nightly", "--n", "20")
    assert local.returncode != 0
    assert "runs only there" in local.stderr and "Traceback" not in local.stderr
