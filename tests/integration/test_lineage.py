"""Artifact lineage through the whole stack (API, Temporal, agent): every file a task wrote is
recorded with the execution, node, attempt and task version that produced it and the files it
was computed from; upstream and downstream walks; map elements' indexes; a recovery that
reuses a succeeded output (and a relaunch's task-cache hit) links to its original producer; a
dynamic task's sub-DAG; the CLI's tree; tenants kept apart, a viewer of the tenant let in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleetflow.bundle import build_bundle
from fleetflow.client import ApiError
from fleetflow.loader import load_workflow
from tests.integration.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.stacks("sqlite", "postgres-split-worker")]

WORKFLOWS = Path(__file__).parent / "workflows" / "lineage_flows.py"


def workflow(name: str) -> Any:
    wf, _root = load_workflow(WORKFLOWS, name)
    return wf


def node(node_id: str) -> str:
    """`n2-train` -> `train`."""
    return node_id.split("-", 1)[1]


@pytest.fixture(scope="module")
def pipeline_run(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Any:
    raw = tmp_path_factory.mktemp("lineage") / "raw.txt"
    raw.write_text("  Hello Lineage World  ")
    from fleetflow import File

    with stack.client() as client:
        result = client.run(workflow("pipeline"), timeout=120, raw=File(raw), epochs=3)
    assert result.status == "SUCCEEDED", f"{result.error}\n{stack.logs()}"
    return result


def test_the_last_output_lists_what_it_was_computed_from(stack: Stack, pipeline_run: Any) -> None:
    execution = pipeline_run.execution
    model_uri = execution.outputs["o0"]["uri"]
    attempts = {node(a.node_id): a for a in execution.attempts}
    with stack.client() as client:
        model = client.artifacts.get(model_uri)
        assert model.execution_id == execution.id
        assert node(model.node_id) == "train" and model.attempt_id == attempts["train"].id
        assert model.task_name == attempts["train"].task_name and model.kind == "file"
        assert model.task_digest and len(model.task_digest) == 64
        assert model.workflow == execution.workflow and model.workflow_version == execution.version
        assert model.element_index is None and model.output_name == "o0"
        assert client.artifacts.get(model.id) == model

        up = client.artifacts.lineage(model.id, "upstream", depth=5)
        assert not up.truncated and up.artifacts[0].id == model.id
        found = {node(a.node_id) if a.node_id != "inputs" else "inputs": a for a in up.artifacts}
        assert set(found) == {"train", "featurize", "clean", "inputs"}
        for name in ("featurize", "clean"):
            assert found[name].attempt_id == attempts[name].id
            assert found[name].execution_id == execution.id
            assert found[name].task_digest
        raw = found["inputs"]
        assert raw.attempt_id is None and raw.output_name == "raw"
        assert raw.uri == execution.inputs["raw"]["uri"]
        edges = {(e.upstream_id, e.downstream_id, e.input_name) for e in up.edges}
        assert edges == {
            (found["featurize"].id, model.id, "features"),
            (found["clean"].id, found["featurize"].id, "cleaned"),
            (raw.id, found["clean"].id, "raw"),
        }
        # One level only: its direct input.
        one = client.artifacts.lineage(model.id, "upstream", depth=1)
        assert {a.id for a in one.artifacts} == {model.id, found["featurize"].id}

        # Downstream of the first output: the later ones.
        down = client.artifacts.lineage(found["clean"].uri, "downstream", depth=5)
        assert {a.id for a in down.artifacts} == {
            found["clean"].id,
            found["featurize"].id,
            model.id,
        }

        listed = client.artifacts.of_execution(execution.id)
        assert {a.id for a in listed} == {
            model.id,
            found["featurize"].id,
            found["clean"].id,
            raw.id,
        }


def test_the_cli_prints_the_tree_and_the_json(stack: Stack, pipeline_run: Any) -> None:
    execution = pipeline_run.execution
    model_uri = execution.outputs["o0"]["uri"]
    tree = stack.cli("artifacts", "lineage", model_uri, "--upstream")
    assert tree.returncode == 0, tree.stderr
    lines = tree.stdout.splitlines()
    assert "from n2-train of" in lines[0] and model_uri in lines[0]
    shown = tree.stdout
    assert "features \u2190 o0 (file) from n1-featurize of" in shown
    assert "cleaned \u2190 o0 (file) from n0-clean of" in shown
    assert f"raw \u2190 raw (file) from input of {execution.id}" in shown
    raw_uri = execution.inputs["raw"]["uri"]
    down = stack.cli("artifacts", "lineage", raw_uri, "--downstream")
    assert down.returncode == 0, down.stderr
    assert "as raw \u2192 o0 (file) from n0-clean of" in down.stdout
    assert "as cleaned \u2192 o0 (file) from n1-featurize of" in down.stdout
    assert "as features \u2192 o0 (file) from n2-train of" in down.stdout
    as_json = stack.cli("artifacts", "lineage", model_uri, "--downstream", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert '"direction": "downstream"' in as_json.stdout
    got = stack.cli("artifacts", "get", model_uri)
    assert got.returncode == 0 and execution.id in got.stdout and "n2-train" in got.stdout
    listed = stack.cli("artifacts", "list", "--execution", execution.id)
    assert listed.returncode == 0 and "n1-featurize" in listed.stdout
    both = stack.cli("artifacts", "lineage", model_uri, "--upstream", "--downstream")
    assert both.returncode != 0 and "not both" in both.stderr
    missing = stack.cli("artifacts", "get", "art-nothing")
    assert missing.returncode == 1 and "artifact art-nothing not found" in missing.stderr


def test_map_elements_record_their_index(stack: Stack) -> None:
    with stack.client() as client:
        result = client.run(workflow("sharded"), timeout=120, n=3)
        assert result.status == "SUCCEEDED", f"{result.error}\n{stack.logs()}"
        uris = [value["uri"] for value in result.execution.outputs["o0"]]
        elements = [client.artifacts.get(uri) for uri in uris]
    assert [a.element_index for a in elements] == [0, 1, 2]
    by_index = {
        a.map_index: a for a in result.execution.attempts if node(a.node_id) == "write_shard"
    }
    assert [a.attempt_id for a in elements] == [by_index[i].id for i in range(3)]


def test_a_recovery_links_a_reused_output_to_its_original_producer(
    stack: Stack, exchange_dir: Path
) -> None:
    marker = exchange_dir / "lineage-marker"
    with stack.client() as client:
        failed = client.wait_for_execution(
            stack.launch(WORKFLOWS, "recoverable", seed=7, marker=str(marker)), timeout=120
        )
        assert failed.status == "FAILED", stack.logs()
        (produced,) = client.artifacts.of_execution(failed.id)
        assert node(produced.node_id) == "produce"
        marker.touch(mode=0o666)
        recovered = client.wait_for_execution(client.executions.recover(failed.id).id, timeout=120)
        assert recovered.status == "SUCCEEDED", stack.logs()
        reused = [a for a in recovered.attempts if node(a.node_id) == "produce"]
        assert reused and reused[0].cache_hit
        consumed = client.artifacts.get(recovered.outputs["o0"]["uri"])
        assert consumed.execution_id == recovered.id
        up = client.artifacts.lineage(consumed.id, "upstream")
        # The reused file keeps its producer: the failed execution's attempt.
        (source,) = [a for a in up.artifacts if a.id != consumed.id]
        assert source.id == produced.id
        assert source.execution_id == failed.id and source.attempt_id == produced.attempt_id
        # The recovery recorded nothing for the unit it reused.
        assert [a.id for a in client.artifacts.of_execution(recovered.id)] == [consumed.id]

        # A relaunch finds `produce` in the task cache: its new output links there too.
        again = client.wait_for_execution(client.executions.relaunch(recovered.id).id, timeout=120)
        assert again.status == "SUCCEEDED", stack.logs()
        assert all(a.cache_hit for a in again.attempts if node(a.node_id) == "produce")
        fresh = client.artifacts.get(again.outputs["o0"]["uri"])
        assert fresh.execution_id == again.id and fresh.id != consumed.id
        (source,) = client.artifacts.lineage(fresh.id, "upstream").artifacts[1:]
        assert source.id == produced.id and source.execution_id == failed.id
        down = client.artifacts.lineage(produced.id, "downstream")
        assert {a.id for a in down.artifacts} == {produced.id, consumed.id, fresh.id}


def test_a_dynamic_tasks_sub_dag_records_its_nodes_files(stack: Stack, tmp_path: Path) -> None:
    from fleetflow import File

    raw = tmp_path / "raw.txt"
    raw.write_text("Dynamic")
    with stack.client() as client:
        result = client.run(workflow("annotated"), timeout=120, raw=File(raw), lines=["a", "b"])
        assert result.status == "SUCCEEDED", f"{result.error}\n{stack.logs()}"
        last = client.artifacts.get(result.execution.outputs["o0"]["uri"])
        up = client.artifacts.lineage(last.id, "upstream", depth=10)
    dynamic_node = next(
        a.node_id for a in result.execution.attempts if a.task_name.endswith(".annotate")
    )
    appended = [a for a in up.artifacts if a.task_name and a.task_name.endswith(".append_line")]
    # Its sub-DAG's two nodes, named below the dynamic node, each with its attempt.
    assert len(appended) == 2 and last in appended
    assert all(a.node_id.startswith(f"{dynamic_node}/") and a.attempt_id for a in appended)
    assert {node(a.node_id) if a.node_id != "inputs" else "inputs" for a in up.artifacts} >= {
        "clean",
        "inputs",
    }
    assert len(up.artifacts) == 4 and not up.truncated


def test_lineage_crosses_into_a_child_execution(stack: Stack, tmp_path: Path) -> None:
    from fleetflow import File

    raw = tmp_path / "raw.txt"
    raw.write_text("Child")
    with stack.client() as client:
        polish, root = load_workflow(WORKFLOWS, "polish")
        digest, data = build_bundle(root)
        client.workflows.upload_bundle(digest, data)
        client.workflows.register_spec(polish.spec, digest, "v1")
        result = client.run(workflow("referencing"), timeout=120, raw=File(raw))
        assert result.status == "SUCCEEDED", f"{result.error}\n{stack.logs()}"
        (child,) = result.execution.children
        model = client.artifacts.get(result.execution.outputs["o0"]["uri"])
        up = client.artifacts.lineage(model.id, "upstream", depth=5)
    by_execution = {(a.execution_id, a.node_id.split("-", 1)[-1]) for a in up.artifacts}
    parent = result.execution.id
    # train (parent) <- featurize (child) <- clean (parent) <- the upload (parent's input).
    assert by_execution == {
        (parent, "train"),
        (child.execution_id, "featurize"),
        (parent, "clean"),
        (parent, "inputs"),
    }


def test_another_tenant_sees_nothing_and_a_viewer_reads(stack: Stack, pipeline_run: Any) -> None:
    execution = pipeline_run.execution
    model_uri = execution.outputs["o0"]["uri"]
    with stack.client() as admin:
        model = admin.artifacts.get(model_uri)
        admin.admin.create_tenant("lineage-intruder")
        intruder = admin.admin.create_user("lineage-intruder", "eve", "tenant-admin").token
        viewer = admin.admin.create_user("default", "lineage-viewer", "viewer").token
    with stack.client(token=intruder) as client:
        calls = [
            lambda: client.artifacts.get(model.id),
            lambda: client.artifacts.get(model_uri),
            lambda: client.artifacts.lineage(model.id),
            lambda: client.artifacts.of_execution(execution.id),
        ]
        for call in calls:
            with pytest.raises(ApiError) as refused:
                call()
            assert refused.value.status_code == 404
        assert "not found" in str(refused.value)
        # Lineage through one of its own artifacts never crosses into another tenant: it
        # has none to start from, and a made-up id is not found either.
        with pytest.raises(ApiError) as made_up:
            client.artifacts.lineage("art-" + "0" * 32)
        assert made_up.value.status_code == 404
    with stack.client(token=viewer) as client:
        assert client.artifacts.get(model_uri).id == model.id
        assert len(client.artifacts.lineage(model.id, "upstream").artifacts) == 4


def test_bounds_are_refused_with_a_clear_message(stack: Stack, pipeline_run: Any) -> None:
    model_uri = pipeline_run.execution.outputs["o0"]["uri"]
    with stack.client() as client:
        model = client.artifacts.get(model_uri)
        for params in ({"depth": 0}, {"depth": 21}, {"limit": 0}, {"limit": 1001}):
            with pytest.raises(ApiError) as refused:
                client.transport.call(
                    "GET", f"/api/v1/artifacts/{model.id}/lineage", dict, params=params
                )
            assert refused.value.status_code == 422
        cut = client.artifacts.lineage(model.id, "upstream", depth=5, limit=1)
        assert cut.truncated and cut.message and "truncated at 1 artifacts" in cut.message
        assert len(cut.artifacts) <= 2
