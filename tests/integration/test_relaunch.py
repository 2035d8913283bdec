"""Relaunch and recovery through the whole stack (API, Temporal, agent): a relaunch runs the
same inputs again (same or latest version); a recovery of a failed execution runs only what
did not succeed (counted by the tasks themselves, not timed), reusing the rest, map elements
included; a succeeded execution is not recovered; another tenant's is not found; the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleetflow.bundle import build_bundle
from fleetflow.client import ApiError
from fleetflow.loader import load_workflow
from tests.integration.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.stacks("sqlite", "postgres-split-worker")]

WORKFLOWS = Path(__file__).parent / "workflows" / "recover_flows.py"


def runs(marker: Path, name: str) -> int:
    path = Path(f"{marker}.{name}")
    return path.read_text().count("ran") if path.exists() else 0


def finished(stack: Stack, execution_id: str) -> Any:
    return stack.client().wait_for_execution(execution_id, timeout=120)


def by_node(execution: Any) -> dict[str, list[Any]]:
    """Node (without its `n<k>-` prefix) -> its attempts."""
    found: dict[str, list[Any]] = {}
    for attempt in execution.attempts:
        found.setdefault(attempt.node_id.split("-", 1)[1], []).append(attempt)
    return found


def test_relaunch_runs_again_on_the_same_or_the_latest_version(
    stack: Stack, exchange_dir: Path
) -> None:
    marker = exchange_dir / "relaunch"
    marker.touch(mode=0o666)
    first = finished(stack, stack.launch(WORKFLOWS, "chain", n=1, marker=str(marker)))
    assert first.status == "SUCCEEDED" and first.outputs == {"o0": 21}, stack.logs()
    with stack.client() as client:
        same = client.executions.relaunch(first.id)
        assert same.relaunched_from == first.id and same.version == first.version
        assert finished(stack, same.id).outputs == {"o0": 21}
        assert runs(marker, "prepare") == 2
        # Another version registered (other code, so another digest): --latest runs it.
        wf, root = load_workflow(WORKFLOWS, "chain")
        digest, data = build_bundle(root)
        client.workflows.upload_bundle(digest, data)
        newer = client.workflows.register_spec(wf.spec, digest, version="newer").version
    answer = stack.cli("executions", "relaunch", first.id, "--latest", "--wait")
    assert answer.returncode == 0, answer.stderr + stack.logs()
    assert f"relaunched from {first.id}: {first.workflow} version newer" in answer.stdout
    assert answer.stdout.strip().splitlines()[-1] == '{"o0": 21}'
    assert newer == "newer" and runs(marker, "prepare") == 3


def test_recover_runs_only_the_failed_task_and_what_follows(
    stack: Stack, exchange_dir: Path
) -> None:
    marker = exchange_dir / "chain"
    failed = finished(stack, stack.launch(WORKFLOWS, "chain", n=4, marker=str(marker)))
    assert failed.status == "FAILED", stack.logs()
    assert (runs(marker, "prepare"), runs(marker, "flaky"), runs(marker, "conclude")) == (1, 1, 0)

    refused = stack.cli("executions", "recover", "ex-nothing")
    assert refused.returncode == 1 and "execution ex-nothing not found" in refused.stderr
    marker.touch(mode=0o666)
    answer = stack.cli("executions", "recover", failed.id, "--wait")
    assert answer.returncode == 0, answer.stderr + stack.logs()
    assert answer.stdout.strip().splitlines()[-1] == '{"o0": 51}'
    assert (runs(marker, "prepare"), runs(marker, "flaky"), runs(marker, "conclude")) == (1, 2, 1)

    with stack.client() as client:
        recovered = client.executions.list(limit=1)[0]
        assert recovered.recovered_from == failed.id and recovered.version == failed.version
        nodes = by_node(recovered)
        (prepare,) = nodes["prepare"]
        assert prepare.cache_hit and prepare.status == "SUCCEEDED" and prepare.cluster is None
        assert not nodes["flaky"][0].cache_hit and not nodes["conclude"][0].cache_hit
        shown = stack.cli("executions", "get", recovered.id)
        assert shown.returncode == 0, shown.stderr
        assert f"recovered from {failed.id}" in shown.stdout
        assert "prepare (attempt 1) SUCCEEDED (cache hit)" in shown.stdout

        # It succeeded: nothing to recover; a relaunch runs everything again.
        with pytest.raises(ApiError) as conflict:
            client.executions.recover(recovered.id)
        assert conflict.value.status_code == 409
        assert "only a FAILED or CANCELLED execution is recovered" in str(conflict.value)


def test_recover_reuses_the_map_elements_that_succeeded(stack: Stack, exchange_dir: Path) -> None:
    marker = exchange_dir / "map"
    failed = finished(stack, stack.launch(WORKFLOWS, "mapped", n=6, marker=str(marker)))
    assert failed.status == "FAILED", stack.logs()
    assert [runs(marker, f"element{x}") for x in range(6)] == [1] * 6
    marker.touch(mode=0o666)
    with stack.client() as client:
        recovered = finished(stack, client.executions.recover(failed.id).id)
    assert recovered.status == "SUCCEEDED", stack.logs()
    assert recovered.outputs == {"o0": sum(x * x for x in range(6))}
    assert [runs(marker, f"element{x}") for x in range(6)] == [1, 2, 1, 2, 1, 2]
    reused = {a.map_index for a in by_node(recovered)["odd_fails"] if a.cache_hit}
    assert reused == {0, 2, 4}


def test_another_tenant_can_neither_relaunch_nor_recover(stack: Stack, exchange_dir: Path) -> None:
    marker = exchange_dir / "hostile"
    failed = finished(stack, stack.launch(WORKFLOWS, "chain", n=1, marker=str(marker)))
    assert failed.status == "FAILED", stack.logs()
    with stack.client() as admin:
        admin.admin.create_tenant("intruder")
        intruder = admin.admin.create_user("intruder", "mallory", "tenant-admin").token
        before = len(admin.executions.list(limit=200))
    with stack.client(token=intruder) as client:
        for call in (client.executions.relaunch, client.executions.recover):
            with pytest.raises(ApiError) as refused:
                call(failed.id)
            assert refused.value.status_code == 404
            assert f"execution {failed.id} not found" in str(refused.value)
    with stack.client() as admin:
        assert len(admin.executions.list(limit=200)) == before
    assert runs(marker, "prepare") == 1
