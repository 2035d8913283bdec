"""Lists and dicts of promises and `map_task` of a `functools.partial` on the platform: the
outputs equal a local run's (File values in lists too), and a spec whose list or dict bindings
were tampered with is refused at registration with a 422 that names the binding."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from fleetflow import File
from fleetflow.loader import load_workflow
from fleetflow.storage import LocalBlobStore
from tests.integration.auth import admin_client
from tests.integration.stack import Stack
from tests.integration.test_api import FakeLauncher, _app, assert_error, upload_bundle

pytestmark = [pytest.mark.integration, pytest.mark.stacks("sqlite", "postgres-split-worker")]

WORKFLOWS = Path(__file__).parent / "workflows" / "collection_inputs.py"


def gathered() -> Any:
    wf, _ = load_workflow(WORKFLOWS, "gathered")
    return wf


def test_lists_dicts_and_a_partial_map_run_remotely_as_locally(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the local run writes its files here
    wf = gathered()
    local = wf(n=3)
    assert local.totals == [17, 3, 7] and local.scaled == [30, 170, 20]
    with stack.client() as client:
        result = client.run(wf, n=3, timeout=120)
    assert result.status == "SUCCEEDED", f"{result.error}\n{stack.logs()}"
    remote = result.outputs
    assert remote.totals == local.totals
    assert remote.described == local.described == "a=3,one=1,sum=17|[[3, 10], [], [5]]"
    assert remote.scaled == local.scaled
    assert remote.joined == local.joined == "second.txt:two first.txt:one"
    assert [f.name for f in remote.files] == ["first.txt", "second.txt"]
    assert all(isinstance(f, File) for f in remote.files)
    assert [f.path.read_text() for f in remote.files] == ["one", "two"]
    assert [f.path for f in remote.files] != [f.path for f in local.files]
    # One attempt per element of the partial's map, over a list of promises.
    scale_node = next(n.id for n in wf.spec.nodes if n.map is not None)
    elements = [a.map_index for a in result.execution.attempts if a.node_id == scale_node]
    assert sorted(elements) == [0, 1, 2]


# --------------------------------------------------------------------- hostile registration


@pytest.fixture
def api(
    session_factory: sessionmaker[Session], launcher: FakeLauncher, blob_store: LocalBlobStore
) -> Iterator[TestClient]:
    with admin_client(_app(session_factory, launcher, blob_store)) as test_client:
        yield test_client


def _node_index(spec: dict[str, Any], task_suffix: str) -> int:
    return next(i for i, n in enumerate(spec["nodes"]) if n["task"].endswith(task_suffix))


def _register(api: TestClient, spec: dict[str, Any]) -> Any:
    return api.post("/api/v1/workflows", json={"spec": spec, "bundle_digest": upload_bundle(api)})


def test_the_compiled_spec_registers(api: TestClient) -> None:
    response = _register(api, gathered().spec.model_dump(mode="json"))
    assert response.status_code == 201, response.text


def test_a_list_item_naming_a_missing_node_is_refused(api: TestClient) -> None:
    spec = gathered().spec.model_dump(mode="json")
    index = _node_index(spec, ".total")
    spec["nodes"][index]["inputs"]["xs"]["items"][1] = {
        "kind": "node_output",
        "node_id": "n99-elsewhere",
        "output": "o0",
    }
    body = assert_error(_register(api, spec), 422, f"spec.nodes[{index}].inputs.xs.items[1]")
    assert "has no node 'n99-elsewhere'" in body["detail"]
    assert api.get("/api/v1/workflows").json() == []


def test_items_of_the_wrong_type_are_refused_each_by_its_place(api: TestClient) -> None:
    spec = gathered().spec.model_dump(mode="json")
    index = _node_index(spec, ".describe")
    inputs = spec["nodes"][index]["inputs"]
    write = spec["nodes"][_node_index(spec, ".write")]["id"]  # an output of type File
    inputs["scores"]["items"]["a"] = {"kind": "node_output", "node_id": write, "output": "o0"}
    inputs["nested"]["items"][0]["items"][1] = {"kind": "literal", "value": "ten"}
    inputs["nested"]["items"][2] = {"kind": "dict", "items": {}}
    body = assert_error(_register(api, spec), 422)
    problems = {e["field"]: e["message"] for e in body["errors"]}
    field = f"spec.nodes[{index}].inputs"
    assert problems == {
        f"{field}.scores.items.a": f"expected int, got File (output 'o0' of node '{write}')",
        f"{field}.nested.items[0].items[1]": "expected int, got str 'ten'",
        f"{field}.nested.items[2]": "expected list[int], got a dict binding",
    }
    assert body["detail"].startswith("invalid workflow spec: spec.nodes[")
    assert "(and 2 more)" in body["detail"]


def test_malformed_collection_bindings_are_refused_by_the_schema(api: TestClient) -> None:
    compiled = gathered().spec.model_dump(mode="json")
    index = _node_index(compiled, ".total")

    def with_xs(binding: Any) -> dict[str, Any]:
        spec = copy.deepcopy(compiled)
        spec["nodes"][index]["inputs"]["xs"] = binding
        return spec

    field = f"spec.nodes[{index}].inputs.xs"
    for binding in (
        {"kind": "list", "items": {"a": {"kind": "literal", "value": 1}}},  # items of a dict
        {"kind": "list", "items": [{"kind": "input"}]},  # an item without its input's name
        {"kind": "list", "items": [{"kind": "list"}]},
        {"kind": "tuple", "items": []},
    ):
        assert_error(_register(api, with_xs(binding)), 422)
    too_deep: dict[str, Any] = {"kind": "literal", "value": 1}
    for _ in range(300):  # past any depth the schema follows: refused, not a crash
        too_deep = {"kind": "list", "items": [too_deep]}
    body = assert_error(_register(api, with_xs(too_deep)), 422)
    assert any(e["field"].startswith(field) for e in body["errors"])
    # A workflow output bound to a collection of the wrong kind.
    spec = copy.deepcopy(compiled)
    spec["outputs"]["described"] = {"kind": "list", "items": []}
    body = assert_error(_register(api, spec), 422, "spec.outputs.described")
    assert "expected str, got a list binding" in body["detail"]


def test_a_node_consuming_itself_through_a_list_is_refused(api: TestClient) -> None:
    spec = gathered().spec.model_dump(mode="json")
    node = spec["nodes"][_node_index(spec, ".total")]
    node["inputs"]["xs"]["items"][0] = {
        "kind": "node_output",
        "node_id": node["id"],
        "output": "o0",
    }
    body = assert_error(_register(api, spec), 422, "spec.nodes")
    assert f"cycle: {node['id']} -> {node['id']}" in body["detail"]
