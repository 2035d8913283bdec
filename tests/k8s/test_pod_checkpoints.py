"""Task checkpoints in Kubernetes pods: a task that checkpoints then fails in one pod finds its
checkpoint in the pod of its next attempt, and so does one whose pod is killed mid-way (each
write was saved when it returned). kwok runs nothing, so the test runs each pod's command
itself (`tests.k8s.kubelet`), as the container would."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client as k8s

from fleetflow.bundle import build_bundle
from fleetflow.loader import load_workflow
from tests.k8s.conftest import CLUSTER_A, K8sStack
from tests.k8s.kubelet import run_pod
from tests.k8s.test_kubernetes_tier import client, finished, pods, wait_for, wait_pods

pytestmark = pytest.mark.k8s

WORKFLOWS = Path(__file__).parent / "workflows" / "pod_checkpoints.py"
KILLED = Path(__file__).parent / "workflows" / "pod_killed.py"


def test_the_next_attempt_in_a_pod_reads_the_checkpoint_of_the_failed_one(
    k8s_stack: K8sStack, tmp_path: Path
) -> None:
    wf, root = load_workflow(WORKFLOWS, "checkpoint_in_pods")
    digest, data = build_bundle(root)
    with client(k8s_stack) as api:
        api.workflows.upload_bundle(digest, data)
        version = api.workflows.register_spec(wf.spec, digest).version
        execution_id = str(api.executions.create(wf.spec.name, {}, version=version).id)

    core = k8s_stack.clusters[CLUSTER_A].core()
    ran: list[str] = []

    def not_run_yet(found: list[k8s.V1Pod]) -> list[k8s.V1Pod]:
        return [p for p in found if p.metadata.name not in ran and p.status.phase == "Running"]

    for attempt in (1, 2):
        found = wait_pods(
            k8s_stack,
            CLUSTER_A,
            lambda found: bool(not_run_yet(found)),
            timeout=90,
            **{"execution-id": execution_id},
        )
        (pod,) = not_run_yet(found)
        command = pod.spec.containers[0].command
        checkpoint_uri = command[command.index("--checkpoint-uri") + 1]
        assert checkpoint_uri.endswith("/checkpoint"), command
        outcome = run_pod(core, pod, tmp_path)
        ran.append(pod.metadata.name)
        if attempt == 1:
            assert outcome.returncode == 1, outcome.stderr
            assert "RuntimeError: failing after the checkpoint" in outcome.stderr
            assert "kept the checkpoint (checkpoint.bin)" in outcome.stderr
        else:
            assert outcome.returncode == 0, outcome.stderr

    final = wait_for(k8s_stack, execution_id, finished, what="execution end")
    assert final.status == "SUCCEEDED", k8s_stack.logs()
    first, second = sorted(final.attempts, key=lambda a: a.attempt_number)
    assert (first.status, second.status) == ("FAILED", "SUCCEEDED")
    assert "RuntimeError: failing after the checkpoint" in first.error_message
    assert len(pods(k8s_stack, CLUSTER_A, **{"execution-id": execution_id})) == 2
    with client(k8s_stack) as api:
        assert api.executions.outputs(execution_id, wf) == "attempt 2 read: kept by attempt 1"


def test_a_pod_killed_mid_way_keeps_its_last_checkpoint(
    k8s_stack: K8sStack, tmp_path: Path
) -> None:
    marker = tmp_path / "checkpointed"
    wf, root = load_workflow(KILLED, "killed_mid_way")
    digest, data = build_bundle(root)
    with client(k8s_stack) as api:
        api.workflows.upload_bundle(digest, data)
        version = api.workflows.register_spec(wf.spec, digest).version
        literals = wf.inputs_to_literals({"marker": str(marker)})
        execution_id = str(api.executions.create(wf.spec.name, literals, version=version).id)

    core = k8s_stack.clusters[CLUSTER_A].core()
    ran: list[str] = []

    def not_run_yet(found: list[k8s.V1Pod]) -> list[k8s.V1Pod]:
        return [p for p in found if p.metadata.name not in ran and p.status.phase == "Running"]

    for attempt in (1, 2):
        found = wait_pods(
            k8s_stack,
            CLUSTER_A,
            lambda found: bool(not_run_yet(found)),
            timeout=90,
            **{"execution-id": execution_id},
        )
        (pod,) = not_run_yet(found)
        if attempt == 1:
            # Killed as soon as it checkpointed: nothing of the runtime runs after the task.
            outcome = run_pod(core, pod, tmp_path, kill_when=marker.exists)
            assert outcome.returncode == -9, outcome.stderr
            assert outcome.stderr.count("kept the checkpoint (checkpoint.bin)") == 3
        else:
            outcome = run_pod(core, pod, tmp_path)
            assert outcome.returncode == 0, outcome.stderr
        ran.append(pod.metadata.name)

    final = wait_for(k8s_stack, execution_id, finished, what="execution end")
    assert final.status == "SUCCEEDED", k8s_stack.logs()
    first, second = sorted(final.attempts, key=lambda a: a.attempt_number)
    assert (first.status, second.status) == ("FAILED", "SUCCEEDED")
    with client(k8s_stack) as api:
        assert (
            api.executions.outputs(execution_id, wf)
            == "attempt 2 resumed from: step 2 of attempt 1"
        )
