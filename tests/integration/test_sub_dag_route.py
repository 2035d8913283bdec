"""`GET /api/v1/executions/{id}/nodes/{node}/sub-dag` through the whole stack: a dynamic
node's built sub-DAG (a nested one too) with its edges, read by a viewer; another tenant gets
the answer of a missing execution, an unknown node 404 and a node that is not dynamic 409;
and the console's graph draws it in place, with its own edges."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_plane.api.console.dag import COLUMN, MARGIN
from fleetflow.api_models.executions import SubDag
from fleetflow.client.errors import ApiError
from tests.integration.auth import bearer
from tests.integration.stack import Stack
from tests.integration.test_console import form_csrf

pytestmark = [pytest.mark.integration, pytest.mark.stacks("sqlite")]

WORKFLOWS = Path(__file__).parent / "workflows" / "dynamic_flows.py"


def _get(stack: Stack, token: str, execution_id: str, node_id: str) -> httpx.Response:
    return httpx.get(
        f"{stack.api_url}/api/v1/executions/{execution_id}/nodes/{node_id}/sub-dag",
        headers=bearer(token),
        timeout=30,
    )


def _edges(sub: SubDag) -> set[tuple[str, str]]:
    return {(up, node.id) for node in sub.nodes for up in node.upstream}


def test_a_dynamic_nodes_sub_dag_is_read_with_the_executions_rights(stack: Stack) -> None:
    execution_id = stack.launch(WORKFLOWS, "squares", n=3)
    final: Any = stack.client().wait_for_execution(execution_id, timeout=120)
    assert final.status == "SUCCEEDED", stack.logs()
    with stack.client() as admin:
        viewer = admin.admin.create_user("default", "sub-dag-viewer", "viewer").token
        admin.admin.create_tenant("sub-dag-other")
        other = admin.admin.create_user("sub-dag-other", "sub-dag-eve", "tenant-admin").token

    # sum_squares(xs=[1, 2, 3]): square, add(0, square), square, add(add, square), ...
    answer = _get(stack, viewer, execution_id, "n1-sum_squares")
    assert answer.status_code == 200, answer.text
    sub = SubDag.model_validate(answer.json())
    g = "n1-sum_squares"
    assert (sub.execution_id, sub.node_id) == (execution_id, g)
    assert [n.id for n in sub.nodes] == [
        f"{g}/n{i}-{t}" for i, t in enumerate(["square", "add"] * 3)
    ]
    assert _edges(sub) == {
        (f"{g}/n0-square", f"{g}/n1-add"),
        (f"{g}/n1-add", f"{g}/n3-add"),
        (f"{g}/n2-square", f"{g}/n3-add"),
        (f"{g}/n3-add", f"{g}/n5-add"),
        (f"{g}/n4-square", f"{g}/n5-add"),
    }
    assert all(n.task.endswith(".square") or n.task.endswith(".add") for n in sub.nodes)
    # Every node id the sub-DAG names ran.
    ran = {a.node_id for a in final.attempts}
    assert {n.id for n in sub.nodes} <= ran

    # A sub-DAG with dynamic nodes and a map node, and a nested sub-DAG under it.
    nested = SubDag.model_validate(_get(stack, viewer, execution_id, "n2-nested").json())
    by_id = {n.id: n for n in nested.nodes}
    assert by_id["n2-nested/n1-sum_squares"].dynamic
    assert by_id["n2-nested/n2-square"].is_map and not by_id["n2-nested/n2-square"].dynamic
    with stack.client(token=viewer) as client:  # the Python client's call
        deeper = client.executions.sub_dag(execution_id, "n2-nested/n1-sum_squares")
        assert "n2-nested/n1-sum_squares/n1-add" in {n.id for n in deeper.nodes}
        with pytest.raises(ApiError) as refused_here:
            client.executions.sub_dag(execution_id, "n0-numbers")
        assert refused_here.value.status_code == 409

    # Another tenant: exactly the answer of an execution that does not exist.
    missing = "ex-0000000000000000000000000000dead"
    foreign = _get(stack, other, execution_id, g)
    nowhere = _get(stack, other, missing, g)
    assert foreign.status_code == nowhere.status_code == 404
    assert foreign.json()["detail"].replace(execution_id, missing) == nowhere.json()["detail"]

    unknown = _get(stack, viewer, execution_id, "n9-nothing")
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == f"execution {execution_id} has no node 'n9-nothing'"
    unknown_inner = _get(stack, viewer, execution_id, f"{g}/n9-nothing")
    assert unknown_inner.status_code == 404, unknown_inner.text

    for plain in ("n0-numbers", f"{g}/n0-square"):
        refused = _get(stack, viewer, execution_id, plain)
        assert refused.status_code == 409, refused.text
        assert "which is not dynamic: it builds no sub-DAG" in refused.json()["detail"]


def test_the_console_draws_the_built_sub_dag_with_its_edges(stack: Stack) -> None:
    execution_id = stack.launch(WORKFLOWS, "squares", n=3)
    final: Any = stack.client().wait_for_execution(execution_id, timeout=120)
    assert final.status == "SUCCEEDED", stack.logs()
    with httpx.Client(base_url=stack.api_url, timeout=30) as browser:
        signin = browser.post(
            "/ui/signin",
            data={
                "token": stack.admin_token,
                "csrf": form_csrf(browser.get("/ui/signin")),
                "next": "/ui/executions",
            },
            headers={"Origin": stack.api_url.rstrip("/")},
            follow_redirects=True,
        )
        assert signin.status_code == 200 and "Sign out" in signin.text, signin.text
        graph = browser.get(f"/ui/executions/{execution_id}", params={"fragment": "graph"})
    assert graph.status_code == 200, graph.text
    x = {
        node: int(left)
        for node, left in re.findall(
            r'data-node="([^"]+)" [^>]*transform="translate\((\d+) ', graph.text
        )
    }
    g = "n1-sum_squares"
    column = {node: (left - MARGIN) // COLUMN for node, left in x.items()}
    # The sub-DAG's chain square -> add -> add -> add, left to right after its dynamic node.
    assert column[f"{g}/n0-square"] == column[g] + 1
    assert column[f"{g}/n1-add"] == column[g] + 2
    assert column[f"{g}/n3-add"] == column[g] + 3
    assert column[f"{g}/n5-add"] == column[g] + 4
    # The node reading both dynamic nodes after both sub-DAGs (the nested ones too).
    assert column["n3-add"] > max(c for n, c in column.items() if n != "n3-add")
    # One edge per drawn upstream: the sub-DAGs' own edges are there.
    assert graph.text.count("<path class=edge") > 20
