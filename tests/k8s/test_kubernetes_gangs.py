"""Gangs (`@task(replicas=N)`) on the Kubernetes executor, against a real API server and
scheduler with kwok GPU nodes: N pods created together with the rendezvous environment and a
headless Service; all or none (a pod the namespace refuses leaves nothing behind); a worker
lost fails the whole attempt; cancel deletes every pod and the Service; a gang bigger than
any cluster is never placed; a worker that cannot pull its image fails the attempt; the
attempt's log is every rank's (kwok's kubelet server serves each pod's log)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from fleetflow.bundle import build_bundle
from fleetflow.loader import load_workflow
from tests.k8s.cluster import POD_LOG_LINES
from tests.k8s.conftest import CLUSTER_B, TENANT_NAMESPACE, K8sStack
from tests.k8s.test_kubernetes_tier import client, finished, pods, wait_for, wait_pods
from tests.polling import wait_until

pytestmark = pytest.mark.k8s

WORKFLOWS = Path(__file__).parent / "workflows" / "gang_tasks.py"


def submit(k8s_stack: K8sStack, workflow: str) -> str:
    wf, root = load_workflow(WORKFLOWS, workflow)
    digest, data = build_bundle(root)
    with client(k8s_stack) as api:
        api.workflows.upload_bundle(digest, data)
        version = api.workflows.register_spec(wf.spec, digest).version
        return str(api.executions.create(wf.spec.name, {}, version=version).id)


def gang_pods(k8s_stack: K8sStack, rank0: str) -> list[k8s.V1Pod]:
    return pods(k8s_stack, CLUSTER_B, gang=rank0)


def service(k8s_stack: K8sStack, name: str) -> k8s.V1Service | None:
    core = k8s_stack.clusters[CLUSTER_B].core()
    try:
        return core.read_namespaced_service(name, TENANT_NAMESPACE)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def started_gang(k8s_stack: K8sStack) -> tuple[str, str, list[k8s.V1Pod]]:
    """Submit the 3-pod gang and wait for all its pods to run: (execution, rank 0's pod,
    the pods by rank)."""
    execution_id = submit(k8s_stack, "held_gang")
    running = wait_for(
        k8s_stack,
        execution_id,
        lambda e: any(a.status == "RUNNING" for a in e.attempts),
        what="the gang's attempt to run",
    )
    (attempt,) = running.attempts
    (rank0,) = pods(k8s_stack, CLUSTER_B, **{"attempt-id": attempt.id})
    name = rank0.metadata.name
    found = wait_pods(
        k8s_stack,
        CLUSTER_B,
        lambda found: len(found) == 3 and all(p.status.phase == "Running" for p in found),
        gang=name,
    )
    return execution_id, name, sorted(found, key=lambda p: p.metadata.labels["fleetflow.dev/rank"])


def test_a_gang_is_three_pods_with_the_rendezvous_env_and_a_headless_service(
    k8s_stack: K8sStack,
) -> None:
    execution_id, name, by_rank = started_gang(k8s_stack)
    assert [p.metadata.name for p in by_rank] == [name, f"{name}-w1", f"{name}-w2"]
    for rank, pod in enumerate(by_rank):
        env = {e.name: e.value for e in pod.spec.containers[0].env}
        assert env["MASTER_ADDR"] == f"rank-0.{name}"
        assert env["MASTER_PORT"] == "29500"
        assert (env["WORLD_SIZE"], env["RANK"], env["NODE_RANK"]) == ("3", str(rank), str(rank))
        assert env["LOCAL_RANK"] == "0"
        assert pod.spec.hostname == f"rank-{rank}" and pod.spec.subdomain == name
        assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "4"
        command = pod.spec.containers[0].command
        assert ("--discard-outputs" in command) == (rank > 0)  # only rank 0 writes outputs
        # Only rank 0 is the attempt's pod; the workers carry the gang's label instead.
        assert ("fleetflow.dev/attempt-id" in pod.metadata.labels) == (rank == 0)
    headless = service(k8s_stack, name)
    assert headless is not None
    assert headless.spec.cluster_ip == "None"
    assert headless.spec.selector == {"fleetflow.dev/gang": name}
    assert headless.spec.publish_not_ready_addresses is True

    with client(k8s_stack) as api:
        api.cancel(execution_id)
    final = wait_for(k8s_stack, execution_id, finished, what="cancellation")
    assert final.status == "CANCELLED"
    wait_pods(k8s_stack, CLUSTER_B, lambda found: not found, gang=name)  # every pod
    wait_until(lambda: service(k8s_stack, name) is None, timeout=30, message="Service gone")


def test_a_lost_worker_fails_the_whole_attempt(k8s_stack: K8sStack) -> None:
    execution_id, name, by_rank = started_gang(k8s_stack)
    core = k8s_stack.clusters[CLUSTER_B].core()
    core.delete_namespaced_pod(f"{name}-w1", TENANT_NAMESPACE, grace_period_seconds=0)
    final = wait_for(k8s_stack, execution_id, finished, what="the attempt to fail")
    assert final.status == "FAILED"
    (attempt,) = final.attempts
    assert attempt.error_message == "worker of rank 1: its pod was deleted", attempt
    wait_pods(k8s_stack, CLUSTER_B, lambda found: not found, gang=name)  # rank 0's too
    wait_until(lambda: service(k8s_stack, name) is None, timeout=30, message="Service gone")


@pytest.fixture
def one_more_pod(k8s_stack: K8sStack) -> Iterator[None]:
    """A ResourceQuota in the tenant's namespace that admits one more pod. The tier runs no
    quota controller, so the test sets its status as that controller would (the API server's
    admission then counts each pod it admits against it)."""
    core = k8s_stack.clusters[CLUSTER_B].core()
    quota = {"metadata": {"name": "one-more-pod"}, "spec": {"hard": {"pods": "1"}}}
    core.create_namespaced_resource_quota(TENANT_NAMESPACE, quota)
    status = {"status": {"hard": {"pods": "1"}, "used": {"pods": "0"}}}
    core.patch_namespaced_resource_quota_status("one-more-pod", TENANT_NAMESPACE, status)
    try:
        yield
    finally:
        core.delete_namespaced_resource_quota("one-more-pod", TENANT_NAMESPACE)


def test_a_gang_the_namespace_cannot_hold_leaves_nothing_behind(
    k8s_stack: K8sStack, one_more_pod: None
) -> None:
    execution_id = submit(k8s_stack, "held_gang")
    final = wait_for(k8s_stack, execution_id, finished, what="the attempt to fail")
    assert final.status == "FAILED"
    (attempt,) = final.attempts
    message = attempt.error_message or ""
    assert "-w2 of its 3 workers (none was left running)" in message, message
    assert "exceeded quota" in message, message
    rank0 = f"ff-{attempt.id.lower()}-"
    core = k8s_stack.clusters[CLUSTER_B].core()

    def leftovers() -> list[str]:
        names = [p.metadata.name for p in core.list_namespaced_pod(TENANT_NAMESPACE).items]
        names += [s.metadata.name for s in core.list_namespaced_service(TENANT_NAMESPACE).items]
        return [n for n in names if n.startswith(rank0)]

    wait_until(
        leftovers, timeout=30, message="nothing of the gang left", until=lambda left: not left
    )


def test_a_gang_wider_than_any_cluster_is_never_placed(k8s_stack: K8sStack) -> None:
    execution_id = submit(k8s_stack, "too_wide_gang")
    waiting = wait_for(
        k8s_stack,
        execution_id,
        lambda e: any(a.pending_reason for a in e.attempts),
        what="a pending reason",
    )
    (attempt,) = waiting.attempts
    assert attempt.status == "PENDING" and attempt.cluster is None
    assert attempt.pending_reason == (
        f"no capacity: needs 5 × 4 H100 on one cluster; largest free: {CLUSTER_B} with 4 × 4 H100"
    ), attempt.pending_reason
    with client(k8s_stack) as api:
        api.cancel(execution_id)
    assert wait_for(k8s_stack, execution_id, finished, what="cancellation").status == "CANCELLED"


def test_a_gang_whose_pods_no_node_can_hold_waits_with_the_reason_and_cancel_clears_it(
    k8s_stack: K8sStack,
) -> None:
    """2 × 8 H100 fits gpu-b's 16 free H100 in all (placement counts the cluster), but no node
    of it has 8 (4 × 4): the pods wait unschedulable, as a single pod does, saying why."""
    execution_id = submit(k8s_stack, "unschedulable_gang")
    waiting = wait_for(
        k8s_stack,
        execution_id,
        lambda e: any(a.pending_reason for a in e.attempts),
        what="a pending reason",
    )
    (attempt,) = waiting.attempts
    assert attempt.cluster == CLUSTER_B
    assert attempt.pending_reason.startswith("no node with 8 free H100"), attempt
    (rank0,) = pods(k8s_stack, CLUSTER_B, **{"attempt-id": attempt.id})
    name = rank0.metadata.name
    assert len(gang_pods(k8s_stack, name)) == 2
    assert service(k8s_stack, name) is not None
    with client(k8s_stack) as api:
        api.cancel(execution_id)
    assert wait_for(k8s_stack, execution_id, finished, what="cancellation").status == "CANCELLED"
    wait_pods(k8s_stack, CLUSTER_B, lambda found: not found, gang=name)
    wait_until(lambda: service(k8s_stack, name) is None, timeout=30, message="Service gone")


def test_a_worker_that_cannot_pull_its_image_fails_the_attempt_and_leaves_nothing(
    k8s_stack: K8sStack,
) -> None:
    """A worker whose image cannot be pulled is timed out as rank 0's pod would be (the
    tier's grace is 3 s): the attempt fails naming the worker, and every pod of the gang and
    its Service are deleted. kwok starts every pod it is given at once, so the worker that
    cannot pull is one of the unschedulable gang's (its pods wait for a node with 8 H100):
    the test reports the kubelet's ErrImagePull in its status, as a kubelet would."""
    execution_id = submit(k8s_stack, "unschedulable_gang")
    placed = wait_for(
        k8s_stack,
        execution_id,
        lambda e: any(a.cluster for a in e.attempts),
        what="the gang to be placed",
    )
    (attempt,) = placed.attempts
    (rank0,) = wait_pods(
        k8s_stack, CLUSTER_B, lambda found: len(found) == 1, **{"attempt-id": attempt.id}
    )
    name = rank0.metadata.name
    wait_pods(k8s_stack, CLUSTER_B, lambda found: len(found) == 2, gang=name)
    core = k8s_stack.clusters[CLUSTER_B].core()
    image = rank0.spec.containers[0].image
    pull = {"reason": "ErrImagePull", "message": f"pull access denied for {image}"}
    status = {
        "containerStatuses": [
            {
                "name": rank0.spec.containers[0].name,
                "image": image,
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"waiting": pull},
            }
        ]
    }
    core.patch_namespaced_pod_status(f"{name}-w1", TENANT_NAMESPACE, {"status": status})
    final = wait_for(k8s_stack, execution_id, finished, what="the attempt to fail")
    assert final.status == "FAILED"
    (attempt,) = final.attempts
    assert attempt.error_message == (
        f"worker of rank 1: cannot pull image {image}: ErrImagePull pull access denied for "
        f"{image} (for 3s)"
    ), attempt.error_message
    wait_pods(k8s_stack, CLUSTER_B, lambda found: not found, gang=name)  # rank 0's too
    wait_until(lambda: service(k8s_stack, name) is None, timeout=30, message="Service gone")


def test_a_gangs_log_is_every_ranks_while_it_runs_and_after_it_is_cancelled(
    k8s_stack: K8sStack,
) -> None:
    """Every pod on the tier logs `POD_LOG_LINES` (kwok serves it through the API server): the
    attempt's log, as the logs API serves it, is rank 0's, then each worker's lines prefixed
    `[rank k]`, as on the local-process executor; cancelling deletes the pods, and the final
    log still has every rank's (read before the pods went)."""
    execution_id, name, _ = started_gang(k8s_stack)
    expected = "".join(f"{line}\n" for line in POD_LOG_LINES) + "".join(
        f"[rank {rank}] {line}\n" for rank in (1, 2) for line in POD_LOG_LINES
    )

    def log() -> str | None:
        with client(k8s_stack) as api:
            (attempt,) = api.executions.logs(execution_id)
            return attempt.log

    # Shipped while it runs (every 10 s).
    assert wait_until(log, timeout=40, interval=0.5, message="the log", until=bool) == expected
    with client(k8s_stack) as api:
        api.cancel(execution_id)
    assert wait_for(k8s_stack, execution_id, finished, what="cancellation").status == "CANCELLED"
    wait_pods(k8s_stack, CLUSTER_B, lambda found: not found, gang=name)
    assert log() == expected
