"""The pods and the headless Service of a gang on the Kubernetes executor, as pure manifests;
how the executor judges a gang's pods (fed the watch's observations) and reads its log."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from kubernetes.client import ApiClient, Configuration

from data_plane_agent.attempts import AttemptResources, TaskAssignment
from data_plane_agent.executors import kubernetes_gang as gang
from data_plane_agent.executors import kubernetes_pods as pods
from data_plane_agent.executors.kubernetes import KubernetesExecutor, _PodAttempt
from data_plane_agent.settings import KubernetesSettings
from fleetflow.states import AttemptState


@pytest.fixture(autouse=True)
def _clean_agent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FLEETFLOW_AGENT_"):
            monkeypatch.delenv(name)


def assignment(**changes: Any) -> TaskAssignment:
    values: dict[str, Any] = {
        "attempt_id": "at-0123456789abcdef",
        "fencing_token": 2,
        "execution_id": "ex-42",
        "node_id": "n0-train",
        "tenant": "vision",
        "task_module": "pipelines.train",
        "task_function": "train",
        "bundle_uri": "s3://bundles/abc.zip",
        "inputs_uri": "s3://runs/ex-42/n0/inputs.json",
        "outputs_uri": "s3://runs/ex-42/n0/outputs.json",
        "resources": AttemptResources(cpu=4, memory_bytes=2**30, gpu=8, gpu_type="H100"),
        "checkpoint_uri": "s3://runs/ex-42/n0/checkpoint",
        "replicas": 3,
    }
    values.update(changes)
    return TaskAssignment(**values)


def env_of(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"] if "value" in e}


def test_the_pods_of_a_gang_have_their_rank_and_find_rank_zero_through_the_service() -> None:
    settings = KubernetesSettings(default_image="registry/runtime:1")
    rank0 = pods.pod_manifest(assignment(), settings)
    name = rank0["metadata"]["name"]
    manifests = gang.gang_pod_manifests(rank0, 3)
    assert [m["metadata"]["name"] for m in manifests] == [name, f"{name}-w1", f"{name}-w2"]
    assert rank0["spec"].get("hostname") is None  # the attempt's manifest is left as it was
    for rank, pod in enumerate(manifests):
        env = env_of(pod)
        assert env["MASTER_ADDR"] == f"rank-0.{name}"
        assert (env["RANK"], env["WORLD_SIZE"], env["NODE_RANK"], env["LOCAL_RANK"]) == (
            str(rank),
            "3",
            str(rank),
            "0",
        )
        assert pod["spec"]["hostname"] == f"rank-{rank}"
        assert pod["spec"]["subdomain"] == name
        labels = pod["metadata"]["labels"]
        assert labels[gang.GANG_LABEL] == name and labels[gang.RANK_LABEL] == str(rank)
        command = pod["spec"]["containers"][0]["command"]
        if rank == 0:
            assert pods.assignment_from_pod(pod) == assignment()
            assert "--checkpoint-uri" in command and "--discard-outputs" not in command
            assert gang.rank_of(pod) is None  # the attempt's own pod
        else:
            # Not the attempt's pod: no attempt label, no assignment to adopt, no outputs.
            assert pods.ATTEMPT_LABEL not in labels
            assert pods.assignment_from_pod(pod) is None
            assert "--checkpoint-uri" not in command and command[-1] == "--discard-outputs"
            assert gang.rank_of(pod) == (name, rank)
    assert gang.gang_pod_names(name, 3) == [f"{name}-w1", f"{name}-w2"]


def test_the_service_is_headless_and_selects_the_gang() -> None:
    rank0 = pods.pod_manifest(assignment(), KubernetesSettings(default_image="r:1"))
    name = rank0["metadata"]["name"]
    service = gang.service_manifest(rank0)
    assert service["metadata"]["name"] == name
    assert service["metadata"]["namespace"] == "fleetflow-vision"
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {gang.GANG_LABEL: name}
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["metadata"]["labels"][pods.ATTEMPT_LABEL] == "at-0123456789abcdef"


def test_only_a_gang_writes_replicas_into_the_assignment_annotation() -> None:
    single = assignment(replicas=1)
    assert '"replicas"' not in pods.assignment_to_json(single)
    assert '"replicas":3' in pods.assignment_to_json(assignment())


def observed(manifest: dict[str, Any], phase: str, **status: Any) -> dict[str, Any]:
    """`manifest` as a watch event shows it: with a status (and a start time once running)."""
    pod = copy.deepcopy(manifest)
    pod["status"] = {"phase": phase, **status}
    if phase == "Running":
        pod["status"]["startTime"] = "2026-01-01T00:00:00Z"
    return pod


async def test_a_gang_runs_once_every_pod_of_it_runs_and_says_which_waits(
    tmp_path: Path,
) -> None:
    """The executor's watch path (`_on_pod`), fed the observations a watch would deliver: rank
    0 running does not make the attempt run while a worker is unschedulable; the attempt's
    pending reason names that worker; it runs once every worker runs. No API call is made."""
    settings = KubernetesSettings(default_image="r:1")
    executor = KubernetesExecutor(settings, tmp_path, api_client=ApiClient())
    task = assignment()
    rank0, *workers = gang.gang_pod_manifests(pods.pod_manifest(task, settings), 3)
    name, namespace = rank0["metadata"]["name"], rank0["metadata"]["namespace"]
    executor._attempts[task.attempt_id] = _PodAttempt(task, namespace, name)
    unschedulable = {
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
            }
        ]
    }
    executor._on_pod("ADDED", observed(workers[0], "Running"))
    executor._on_pod("ADDED", observed(workers[1], "Pending", **unschedulable))
    executor._on_pod("ADDED", observed(rank0, "Running"))
    assert executor._events.empty()  # not running: a worker waits
    assert executor.pending_reasons() == {
        task.attempt_id: "worker of rank 2: no node can run the pod (0/4 nodes are available: "
        "4 Insufficient nvidia.com/gpu.)"
    }
    executor._on_pod("MODIFIED", observed(workers[1], "Running"))
    event = executor._events.get_nowait()
    assert (event.attempt_id, event.state) == (task.attempt_id, AttemptState.RUNNING)
    assert executor.pending_reasons() == {}


async def test_a_worker_that_cannot_pull_its_image_fails_the_attempt_after_the_grace(
    tmp_path: Path,
) -> None:
    """A worker's image-pull problem is timed as rank 0's is: the first observation starts the
    clock, one at or past the grace fails the whole attempt with a reason naming the worker.
    A problem that clears before the grace resets the clock. No API call is awaited (the
    deletions of the gang go in the background and are cancelled here)."""
    settings = KubernetesSettings(default_image="r:1", image_pull_grace_seconds=0)
    executor = KubernetesExecutor(settings, tmp_path, api_client=ApiClient())
    task = assignment()
    rank0, *workers = gang.gang_pod_manifests(pods.pod_manifest(task, settings), 3)
    name, namespace = rank0["metadata"]["name"], rank0["metadata"]["namespace"]
    executor._attempts[task.attempt_id] = _PodAttempt(task, namespace, name)

    def pulling(reason: str) -> dict[str, Any]:
        waiting = {"waiting": {"reason": reason, "message": "manifest unknown"}}
        statuses = [{"name": pods.CONTAINER, "image": "r:1", "state": waiting}]
        return observed(workers[1], "Pending", containerStatuses=statuses)

    executor._on_pod("ADDED", observed(rank0, "Running"))
    executor._on_pod("ADDED", observed(workers[0], "Running"))
    executor._on_pod("ADDED", pulling("ErrImagePull"))  # the clock starts
    assert executor._events.empty()
    assert executor.pending_reasons() == {
        task.attempt_id: "worker of rank 2: cannot pull image r:1: ErrImagePull manifest unknown"
    }
    executor._on_pod("MODIFIED", observed(workers[1], "Pending"))  # cleared: clock reset
    executor._on_pod("MODIFIED", pulling("ImagePullBackOff"))
    assert executor._events.empty()
    try:
        executor._judge_timers()  # the resync's timer: the same problem, past the (zero) grace
        events = [executor._events.get_nowait() for _ in range(executor._events.qsize())]
        event = events[-1]  # (after RUNNING: rank 0 had started)
        assert (event.attempt_id, event.state) == (task.attempt_id, AttemptState.FAILED)
        assert event.message == (
            "worker of rank 2: cannot pull image r:1: ImagePullBackOff manifest unknown (for 0s)"
        )
        assert executor.running() == []
    finally:
        for background in list(executor._background):
            background.cancel()


class _PodLogServer(ThreadingHTTPServer):
    """A stand-in for the API server's pod log and delete endpoints (the real `KubernetesApi`
    talks to it over HTTP): `logs` by pod name; a DELETE makes the pod's log go (404)."""

    def __init__(self, logs: dict[str, str]) -> None:
        self.logs = dict(logs)
        self.deleted: list[tuple[str, str]] = []  # (kind, name)
        super().__init__(("127.0.0.1", 0), _PodLogHandler)


class _PodLogHandler(BaseHTTPRequestHandler):
    server: _PodLogServer

    def _answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        parts = urlsplit(self.path).path.split("/")  # /api/v1/namespaces/N/pods/NAME/log
        name = parts[6] if len(parts) == 8 and parts[7] == "log" else ""
        if name in self.server.logs:
            self._answer(200, self.server.logs[name].encode(), "text/plain")
        else:
            self._answer(404, json.dumps({"kind": "Status", "code": 404}).encode())

    def do_DELETE(self) -> None:
        kind, name = urlsplit(self.path).path.split("/")[-2:]
        self.server.deleted.append((kind, name))
        if kind == "pods":
            self.server.logs.pop(name, None)
        self._answer(200, b"{}")

    def do_PATCH(self) -> None:  # the finished pod's annotation
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer(200, b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        del format, args


@pytest.fixture
def log_server() -> Iterator[_PodLogServer]:
    name = pods.pod_manifest(assignment(), KubernetesSettings(default_image="r:1"))["metadata"][
        "name"
    ]
    server = _PodLogServer(
        {name: "rank 0 says hi\n", f"{name}-w1": "one\ntwo\n", f"{name}-w2": "three\n"}
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


async def test_a_gangs_log_is_every_ranks_and_outlives_its_workers_pods(
    tmp_path: Path, log_server: _PodLogServer
) -> None:
    """A gang's log is rank 0's, then each other rank's with its lines prefixed `[rank k]`,
    as on the local-process executor. When the gang ends its workers' logs are read before
    their pods are deleted, so the final log (read once the end is out) still has them."""
    settings = KubernetesSettings(default_image="r:1", cleanup="keep")
    configuration = Configuration(host=f"http://127.0.0.1:{log_server.server_address[1]}")
    executor = KubernetesExecutor(settings, tmp_path, api_client=ApiClient(configuration))
    task = assignment()
    rank0, *workers = gang.gang_pod_manifests(pods.pod_manifest(task, settings), 3)
    name, namespace = rank0["metadata"]["name"], rank0["metadata"]["namespace"]
    executor._attempts[task.attempt_id] = _PodAttempt(task, namespace, name)
    for worker in workers:
        executor._on_pod("ADDED", observed(worker, "Running"))
    executor._on_pod("ADDED", observed(rank0, "Running"))
    combined = "rank 0 says hi\n[rank 1] one\n[rank 1] two\n[rank 2] three\n"
    assert await executor.read_log(task.attempt_id) == combined

    # Rank 0 ends: the attempt with it; its workers' pods go (their logs read first).
    ended = observed(rank0, "Succeeded")
    ended["status"]["containerStatuses"] = [
        {"name": pods.CONTAINER, "state": {"terminated": {"exitCode": 0}}}
    ]
    executor._on_pod("MODIFIED", ended)
    assert executor.running() == []
    await asyncio.gather(*list(executor._background), return_exceptions=True)
    assert log_server.deleted == [
        ("pods", f"{name}-w1"),
        ("pods", f"{name}-w2"),
        ("services", name),
    ]
    for worker in workers:
        executor._on_pod("DELETED", observed(worker, "Running"))
    assert await executor.read_log(task.attempt_id) == combined  # from what was kept
    executor._on_pod("DELETED", ended)  # rank 0's pod goes: nothing is kept of the gang
    assert await executor.read_log(task.attempt_id) is None
    assert not executor._gang_logs
