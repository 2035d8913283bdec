"""`map_task(..., min_success_ratio=r)` on the platform, in chunks (the test stack runs maps of
more than 4 elements as chunk workflows): failures in two chunks add up over the node, the
outputs (None for the failed elements) equal a local run's, too many failures fail the execution
as locally, `executions get` says how many elements succeeded, and a spec forged with a ratio
outside (0, 1] is refused at registration with a 422."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from fleetflow import MapElementsFailedError
from fleetflow.loader import load_workflow
from fleetflow.storage import LocalBlobStore
from tests.integration.auth import admin_client
from tests.integration.stack import Stack
from tests.integration.test_api import FakeLauncher, _app, assert_error, upload_bundle

pytestmark = [pytest.mark.integration, pytest.mark.stacks("sqlite", "postgres-split-worker")]

WORKFLOWS = Path(__file__).parent / "workflows" / "partial_maps.py"


def workflow_named(name: str) -> Any:
    wf, _ = load_workflow(WORKFLOWS, name)
    return wf


def test_failures_in_two_chunks_add_up_and_the_outputs_equal_a_local_run(stack: Stack) -> None:
    wf = workflow_named("tolerant")
    local = wf(n=10)
    assert local.scores == [0, 10, 20, None, 40, 50, 60, 70, None, 90]
    assert local.present == 8
    with stack.client() as client:
        result = client.run(wf, n=10, timeout=180)
    assert result.status == "SUCCEEDED", f"{result.error}\n{stack.logs()}"
    assert result.outputs.scores == local.scores
    assert result.outputs.present == local.present
    mapped = next(n.id for n in wf.spec.nodes if n.map is not None)
    # The failed elements used their retry: two failed attempts each, in chunks 0 and 2.
    failed = sorted(
        (a.map_index, a.attempt_number)
        for a in result.execution.attempts
        if a.node_id == mapped and a.status == "FAILED"
    )
    assert failed == [(3, 1), (3, 2), (8, 1), (8, 2)]
    assert result.execution.min_success_ratios == {mapped: 0.8}
    shown = stack.cli("executions", "get", result.execution.id)
    assert shown.returncode == 0, shown.stderr
    assert f"{mapped}: 8/10 elements succeeded (min_success_ratio 0.8)" in shown.stdout


def test_too_many_failures_fail_the_execution_as_locally(stack: Stack) -> None:
    wf = workflow_named("demanding")
    with pytest.raises(MapElementsFailedError) as local:
        wf(n=10)
    summary = "n1-fragile: 2 of 10 elements failed; min_success_ratio 0.9 needs 9 to succeed"
    assert str(local.value).startswith(f"{summary}; element 3 failed: ValueError: cannot score 3")
    with stack.client() as client:
        result = client.run(wf, n=10, timeout=180)
    assert result.status == "FAILED", stack.logs()
    error = result.error
    # One failed element's error: 3 or 8, whichever chunk reported first.
    assert re.fullmatch(
        re.escape(summary) + r"; element (3|8) failed: ValueError: cannot score (3|8)",
        error["message"],
    ), error
    assert error["node_id"] in ("n1-fragile[3]", "n1-fragile[8]")
    assert "cannot score" in (error["traceback"] or "")
    names = {a.node_id for a in result.execution.attempts}
    assert "n2-count_present" not in names  # the consumer never ran


def test_a_map_small_enough_for_no_chunk_behaves_the_same(stack: Stack) -> None:
    lenient, demanding = workflow_named("lenient"), workflow_named("demanding")
    assert lenient(n=4) == [0, 1, 2, None]
    with pytest.raises(MapElementsFailedError) as local:
        demanding(n=4)  # 0.9 of 4 needs all 4
    with stack.client() as client:
        succeeded = client.run(lenient, n=4, timeout=180)
        failed = client.run(demanding, n=4, timeout=180)
    assert succeeded.status == "SUCCEEDED", f"{succeeded.error}\n{stack.logs()}"
    assert succeeded.outputs == [0, 1, 2, None]
    assert failed.status == "FAILED", stack.logs()
    assert (
        failed.error["message"]
        == str(local.value)
        == (
            "n1-fragile: 1 of 4 elements failed; min_success_ratio 0.9 needs 4 to succeed; "
            "element 3 failed: ValueError: cannot score 3"
        )
    )


# --------------------------------------------------------------------- hostile registration


@pytest.fixture
def api(
    session_factory: sessionmaker[Session], launcher: FakeLauncher, blob_store: LocalBlobStore
) -> Iterator[TestClient]:
    with admin_client(_app(session_factory, launcher, blob_store)) as test_client:
        yield test_client


def _register(api: TestClient, spec: dict[str, Any]) -> Any:
    return api.post("/api/v1/workflows", json={"spec": spec, "bundle_digest": upload_bundle(api)})


def test_the_compiled_spec_registers(api: TestClient) -> None:
    response = _register(api, workflow_named("tolerant").spec.model_dump(mode="json"))
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("ratio", [0, 1.5, -1, "0.8", True, None])
def test_a_forged_ratio_is_refused(api: TestClient, ratio: Any) -> None:
    spec = workflow_named("tolerant").spec.model_dump(mode="json")
    index = next(i for i, node in enumerate(spec["nodes"]) if node["map"])
    spec["nodes"][index]["map"]["min_success_ratio"] = ratio
    body = assert_error(_register(api, spec), 422, f"spec.nodes[{index}].map.min_success_ratio")
    assert "min_success_ratio" in body["detail"]
    assert api.get("/api/v1/workflows").json() == []
