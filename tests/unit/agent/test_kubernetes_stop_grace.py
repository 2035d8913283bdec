"""A stopped attempt's pods are deleted with the grace its stop order gives (a preemption's,
from its cohort), else with the executor's kill grace (a cancel): the kubelet sends SIGTERM,
then SIGKILL once `gracePeriodSeconds` are over. The Kubernetes API is a recorder here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from kubernetes.client import ApiClient

from data_plane_agent.executors import kubernetes_gang as gang
from data_plane_agent.executors.kubernetes import KubernetesExecutor, _PodAttempt
from data_plane_agent.settings import KubernetesSettings
from fleetflow.states import AttemptState
from tests.polling import wait_until_async
from tests.unit.agent.test_kubernetes_gang import assignment


@pytest.fixture(autouse=True)
def _clean_agent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FLEETFLOW_AGENT_"):
            monkeypatch.delenv(name)


class RecordedDeletions:
    """Stands in for the Kubernetes API of the executor: records what it deletes."""

    def __init__(self) -> None:
        self.pods: list[tuple[str, int]] = []
        self.services: list[str] = []

    def delete_pod(self, namespace: str, name: str, grace_seconds: int, *, timeout: float) -> None:
        self.pods.append((name, grace_seconds))

    def delete_service(self, namespace: str, name: str, *, timeout: float) -> None:
        self.services.append(name)


def executor_with(tmp_path: Path) -> tuple[KubernetesExecutor, RecordedDeletions]:
    executor = KubernetesExecutor(
        KubernetesSettings(default_image="r:1"),
        tmp_path,
        api_client=ApiClient(),
        kill_grace_seconds=5,
    )
    recorder = RecordedDeletions()
    executor._api = recorder  # type: ignore[assignment]
    return executor, recorder


async def test_a_preempted_pod_is_deleted_with_its_grace_a_cancelled_one_with_the_default(
    tmp_path: Path,
) -> None:
    executor, api = executor_with(tmp_path)
    preempted = assignment(attempt_id="at-pre", replicas=1)
    cancelled = assignment(attempt_id="at-cancel", replicas=1)
    for task in (preempted, cancelled):
        executor._attempts[task.attempt_id] = _PodAttempt(task, "vision", f"pod-{task.attempt_id}")

    await executor.kill("at-pre", "stopped by the control plane (preempted)", grace_seconds=45)
    await executor.kill("at-cancel", "stopped by the control plane (cancelled)")
    assert api.pods == [("pod-at-pre", 45), ("pod-at-cancel", 5)]
    ends = [executor._events.get_nowait(), executor._events.get_nowait()]
    assert [(e.attempt_id, e.state) for e in ends] == [
        ("at-pre", AttemptState.CANCELLED),
        ("at-cancel", AttemptState.CANCELLED),
    ]


async def test_every_pod_of_a_preempted_gang_gets_the_grace(tmp_path: Path) -> None:
    executor, api = executor_with(tmp_path)
    task = assignment(attempt_id="at-gang", replicas=3)
    executor._attempts[task.attempt_id] = _PodAttempt(task, "vision", "gang-0")

    await executor.kill("at-gang", "preempted", grace_seconds=120)
    workers = gang.gang_pod_names("gang-0", 3)
    await wait_until_async(
        lambda: len(api.pods) == 1 + len(workers) and api.services,
        timeout=10,
        message="the gang's workers and Service deleted",
    )
    assert sorted(api.pods) == sorted([("gang-0", 120), *((w, 120) for w in workers)])
