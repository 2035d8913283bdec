"""Quotas through the whole stack: a tenant with a quota of 2 GPUs submits 5 one-GPU tasks on a
cluster with 8; never more than 2 run at once, raising the quota to 4 mid-run lets 4 run, and
all 5 finish. The state is sampled through the API while it runs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetflow.api_models.executions import AttemptPublic
from fleetflow.bundle import build_bundle
from fleetflow.client import Client
from fleetflow.loader import load_workflow
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

WORKFLOWS = Path(__file__).parent / "workflows" / "quota.py"
GPU_CLUSTER = "gpu-box"


@pytest.fixture(scope="module")
def vision(stack: Stack) -> Iterator[Client]:
    """Tenant `vision`, may use the cluster `gpu-box` (8 simulated A100), a developer's client."""
    stack.add_agent(GPU_CLUSTER, env={"FLEETFLOW_AGENT_SIMULATED_GPUS": '{"A100": 8}'})
    with stack.client() as admin:
        admin.admin.create_tenant("vision")
        admin.admin.grant_cluster("vision", GPU_CLUSTER)
        user = admin.admin.create_user("vision", "vision-dev", "developer")
    with Client(stack.api_url, token=user.token) as client:
        yield client


def running(client: Client, execution_id: str) -> list[AttemptPublic]:
    attempts = client.executions.get(execution_id).attempts
    return [a for a in attempts if a.map_index is not None and a.status == "RUNNING"]


def launch(client: Client, **inputs: Any) -> str:
    wf, root = load_workflow(WORKFLOWS, "gpu_jobs")
    digest, data = build_bundle(root)
    client.workflows.upload_bundle(digest, data)
    version = client.workflows.register_spec(wf.spec, digest).version
    created = client.executions.create(wf.spec.name, wf.inputs_to_literals(inputs), version=version)
    return str(created.id)


def test_a_gpu_quota_bounds_what_runs_and_a_raise_applies_mid_run(
    stack: Stack, vision: Client
) -> None:
    with stack.client() as admin:
        admin.admin.set_quota("vision", gpu=2)
    execution_id = launch(vision, n=5, seconds=6.0)
    stack.wait_for(lambda: len(running(vision, execution_id)) == 2, "two tasks to run", 60)
    most = 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # sample: never more than the quota
        most = max(most, len(running(vision, execution_id)))
        time.sleep(0.1)
    assert most == 2
    waiting = [
        a
        for a in vision.executions.get(execution_id).attempts
        if a.map_index is not None and a.status == "PENDING"
    ]
    assert waiting and all(a.pending_reason == "quota: needs 1 GPU, 2/2 in use" for a in waiting), (
        waiting
    )
    assert vision.usage.quota_status().waiting_for_quota == len(waiting)

    with stack.client() as admin:
        admin.admin.set_quota("vision", gpu=4)
    four = stack.wait_for(
        lambda: len(running(vision, execution_id)) == 4, "four tasks to run at once", 30
    )
    assert four
    final = vision.wait_for_execution(execution_id, timeout=120)
    assert final.status == "SUCCEEDED", stack.logs()
    assert final.outputs == {"o0": [0, 1, 2, 3, 4]}
    elements = [a for a in final.attempts if a.map_index is not None]
    assert sorted(a.map_index for a in elements if a.status == "SUCCEEDED") == [0, 1, 2, 3, 4]
    assert {a.cluster for a in elements} == {GPU_CLUSTER}
    buckets = vision.usage.history(bucket="minute", group_by="gpu_type").buckets
    a100 = sum(group.gpu_seconds for b in buckets if (group := b.groups.get("A100")))
    assert 5 * 6.0 * 0.9 <= a100 <= 5 * 6.0 * 2, buckets  # five tasks held one A100 ~6 s each
