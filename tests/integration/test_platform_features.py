"""Map fan-out, task caching and cancellation through the whole stack."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from control_plane.db.models import Execution, TaskAttempt
from control_plane.db.session import make_engine
from fleetflow.api_models.executions import AttemptLog
from fleetflow.client import Client
from tests.integration.stack import Stack, process_alive
from tests.polling import wait_until

pytestmark = pytest.mark.integration

WORKFLOWS = Path(__file__).parent / "workflows" / "platform_features.py"


def launch(stack: Stack, workflow: str, **inputs: Any) -> tuple[Client, str]:
    return stack.client(), stack.launch(WORKFLOWS, workflow, **inputs)


def test_map_task_fans_out_one_attempt_per_element(stack: Stack) -> None:
    client, execution_id = launch(stack, "squares", n=5, offset=1)
    final = client.wait_for_execution(execution_id, timeout=120)
    assert final.status == "SUCCEEDED", stack.logs()
    assert final.outputs == {"o0": sum(x * x + 1 for x in range(5))}
    elements = sorted(a.map_index for a in final.attempts if a.map_index is not None)
    assert elements == [0, 1, 2, 3, 4]
    # Five elements, chunks of 4 in the test stacks: two chunk workflows ran them, and each
    # was told of its own elements' ends.
    engine = make_engine(stack.database_url)
    with engine.connect() as db:
        told = dict(
            db.execute(
                select(TaskAttempt.map_index, TaskAttempt.workflow_id).where(
                    TaskAttempt.execution_id == execution_id
                )
            ).all()
        )
    engine.dispose()
    node = next(a.node_id for a in final.attempts if a.map_index is not None)
    assert told == {
        -1: None,
        **{i: f"{execution_id}/{node}/chunk-{i // 4}" for i in range(5)},
    }


def test_cached_task_is_not_dispatched_twice(
    exchange_dir: Path, stack: Stack, tmp_path: Path
) -> None:
    marker = exchange_dir / "runs.txt"
    client, first_id = launch(stack, "cached_pipeline", seed=3, marker=str(marker))
    first = client.wait_for_execution(first_id, timeout=120)
    assert first.status == "SUCCEEDED", stack.logs()
    client, second_id = launch(stack, "cached_pipeline", seed=3, marker=str(marker))
    second = client.wait_for_execution(second_id, timeout=120)
    assert second.status == "SUCCEEDED"
    assert second.outputs == first.outputs
    assert marker.read_text().count("ran") == 1
    (attempt,) = second.attempts
    assert attempt.cache_hit is True and attempt.cluster is None
    client, third_id = launch(stack, "cached_pipeline", seed=4, marker=str(marker))
    assert client.wait_for_execution(third_id, timeout=120).status == "SUCCEEDED"
    assert marker.read_text().count("ran") == 2


def test_the_task_cache_is_never_shared_between_tenants(
    exchange_dir: Path, stack: Stack, tmp_path: Path
) -> None:
    """Same task, same inputs, another tenant: it runs again. A shared entry would hand one
    tenant's outputs to another, or let one plant outputs for another's next run."""
    marker = exchange_dir / "runs.txt"
    with stack.client() as admin:
        admin.admin.create_tenant("cache-other")
        admin.admin.grant_cluster("cache-other", "*")
    client, first_id = launch(stack, "cached_pipeline", seed=11, marker=str(marker))
    assert client.wait_for_execution(first_id, timeout=120).status == "SUCCEEDED"
    other = stack.client(tenant="cache-other")
    other_id = stack.launch(
        WORKFLOWS, "cached_pipeline", tenant="cache-other", seed=11, marker=str(marker)
    )
    final = other.wait_for_execution(other_id, timeout=120)
    assert final.status == "SUCCEEDED", stack.logs()
    (attempt,) = final.attempts
    assert attempt.cache_hit is False
    assert marker.read_text().count("ran") == 2
    # Within the tenant the cache still answers.
    client, again_id = launch(stack, "cached_pipeline", seed=11, marker=str(marker))
    (attempt,) = client.wait_for_execution(again_id, timeout=120).attempts
    assert attempt.cache_hit is True and marker.read_text().count("ran") == 2


def test_cancel_stops_the_running_attempt_within_seconds(
    exchange_dir: Path, stack: Stack, tmp_path: Path
) -> None:
    marker = exchange_dir / "pid.txt"
    client, execution_id = launch(stack, "sleepy", seconds=300.0, marker=str(marker))
    pid = int(stack.wait_for(lambda: marker.exists() and marker.read_text(), f"{marker}"))
    cancelled_at = time.monotonic()
    client.cancel(execution_id)
    final = client.wait_for_execution(execution_id, timeout=60)
    assert final.status == "CANCELLED"
    assert final.attempts[0].status == "CANCELLED"
    wait_until(
        lambda: not process_alive(pid),
        timeout=30 - (time.monotonic() - cancelled_at),
        message="the task process to end within 30 s of the cancel",
    )


def _stored(stack: Stack, execution_id: str, column: Any) -> Any:
    engine = make_engine(stack.database_url)
    with engine.connect() as connection:
        value = connection.execute(select(column).where(Execution.id == execution_id)).scalar_one()
    engine.dispose()
    return value


def test_large_inputs_are_kept_in_the_blob_store_not_the_database(stack: Stack) -> None:
    values = list(range(60_000))
    client, execution_id = launch(stack, "large_input", values=values)
    final = client.wait_for_execution(execution_id, timeout=120)
    assert final.status == "SUCCEEDED", stack.logs()
    assert final.outputs == {"o0": sum(values)}
    assert final.inputs == {"values": values}
    stored = _stored(stack, execution_id, Execution.inputs)
    assert set(stored) == {"$blob"} and len(json.dumps(stored)) < 1000


def test_large_outputs_are_kept_in_the_blob_store_not_the_database(stack: Stack) -> None:
    n = 60_000  # about 400 KB of JSON, past the inline limit
    client, execution_id = launch(stack, "large_output", n=n)
    final = client.wait_for_execution(execution_id, timeout=120)
    assert final.status == "SUCCEEDED", stack.logs()
    assert final.outputs == {"o0": list(range(n))}
    stored = _stored(stack, execution_id, Execution.outputs)
    assert set(stored) == {"$blob"} and len(json.dumps(stored)) < 1000
    listed = [e for e in client.executions.list(limit=5) if e.id == execution_id]
    assert listed and listed[0].outputs == final.outputs


def test_logs_of_an_attempt_while_it_runs_and_after(stack: Stack) -> None:
    client, execution_id = launch(stack, "talkative", lines=3, pause=4.0)

    def first_line_shipped() -> list[AttemptLog] | None:
        attempts = client.executions.logs(execution_id)
        running = [a for a in attempts if a.status == "RUNNING" and a.log]
        return running if running and "line 0" in (running[0].log or "") else None

    (running,) = stack.wait_for(first_line_shipped, "the running attempt's first line", 30)
    assert "line 2" not in (running.log or "")
    final = client.wait_for_execution(execution_id, timeout=120)
    assert final.status == "SUCCEEDED", stack.logs()
    (done,) = client.executions.logs(execution_id)
    assert done.status == "SUCCEEDED"
    assert done.log and all(f"line {i}" in done.log for i in range(3)) and "to stderr" in done.log
    cli = stack.cli("executions", "logs", execution_id)
    assert cli.returncode == 0, cli.stderr
    assert "(attempt 1) SUCCEEDED on local" in cli.stdout and "line 2" in cli.stdout
    missing = stack.cli("executions", "logs", execution_id, "--node", "n9-nothing")
    assert missing.returncode != 0 and "has no attempt of node 'n9-nothing'" in missing.stderr
