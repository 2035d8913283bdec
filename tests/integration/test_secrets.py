"""Tenant secrets on a real stack: a task gets its tenant's value in its environment, and the
value is never in an API answer, the task's stored log, the code bundle, or another tenant's
task; viewers read names only, other tenants not even those."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest

from fleetflow.bundle import build_bundle
from fleetflow.client import ApiError, ExecutionResult
from fleetflow.loader import load_workflow
from tests.integration.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.stacks("sqlite", "postgres")]

WORKFLOWS = Path(__file__).parent / "workflows" / "secret_flows.py"
VALUE = "wandb-9f8e7d6c5b4a-default-tenant"
OTHER_VALUE = "wandb-0a1b2c3d4e5f-other-tenant"


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _run(stack: Stack, tenant: str | None = None, workflow: str = "wandb_flow") -> ExecutionResult:
    flow, _ = load_workflow(WORKFLOWS, workflow)
    with stack.client(tenant=tenant) as client:
        result = client.run(flow, timeout=120)
    assert isinstance(result, ExecutionResult)
    return result


def _raw(stack: Stack, path: str, token: str | None = None, **params: str) -> str:
    """The JSON text of a GET, as any HTTP client would read it."""
    answer = httpx.get(
        f"{stack.api_url}{path}",
        params=params,
        headers={"Authorization": f"Bearer {token or stack.admin_token}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return answer.text


@pytest.fixture(scope="module")
def tenants(stack: Stack) -> dict[str, str]:
    """The default tenant's viewer, and the tenant `other` (granted the local cluster) with
    its developer: their tokens."""
    with stack.client() as admin:
        viewer = admin.admin.create_user("default", "secrets-viewer", "viewer").token
        admin.admin.create_tenant("other")
        admin.admin.grant_cluster("other", "local")
        other = admin.admin.create_user("other", "other-dev", "developer").token
    return {"viewer": viewer, "other": other}


def test_a_task_gets_its_value_and_it_appears_nowhere_else(stack: Stack) -> None:
    with stack.client() as client:
        created = client.secrets.create("wandb", VALUE)
        assert created.kind == "value"
        replaced = client.secrets.create("wandb", VALUE)  # PUT again: replaced, same answer
        assert replaced.name == "wandb"
    result = _run(stack)
    assert result.status == "SUCCEEDED", f"{result.error}\n{stack.logs()}"
    assert result.outputs == _sha(VALUE)  # the task read exactly the value

    # The task printed the value: its stored log shows *** instead.
    with stack.client() as client:
        logs = client.executions.logs(result.id)
    printed = "".join(attempt.log or "" for attempt in logs)
    assert "the wandb key is ***" in printed
    assert VALUE not in printed

    # Every answer about the secret and the execution, as raw JSON.
    answers = [
        _raw(stack, "/api/v1/secrets"),
        _raw(stack, "/api/v1/secrets/wandb"),
        _raw(stack, f"/api/v1/executions/{result.id}"),
        _raw(stack, f"/api/v1/executions/{result.id}/logs"),
        _raw(stack, "/api/v1/executions"),
        _raw(stack, "/api/v1/admin/audit"),
    ]
    for answer in answers:
        assert VALUE not in answer
    listed = json.loads(answers[0])
    assert [(s["name"], s["kind"]) for s in listed] == [("wandb", "value")]
    assert "value" not in listed[0]

    # The code bundle holds the name, never the value; the control plane's and agent's own
    # logs never show it either.
    _, bundle = build_bundle(WORKFLOWS.parent)
    assert VALUE.encode() not in bundle
    blobs = Path(stack.blob_root.removeprefix("file://"))
    if blobs.is_dir():
        for path in blobs.rglob("*"):
            if path.is_file():
                assert VALUE.encode() not in path.read_bytes(), path
    assert VALUE not in stack.logs()


def test_a_failure_message_shows_no_value(stack: Stack) -> None:
    with stack.client() as client:
        client.secrets.create("wandb", VALUE)
    result = _run(stack, workflow="failing_flow")
    assert result.status == "FAILED"
    error = json.dumps(result.error)
    assert "RuntimeError: rejected key ***" in error, error
    assert VALUE not in error
    assert VALUE not in result.execution.model_dump_json()  # the attempts' messages too


def test_another_tenant_never_gets_the_value(stack: Stack, tenants: dict[str, str]) -> None:
    with stack.client() as client:
        client.secrets.create("wandb", VALUE)
    # Tenant `other` has no secret `wandb`: its task fails to start, naming it.
    missing = _run(stack, tenant="other")
    assert missing.status == "FAILED"
    assert "'wandb'" in json.dumps(missing.error), missing.error
    assert VALUE not in missing.execution.model_dump_json()

    # Its own secret of that name is what its task gets.
    with stack.client(token=tenants["other"]) as other:
        assert [s.name for s in other.secrets.list()] == []  # not the default tenant's
        other.secrets.create("wandb", OTHER_VALUE)
    result = _run(stack, tenant="other")
    assert result.status == "SUCCEEDED", f"{result.error}\n{stack.logs()}"
    assert result.outputs == _sha(OTHER_VALUE)

    # Neither tenant reaches the other's secrets by name.
    with stack.client(token=tenants["other"]) as other:
        other.secrets.delete("wandb")
        with pytest.raises(ApiError) as refused:
            other.secrets.get("wandb")
        assert refused.value.status_code == 404
        with pytest.raises(ApiError) as refused:
            other.secrets.delete("wandb")
        assert refused.value.status_code == 404
    with stack.client() as client:
        assert client.secrets.get("wandb").name == "wandb"  # the default tenant's is intact


def test_a_viewer_reads_names_but_cannot_change_secrets(
    stack: Stack, tenants: dict[str, str]
) -> None:
    with stack.client() as client:
        client.secrets.create("wandb", VALUE)
    with stack.client(token=tenants["viewer"]) as viewer:
        assert "wandb" in [s.name for s in viewer.secrets.list()]
        for change in (
            lambda: viewer.secrets.create("wandb", "overwritten-by-viewer"),
            lambda: viewer.secrets.delete("wandb"),
        ):
            with pytest.raises(ApiError) as refused:
                change()
            assert refused.value.status_code == 403
            assert "may not write secrets" in refused.value.detail


def test_bad_bodies_and_names_are_refused_without_echoing_the_value(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.admin_token}"}
    both = httpx.put(
        f"{stack.api_url}/api/v1/secrets/wandb",
        json={"value": VALUE, "kubernetes_secret": "creds", "kubernetes_key": "k"},
        headers=headers,
    )
    assert both.status_code == 422
    assert VALUE not in both.text
    bad_name = httpx.put(
        f"{stack.api_url}/api/v1/secrets/Not_A_Name", json={"value": "x"}, headers=headers
    )
    assert bad_name.status_code == 422


def test_the_cli_creates_lists_and_deletes(stack: Stack, tmp_path: Path) -> None:
    value_file = tmp_path / "hf-token"
    value_file.write_text("hf-token-value-from-a-file")
    created = stack.cli("secrets", "create", "hf-token", "--from-file", str(value_file))
    assert created.returncode == 0, created.stderr
    ref = stack.cli(
        "secrets", "create", "registry", "--kubernetes-secret", "registry-creds", "--key", "token"
    )
    assert ref.returncode == 0, ref.stderr
    listed = stack.cli("secrets", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    kinds = {s["name"]: s["kind"] for s in json.loads(listed.stdout)}
    assert kinds["hf-token"] == "value" and kinds["registry"] == "kubernetes_ref"
    assert "hf-token-value-from-a-file" not in listed.stdout
    usage = stack.cli("secrets", "create", "x", "--from-literal", "a", "--from-file", "b")
    assert usage.returncode == 2
    assert "exactly one of" in usage.stderr
    for name in ("hf-token", "registry"):
        assert stack.cli("secrets", "delete", name).returncode == 0
    gone = stack.cli("secrets", "delete", "hf-token")
    assert gone.returncode != 0 and "secret hf-token not found" in gone.stderr


def test_rotation_keeps_every_value_readable(stack: Stack) -> None:
    with stack.client() as client:
        client.secrets.create("wandb", VALUE)
    rotated = stack.cli("admin", "secrets", "rotate", "--json")
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout)["rotated"] == 0  # one key: already under it
    result = _run(stack)
    assert result.status == "SUCCEEDED", f"{result.error}\n{stack.logs()}"
    assert result.outputs == _sha(VALUE)
