"""The Kubernetes executor: each attempt is one pod in its tenant's namespace.

Level-triggered, after the habits of Kubernetes controllers:

- **Deterministic names.** An attempt's pod is `ff-<attempt id>-<fencing token>`; creating it
  again answers `AlreadyExists`, which is success. A restarted agent therefore never makes a
  second pod for an attempt.
- **Watch, relist on 410.** One watch per namespace (a label selector on this agent's pods,
  resuming from the last resourceVersion; a relist when the server answers 410 Gone). Every
  observed pod is interpreted afresh (`kubernetes_pods.interpret_pod`), not from remembered
  events; a periodic resync re-judges the timers (image pulls) and cleans up finished pods.
- **Adopt on restart.** `start` lists this agent's pods in the namespaces it knows and adopts
  those whose outcome it has not handed to the agent yet (the assignment is an annotation of
  the pod). Namespaces used are remembered in `<work_dir>/k8s-namespaces.json`.
- **Pods outlive the agent.** Shutting the agent down leaves pods running; the next agent
  adopts them. Only the control plane's stop (cancel, superseded) deletes a running pod.

The Kubernetes client is synchronous; its calls (`kubernetes_api`: plain JSON through the
official client's `ApiClient`) run in threads (the watches in daemon threads of their own) and
their results come back to the event loop, which alone changes the executor's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from data_plane_agent.attempts import AttemptEvent, TaskAssignment
from data_plane_agent.executors import kubernetes_gang as gang
from data_plane_agent.executors import kubernetes_pods as pods
from data_plane_agent.executors.base import (
    MAX_LOG_BYTES,
    Capacity,
    ExecutorStartError,
    GpuCapacity,
    machine_capacity,
)
from data_plane_agent.executors.gang import combined_log
from data_plane_agent.executors.kubernetes_api import KubernetesApi
from data_plane_agent.presign import PresignError, expiry_for, presignable, presigned_manifest
from data_plane_agent.settings import KubernetesSettings
from fleetflow.states import AttemptState

logger = logging.getLogger(__name__)

PRESIGNED_WAIT = dt.timedelta(hours=24)
"""How long a pod's presigned URLs outlive its timeout: time to be scheduled and started."""

WATCH_TIMEOUT_SECONDS = 60
"""A watch request ends after this long and is resumed from its resourceVersion."""
NAMESPACES_FILE = "k8s-namespaces.json"
REPORTED_ANNOTATION = "fleetflow.dev/outcome-reported-at"
"""On a finished pod: when its outcome went to the agent (the pod is then not adopted again,
and cleanup counts its delay from then)."""
_LOG_TAIL_LINES = 10_000  # and at most MAX_LOG_BYTES
_REQUEST_TIMEOUT = 30.0  # seconds, of every request but a watch
_KEPT_GANG_LOGS = 16
"""Gangs whose pods' logs are kept after the pods were deleted (for the final log)."""


class KubernetesExecutorError(ExecutorStartError):
    """The executor could not talk to the Kubernetes API at start."""


def make_api_client(settings: KubernetesSettings) -> k8s_client.ApiClient:
    """An API client from the kubeconfig setting, else in-cluster, else the default kubeconfig."""
    configuration = k8s_client.Configuration()
    if settings.kubeconfig is not None:
        k8s_config.load_kube_config(
            config_file=str(settings.kubeconfig),
            context=settings.context,
            client_configuration=configuration,
        )
    else:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(
                context=settings.context, client_configuration=configuration
            )
    configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize, 32)
    return k8s_client.ApiClient(configuration)


@dataclass(slots=True)
class _PodAttempt:
    """An attempt this executor runs (or adopted), and what it has told the agent of it.

    Not the observed pod itself: a pod as the API server returns it weighs tens of kilobytes
    once parsed, and an agent tracks a thousand of them. Only while a waiting problem is timed
    does the attempt keep its pod, for the resync to judge it again.
    """

    assignment: TaskAssignment
    namespace: str
    name: str
    seen: bool = False  # its pod was observed at least once
    started: bool = False  # its pod's last observation had a start time
    reported_running: bool = False
    ended: bool = False
    stop_reason: str | None = None
    stop_grace: float | None = None  # its pods' termination grace when stopped (None: default)
    pending_reason: str = ""
    problem: str = ""  # a waiting reason that fails the attempt once it lasts the grace
    problem_since: float = 0.0
    problem_pod: dict[str, Any] | None = None  # the observation that showed `problem`
    # A gang's rank 0 running while a worker is not yet: its observation, judged again as the
    # workers start (the attempt runs once every pod of it runs).
    gang_pod: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class _PodSummary:
    """What the executor keeps of every pod it watches (its own attempts' or not)."""

    attempt_id: str
    token: str
    phase: str
    cpu: float
    memory_bytes: int
    gpus: int
    node: str
    gpu_type: str
    reported_at: str
    deleting: bool
    replicas: int = 1  # of the attempt, on a gang's rank 0 pod

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


def _summarise(pod: Mapping[str, Any], settings: KubernetesSettings) -> _PodSummary:
    metadata = pod.get("metadata", {})
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    cpu, memory, gpus = pods.pod_requests(pod, settings)
    assignment_text = annotations.get(pods.ASSIGNMENT_ANNOTATION, "")
    attempt_id = labels.get(pods.ATTEMPT_LABEL, "")
    replicas = 1
    if assignment_text:
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            assignment = json.loads(assignment_text)
            attempt_id = assignment.get("attempt_id", attempt_id)
            replicas = max(int(assignment.get("replicas") or 1), 1)
    return _PodSummary(
        attempt_id=attempt_id,
        token=labels.get(pods.TOKEN_LABEL, ""),
        phase=(pod.get("status") or {}).get("phase") or "Pending",
        cpu=cpu,
        memory_bytes=memory,
        gpus=gpus,
        node=pod.get("spec", {}).get("nodeName") or "",
        gpu_type=labels.get(pods.GPU_TYPE_LABEL, ""),
        reported_at=annotations.get(REPORTED_ANNOTATION, ""),
        deleting=bool(metadata.get("deletionTimestamp")),
        replicas=replicas,
    )


class KubernetesExecutor:
    """Runs each attempt as a pod (see the module docstring).

    Args:
        settings: Namespaces, image, GPU node selection, cleanup policy, API access.
        work_dir: The agent's work directory (remembers the namespaces used).
        api_client: A ready client (default: from `settings`).
        kill_grace_seconds: Termination grace of pods deleted to stop their attempt.
    """

    name = "kubernetes"
    attempts_survive_agent = True
    """Shutting the agent down leaves the pods running; the next agent adopts them."""

    def __init__(
        self,
        settings: KubernetesSettings,
        work_dir: Path,
        *,
        api_client: k8s_client.ApiClient | None = None,
        kill_grace_seconds: float = 5.0,
    ) -> None:
        self._settings = settings
        self._work_dir = Path(work_dir)
        self._api = KubernetesApi(api_client or make_api_client(settings))
        self._kill_grace_seconds = kill_grace_seconds
        self._selector = pods.selector(settings)
        self._attempts: dict[str, _PodAttempt] = {}
        self._events: asyncio.Queue[AttemptEvent] = asyncio.Queue()
        # Every watched pod of this agent, by (namespace, name).
        self._pods: dict[tuple[str, str], _PodSummary] = {}
        # Why each gang worker pod that has not started waits, by (namespace, name).
        self._worker_waiting: dict[tuple[str, str], str] = {}
        # A gang worker's waiting problem (image pull, container config) being timed, as for
        # rank 0's pod: (problem, since, the observation that showed it), by (namespace, name).
        self._worker_problems: dict[tuple[str, str], tuple[str, float, dict[str, Any]]] = {}
        # The logs of a gang's pods read just before they were deleted, by rank, by (namespace,
        # rank 0's pod): for the attempt's final log, read once its end is out.
        self._gang_logs: OrderedDict[tuple[str, str], dict[int, str]] = OrderedDict()
        self._namespaces: set[str] = set()
        self._watched: set[str] = set()
        self._nodes: list[dict[str, Any]] = []
        self._gpu_products: set[str] = set()
        self._nodes_read = False
        self._closing = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._resync_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------------ protocol

    def running(self) -> list[str]:
        return [a for a, attempt in self._attempts.items() if not attempt.ended]

    async def next_event(self) -> AttemptEvent:
        return await self._events.get()

    def capacity(self, held: Sequence[TaskAssignment]) -> Capacity:
        """Nodes' allocatable resources (as of the last resync) less the requests of this
        agent's pods now; until the nodes were read (or when listing them is forbidden), the
        agent's machine less what the `held` attempts asked for."""
        return self._capacity_now() if self._nodes_read else machine_capacity(held)

    def pending_reasons(self) -> dict[str, str]:
        """Why attempts whose pods have not started yet wait (e.g. unschedulable)."""
        return {
            attempt_id: attempt.pending_reason
            for attempt_id, attempt in self._attempts.items()
            if not attempt.ended and not attempt.reported_running and attempt.pending_reason
        }

    async def start(self) -> list[TaskAssignment]:
        """Read the nodes, adopt this agent's unfinished pods and start watching.

        Returns:
            The assignments of the adopted pods, for the agent to hold and report on.

        Raises:
            KubernetesExecutorError: The API server cannot be reached or refuses the nodes.
        """
        self._loop = asyncio.get_running_loop()
        self._namespaces = await asyncio.to_thread(self._load_namespaces)
        try:
            await self._refresh_capacity()
        except ApiException as exc:
            if exc.status != 403:
                raise KubernetesExecutorError(f"cannot list nodes: {exc.reason}") from exc
            logger.warning("cannot list nodes (forbidden): GPU capacity is not reported")
        except Exception as exc:  # urllib3/OS errors: no API server
            raise KubernetesExecutorError(f"cannot reach the Kubernetes API: {exc}") from exc
        adopted: list[TaskAssignment] = []
        for namespace in sorted(self._namespaces):
            try:
                items = await asyncio.to_thread(self._list_pods, namespace)
            except ApiException as exc:
                logger.warning("cannot list pods in namespace %s: %s", namespace, exc.reason)
                continue
            for pod in items:
                attempt = self._adopt(pod)
                if attempt is not None:
                    adopted.append(attempt.assignment)
        if adopted:
            logger.info(
                "adopted %d pod(s) of a previous agent: %s",
                len(adopted),
                ", ".join(a.attempt_id for a in adopted),
            )
        for namespace in sorted(self._namespaces):
            self._ensure_watch(namespace)
        self._resync_task = asyncio.create_task(self._resync_loop(), name="k8s-resync")
        return adopted

    def _adopt(self, pod: Mapping[str, Any]) -> _PodAttempt | None:
        metadata = pod.get("metadata", {})
        if (metadata.get("annotations") or {}).get(REPORTED_ANNOTATION):
            return None  # its outcome went out already
        assignment = pods.assignment_from_pod(pod)
        if assignment is None or assignment.attempt_id in self._attempts:
            return None
        if metadata.get("name") != pods.pod_name(assignment.attempt_id, assignment.fencing_token):
            return None
        attempt = _PodAttempt(
            assignment=assignment,
            namespace=metadata.get("namespace", ""),
            name=metadata.get("name", ""),
        )
        self._attempts[assignment.attempt_id] = attempt
        return attempt

    async def launch(self, assignment: TaskAssignment) -> None:
        attempt_id = assignment.attempt_id
        existing = self._attempts.get(attempt_id)
        if existing is not None and not existing.ended:
            logger.warning("attempt %s: already running here, not launching it again", attempt_id)
            return
        namespace = pods.namespace_for(assignment.tenant, self._settings)
        signed = None
        if self._settings.blob_access == "presigned" and presignable(assignment):
            try:
                signed = await asyncio.to_thread(
                    presigned_manifest, assignment, expiry_for(assignment, PRESIGNED_WAIT)
                )
            except PresignError as exc:
                self._emit(AttemptEvent(attempt_id, AttemptState.FAILED, str(exc)))
                return
        manifest = pods.pod_manifest(
            assignment,
            self._settings,
            known_products=sorted(self._gpu_products),
            presigned=signed,
        )
        name = manifest["metadata"]["name"]
        attempt = _PodAttempt(assignment=assignment, namespace=namespace, name=name)
        self._attempts[attempt_id] = attempt
        if namespace not in self._namespaces:
            self._namespaces.add(namespace)
            await asyncio.to_thread(self._save_namespaces, set(self._namespaces))
        self._ensure_watch(namespace)
        await self._delete_superseded(assignment, namespace, name)
        if assignment.replicas > 1:  # a gang: its Service and workers first, all or none
            manifest, *workers = gang.gang_pod_manifests(manifest, assignment.replicas)
            if not await self._create_gang(attempt, manifest, workers):
                return
        try:
            created = await asyncio.to_thread(self._create_pod, namespace, manifest)
        except ApiException as exc:
            if exc.status == 409:  # AlreadyExists: an earlier try or agent created it
                logger.info(
                    "attempt %s: pod %s/%s exists, adopting it", attempt_id, namespace, name
                )
                return
            self._end(attempt, AttemptState.FAILED, f"could not create pod: {_api_error(exc)}")
            return
        except Exception as exc:
            logger.exception("attempt %s: could not create its pod", attempt_id)
            self._end(attempt, AttemptState.FAILED, f"could not create pod: {exc}")
            return
        # The values of its secrets, in a Secret the pod owns: the kubelet starts the container
        # once it exists, and the garbage collector deletes it with the pod.
        secret = pods.attempt_secret_manifest(assignment, created)
        if secret is not None:
            try:
                await asyncio.to_thread(self._create_secret, namespace, secret)
            except ApiException as exc:
                if exc.status != 409:  # AlreadyExists: the same values, from an earlier try
                    await self._delete_pod(namespace, name, 0)
                    self._end(
                        attempt,
                        AttemptState.FAILED,
                        f"could not create the Secret of its secrets: {_api_error(exc)}",
                    )
                    return
        logger.info(
            "attempt %s: created pod %s/%s for %s.%s",
            attempt_id,
            namespace,
            name,
            assignment.task_module,
            assignment.task_function,
        )

    async def _create_gang(
        self, attempt: _PodAttempt, rank0: dict[str, Any], workers: list[dict[str, Any]]
    ) -> bool:
        """Create a gang's headless Service and its workers' pods (`kubernetes_gang`); when
        one cannot be created, delete what was and fail the attempt. Whether it can go on to
        create rank 0's pod."""
        namespace = attempt.namespace
        what = "its headless Service"
        try:
            with contextlib.suppress(_AlreadyExists):
                await asyncio.to_thread(
                    self._create_or_exists, self._api.create_service, gang.service_manifest(rank0)
                )
            for worker in workers:
                what = f"pod {worker['metadata']['name']}"
                with contextlib.suppress(_AlreadyExists):
                    await asyncio.to_thread(self._create_or_exists, self._api.create_pod, worker)
        except Exception as exc:
            reason = _api_error(exc) if isinstance(exc, ApiException) else str(exc)
            logger.warning("attempt %s: could not create %s: %s", attempt.name, what, reason)
            message = (
                f"could not create {what} of its {len(workers) + 1} workers (none was left "
                f"running): {reason}"
            )
            attempt.stop_reason = message  # the deletions below are ours, not a lost worker
            await self._delete_gang(namespace, attempt.name, len(workers) + 1)
            self._end(attempt, AttemptState.FAILED, message)
            return False
        return True

    def _create_or_exists(self, create: Callable[..., Any], manifest: dict[str, Any]) -> None:
        try:
            create(manifest["metadata"]["namespace"], manifest, timeout=_REQUEST_TIMEOUT)
        except ApiException as exc:
            if exc.status == 409:  # an earlier try created it
                raise _AlreadyExists from None
            raise

    async def _delete_gang(
        self, namespace: str, rank0: str, replicas: int, grace: float | None = None
    ) -> None:
        """Delete a gang's workers (with `grace`, else the kill grace) and its Service (rank 0's
        pod goes as a single pod's)."""

        def delete_service() -> None:
            try:
                self._api.delete_service(namespace, rank0, timeout=_REQUEST_TIMEOUT)
            except ApiException as exc:
                if exc.status != 404:
                    raise

        await self._keep_gang_logs(namespace, rank0, replicas)
        for name in gang.gang_pod_names(rank0, replicas):
            try:
                await self._delete_pod(
                    namespace, name, self._kill_grace_seconds if grace is None else grace
                )
            except Exception as exc:
                logger.warning("could not delete gang pod %s/%s: %s", namespace, name, exc)
        try:
            await asyncio.to_thread(delete_service)
        except Exception as exc:
            logger.warning("could not delete the Service %s/%s: %s", namespace, rank0, exc)

    async def _keep_gang_logs(
        self, namespace: str, rank0: str, replicas: int, *, first: int = 1
    ) -> None:
        """Read the logs of a gang's pods of ranks `first`.. that ran, before their pods go
        (`read_log`); what was kept of a rank earlier stays unless read anew."""
        share = MAX_LOG_BYTES // replicas
        kept = dict(self._gang_logs.get((namespace, rank0), {}))
        names = [rank0, *gang.gang_pod_names(rank0, replicas)]
        for rank in range(first, replicas):
            summary = self._pods.get((namespace, names[rank]))
            if summary is None or summary.phase == "Pending":
                continue  # never started: no log
            text = await self._read_pod_log(namespace, names[rank], share)
            if text:
                kept[rank] = text
        if not kept:
            return
        self._gang_logs[(namespace, rank0)] = kept
        self._gang_logs.move_to_end((namespace, rank0))
        while len(self._gang_logs) > _KEPT_GANG_LOGS:
            self._gang_logs.popitem(last=False)

    async def _stop_rank0(self, namespace: str, rank0: str, replicas: int) -> None:
        """Delete the pod of a gang's rank 0 (a worker failed), its log kept first."""
        await self._keep_gang_logs(namespace, rank0, replicas, first=0)
        await self._delete_pod(namespace, rank0, self._kill_grace_seconds)

    async def _delete_superseded(
        self, assignment: TaskAssignment, namespace: str, name: str
    ) -> None:
        """Pods of the same attempt under an older lease are not its to run any more."""
        stale = [
            pod_name
            for (pod_namespace, pod_name), summary in self._pods.items()
            if summary.attempt_id == assignment.attempt_id
            and pod_namespace == namespace
            and pod_name != name
            and not summary.deleting
        ]
        for pod_name in stale:
            logger.info("attempt %s: deleting superseded pod %s", assignment.attempt_id, pod_name)
            await self._delete_pod(namespace, pod_name, self._kill_grace_seconds)

    async def kill(
        self, attempt_id: str, reason: str, *, grace_seconds: float | None = None
    ) -> None:
        """Delete the attempt's pod with `grace_seconds` as its termination grace period (the
        kubelet's SIGTERM, then SIGKILL after it); None: the executor's kill grace."""
        grace = self._kill_grace_seconds if grace_seconds is None else grace_seconds
        attempt = self._attempts.get(attempt_id)
        if attempt is None or attempt.ended:
            logger.info("attempt %s: not running here, nothing to stop", attempt_id)
            return
        attempt.stop_reason = reason
        attempt.stop_grace = grace
        if attempt.assignment.replicas > 1:  # its log, every rank's, before the pods go
            await self._keep_gang_logs(
                attempt.namespace, attempt.name, attempt.assignment.replicas, first=0
            )
        logger.info(
            "attempt %s: deleting pod %s/%s (%s, grace %gs)",
            attempt_id,
            attempt.namespace,
            attempt.name,
            reason,
            grace,
        )
        try:
            await self._delete_pod(attempt.namespace, attempt.name, grace)
        except Exception as exc:  # the attempt is still stopped as far as the agent goes
            logger.warning("attempt %s: could not delete its pod: %s", attempt_id, exc)
        self._end(attempt, AttemptState.CANCELLED, reason)

    async def shutdown(self, reason: str) -> None:
        """Stop watching; the pods keep running for the next agent to adopt."""
        del reason
        self._closing.set()
        if self._resync_task is not None:
            self._resync_task.cancel()
            await asyncio.gather(self._resync_task, return_exceptions=True)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        running = self.running()
        if running:
            logger.info(
                "leaving %d pod(s) running for the next agent: %s", len(running), ", ".join(running)
            )

    async def read_log(self, attempt_id: str) -> str | None:
        """The end of an attempt's pod log while the pod exists; None when no pod of it is
        known or the API server serves no log (a kwok node, a kubelet that is gone). A gang's
        is rank 0's, then each other rank's with its lines prefixed `[rank k]` (as on the
        local-process executor), each its share of `MAX_LOG_BYTES`; a pod of it deleted as
        the gang stops gives the log read just before."""
        location = self._locate(attempt_id)
        if location is None:
            return None
        namespace, name = location
        replicas = self._replicas(attempt_id, location)
        if replicas <= 1:
            return await self._read_pod_log(namespace, name, MAX_LOG_BYTES)
        share = MAX_LOG_BYTES // replicas
        kept = self._gang_logs.get(location, {})
        texts = []
        for rank, pod in enumerate([name, *gang.gang_pod_names(name, replicas)]):
            text = None
            if rank == 0 or (namespace, pod) in self._pods:
                text = await self._read_pod_log(namespace, pod, share)
            texts.append(text or kept.get(rank))
        rank0, *others = texts
        ranks = [(rank, text) for rank, text in enumerate(others, start=1) if text]
        if rank0 is None and not ranks:
            return None
        return combined_log(rank0 or "", ranks)

    async def _read_pod_log(self, namespace: str, name: str, limit_bytes: int) -> str | None:
        """The end of one pod's log (at most `limit_bytes`); None when it is not served."""

        def read() -> str:
            return self._api.read_pod_log(
                namespace,
                name,
                container=pods.CONTAINER,
                tail_lines=_LOG_TAIL_LINES,
                limit_bytes=limit_bytes,
                timeout=_REQUEST_TIMEOUT,
            )

        try:
            return await asyncio.to_thread(read)
        except ApiException as exc:
            logger.debug("pod %s/%s: no log (%s)", namespace, name, exc.reason)
            return None

    def _replicas(self, attempt_id: str, location: tuple[str, str]) -> int:
        """How many workers the attempt whose rank 0's pod is at `location` has."""
        attempt = self._attempts.get(attempt_id)
        if attempt is not None:
            return attempt.assignment.replicas
        summary = self._pods.get(location)
        if summary is not None:
            return summary.replicas
        return max(self._gang_logs.get(location, {}), default=0) + 1

    def _locate(self, attempt_id: str) -> tuple[str, str] | None:
        attempt = self._attempts.get(attempt_id)
        if attempt is not None:
            return attempt.namespace, attempt.name
        for key, summary in self._pods.items():
            if summary.attempt_id == attempt_id:
                return key
        return None

    # ---------------------------------------------------------------------------- events

    def _emit(self, event: AttemptEvent) -> None:
        self._events.put_nowait(event)

    def _end(self, attempt: _PodAttempt, state: AttemptState, message: str, tb: str = "") -> None:
        if attempt.ended:
            return
        attempt_id = attempt.assignment.attempt_id
        if state in (AttemptState.SUCCEEDED, AttemptState.FAILED) and not attempt.reported_running:
            if attempt.started or state is AttemptState.SUCCEEDED:
                attempt.reported_running = True
                self._emit(AttemptEvent(attempt_id, AttemptState.RUNNING))
        attempt.ended = True
        attempt.pending_reason = ""
        attempt.problem_pod = None
        if attempt.assignment.replicas > 1:  # its workers and Service end with it
            self._spawn(
                self._delete_gang(
                    attempt.namespace,
                    attempt.name,
                    attempt.assignment.replicas,
                    attempt.stop_grace,
                )
            )
        logger.info("attempt %s: %s%s", attempt_id, state.value, f" ({message})" if message else "")
        self._emit(AttemptEvent(attempt_id, state, message, tb))
        if state is not AttemptState.CANCELLED:
            self._spawn(self._mark_reported(attempt))
        # Forget it once its end is out; its pod stays in `_pods` until cleanup deletes it.
        self._attempts.pop(attempt_id, None)

    async def _mark_reported(self, attempt: _PodAttempt) -> None:
        """Annotate the finished pod so that no later agent adopts it again; delete it at once
        when the cleanup policy keeps no such pod and no delay."""
        if self._should_clean(attempt_failed=None, age=None):
            await self._delete_pod(attempt.namespace, attempt.name, 0)
            return
        patch = {"metadata": {"annotations": {REPORTED_ANNOTATION: _utcnow().isoformat()}}}
        try:
            await asyncio.to_thread(self._patch_pod, attempt.namespace, attempt.name, patch)
        except ApiException as exc:
            if exc.status != 404:
                logger.warning(
                    "attempt %s: could not annotate its finished pod: %s",
                    attempt.assignment.attempt_id,
                    _api_error(exc),
                )
        except Exception as exc:
            logger.warning("could not annotate pod %s: %s", attempt.name, exc)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _observe(self, attempt: _PodAttempt, pod: dict[str, Any] | None) -> None:
        """Judge an attempt by the latest observation of its pod (None: the pod is gone)."""
        if attempt.ended:
            return
        if pod is None:
            if attempt.stop_reason is not None:
                self._end(attempt, AttemptState.CANCELLED, attempt.stop_reason)
            else:
                self._end(attempt, AttemptState.FAILED, "the pod was deleted outside Fleetflow")
            return
        attempt.seen = True
        attempt.started = bool((pod.get("status") or {}).get("startTime"))
        if pod.get("metadata", {}).get("deletionTimestamp") and attempt.stop_reason is None:
            if not pods.is_terminal_phase(pod):
                self._end(attempt, AttemptState.FAILED, "the pod was deleted outside Fleetflow")
                return
        verdict = pods.interpret_pod(pod, self._settings)
        if verdict.state is None:
            attempt.pending_reason = verdict.message
            if verdict.waiting_since_problem:
                attempt.problem_pod = pod
                if attempt.problem != verdict.waiting_since_problem:
                    attempt.problem = verdict.waiting_since_problem
                    attempt.problem_since = time.monotonic()
                elif time.monotonic() - attempt.problem_since >= (
                    self._settings.image_pull_grace_seconds
                ):
                    grace = self._settings.image_pull_grace_seconds
                    self._end(attempt, AttemptState.FAILED, f"{verdict.message} (for {grace:g}s)")
                    self._spawn(self._delete_pod(attempt.namespace, attempt.name, 0))
            else:
                attempt.problem = ""
                attempt.problem_pod = None
            return
        attempt.problem = ""
        attempt.problem_pod = None
        if verdict.state is AttemptState.RUNNING:
            waiting = None if attempt.reported_running else self._gang_waiting(attempt)
            attempt.pending_reason = waiting or ""
            attempt.gang_pod = pod if waiting else None
            if waiting is None and not attempt.reported_running:
                attempt.reported_running = True
                logger.info(
                    "attempt %s: pod %s is running", attempt.assignment.attempt_id, attempt.name
                )
                self._emit(AttemptEvent(attempt.assignment.attempt_id, AttemptState.RUNNING))
            return
        self._end(attempt, verdict.state, verdict.message, verdict.traceback)

    def _gang_waiting(self, attempt: _PodAttempt) -> str | None:
        """Why a gang's worker has not started yet (its attempt does not run before every
        pod of it does), or None; None for a single pod."""
        for rank, name in enumerate(
            gang.gang_pod_names(attempt.name, attempt.assignment.replicas), start=1
        ):
            key = (attempt.namespace, name)
            summary = self._pods.get(key)
            if summary is None:
                return f"worker of rank {rank}: not observed yet"
            if summary.phase == "Pending":
                return f"worker of rank {rank}: {self._worker_waiting.get(key) or 'starting'}"
        return None

    def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        """One watch event (on the event loop)."""
        metadata = pod.get("metadata", {})
        key = (metadata.get("namespace", ""), metadata.get("name", ""))
        if kind == "DELETED":
            self._pods.pop(key, None)
            self._worker_waiting.pop(key, None)
            self._worker_problems.pop(key, None)
            self._gang_logs.pop(key, None)  # rank 0's pod: its gang's log is no more
        else:
            self._pods[key] = _summarise(pod, self._settings)
        attempt = self._attempt_of(key)
        if attempt is not None:
            self._observe(attempt, None if kind == "DELETED" else pod)
        worker = gang.rank_of(pod)
        if worker is not None:
            self._observe_worker(key, worker, kind, pod)

    def _observe_worker(
        self, key: tuple[str, str], worker: tuple[str, int], kind: str, pod: dict[str, Any]
    ) -> None:
        """A gang's worker that failed, or vanished before its gang ended, fails the attempt
        (its other pods are then deleted with it, and the group is retried as one), and so
        does one whose waiting problem (an image it cannot pull, a container it cannot create)
        lasts the grace, the rule of rank 0's pod; one that starts may let its attempt run."""
        namespace = key[0]
        rank0, rank = worker
        attempt = next(
            (
                a
                for a in self._attempts.values()
                if (a.namespace, a.name) == (namespace, rank0) and not a.ended
            ),
            None,
        )
        if attempt is None or attempt.stop_reason is not None:
            self._worker_problems.pop(key, None)
            return
        if kind == "DELETED":
            message, traceback = f"worker of rank {rank}: its pod was deleted", ""
        else:
            verdict = pods.interpret_pod(pod, self._settings)
            if verdict.state not in (AttemptState.FAILED, AttemptState.LOST):
                if verdict.state is None:
                    self._worker_waiting[key] = verdict.message
                else:
                    self._worker_waiting.pop(key, None)
                if not self._worker_problem_lasted(key, verdict.waiting_since_problem, pod):
                    if attempt.gang_pod is not None:  # rank 0 runs: judge it again
                        self._observe(attempt, attempt.gang_pod)
                    return
                grace = self._settings.image_pull_grace_seconds
                message = f"worker of rank {rank}: {verdict.message} (for {grace:g}s)"
                traceback = ""
            else:
                message = f"worker of rank {rank} failed: {verdict.message}"
                traceback = verdict.traceback
        self._worker_problems.pop(key, None)
        # Rank 0 cannot go on without it: its pod goes too (the others with the attempt's end).
        attempt.stop_reason = message
        self._spawn(self._stop_rank0(namespace, rank0, attempt.assignment.replicas))
        self._end(attempt, AttemptState.FAILED, message, traceback)

    def _worker_problem_lasted(
        self, key: tuple[str, str], problem: str, pod: dict[str, Any]
    ) -> bool:
        """Time a worker's waiting `problem` ("" when none): whether it has lasted the grace."""
        if not problem:
            self._worker_problems.pop(key, None)
            return False
        known = self._worker_problems.get(key)
        if known is None or known[0] != problem:
            self._worker_problems[key] = (problem, time.monotonic(), pod)
            return False
        self._worker_problems[key] = (problem, known[1], pod)
        return time.monotonic() - known[1] >= self._settings.image_pull_grace_seconds

    def _on_list(self, namespace: str, items: list[dict[str, Any]]) -> None:
        """A full list of a namespace (first watch, or after 410 Gone)."""
        present = set()
        for key in [k for k in self._pods if k[0] == namespace]:
            del self._pods[key]
        for pod in items:
            self._on_pod("ADDED", pod)
            present.add(pod.get("metadata", {}).get("name"))
        for attempt in list(self._attempts.values()):
            if attempt.namespace == namespace and attempt.seen and attempt.name not in present:
                self._observe(attempt, None)

    def _attempt_of(self, key: tuple[str, str]) -> _PodAttempt | None:
        summary = self._pods.get(key)
        attempt_id = summary.attempt_id if summary else None
        if attempt_id is None:
            # A deleted pod: find the attempt by its pod's name.
            for candidate in self._attempts.values():
                if (candidate.namespace, candidate.name) == key:
                    return candidate
            return None
        attempt = self._attempts.get(attempt_id)
        if attempt is None or (attempt.namespace, attempt.name) != key:
            return None
        return attempt

    # ----------------------------------------------------------------------------- resync

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.resync_seconds)  # pacing of a periodic resync
            try:
                await self._resync()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("kubernetes resync failed; trying again later")

    async def _resync(self) -> None:
        self._judge_timers()
        with contextlib.suppress(ApiException):
            await self._refresh_capacity()
        await self._clean_up_finished()

    def _judge_timers(self) -> None:
        """A waiting problem (of rank 0's pod or a gang worker's) that has lasted the grace
        fails its attempt."""
        for attempt in list(self._attempts.values()):
            if attempt.problem and attempt.problem_pod is not None:
                self._observe(attempt, attempt.problem_pod)
        for key, (_, _, pod) in list(self._worker_problems.items()):
            worker = gang.rank_of(pod)
            if worker is not None and key in self._worker_problems:
                self._observe_worker(key, worker, "MODIFIED", pod)

    def _should_clean(self, *, attempt_failed: bool | None, age: float | None) -> bool:
        """Whether a finished pod is deleted now. `attempt_failed` None asks whether the
        policy deletes every finished pod at once (no delay)."""
        policy = self._settings.cleanup
        delay = self._settings.cleanup_delay_seconds
        if attempt_failed is None:
            return policy == "delete" and delay <= 0
        if policy == "keep" or (policy == "keep-failed" and attempt_failed):
            return False
        return age is not None and age >= delay

    async def _clean_up_finished(self) -> None:
        now = _utcnow()
        for (namespace, name), summary in list(self._pods.items()):
            if not summary.terminal or not summary.reported_at or summary.deleting:
                continue
            if summary.attempt_id in self._attempts:
                continue
            try:
                reported = dt.datetime.fromisoformat(summary.reported_at)
            except ValueError:
                continue
            age = (now - reported).total_seconds()
            if self._should_clean(attempt_failed=summary.phase == "Failed", age=age):
                logger.info("cleaning up finished pod %s/%s", namespace, name)
                await self._delete_pod(namespace, name, 0)

    async def _refresh_capacity(self) -> None:
        nodes = await asyncio.to_thread(self._list_nodes)
        self._nodes = nodes
        self._gpu_products = {
            product
            for node in nodes
            if (
                product := (node.get("metadata", {}).get("labels") or {}).get(
                    self._settings.gpu_product_label
                )
            )
        }
        self._nodes_read = True

    def _capacity_now(self) -> Capacity:
        # The summaries stand in for the pods: only what `cluster_capacity` reads of them.
        summaries = [
            {
                "metadata": {"labels": {pods.GPU_TYPE_LABEL: s.gpu_type}},
                "spec": {
                    "nodeName": s.node,
                    "containers": [
                        {
                            "resources": {
                                "requests": {
                                    "cpu": s.cpu,
                                    "memory": s.memory_bytes,
                                    self._settings.gpu_resource: s.gpus,
                                }
                            }
                        }
                    ],
                },
                "status": {"phase": s.phase},
            }
            for s in self._pods.values()
        ]
        totals = pods.cluster_capacity(self._nodes, summaries, self._settings)
        return Capacity(
            cpu_allocatable=totals.cpu_allocatable,
            cpu_in_use=totals.cpu_in_use,
            memory_bytes_allocatable=totals.memory_bytes_allocatable,
            memory_bytes_in_use=totals.memory_bytes_in_use,
            gpus=[
                GpuCapacity(gpu_type=t, allocatable=g.allocatable, in_use=g.in_use)
                for t, g in sorted(totals.gpus.items())
            ],
            counted_attempt_ids=self._counted_attempts(),
        )

    def _counted_attempts(self) -> frozenset[str]:
        """The attempts every pod of which the in-use figures count: a gang whose pods are not
        all observed yet is left out, so placement counts the whole group itself."""
        observed: dict[str, int] = {}
        for summary in self._pods.values():
            if summary.attempt_id and not summary.terminal:
                observed[summary.attempt_id] = observed.get(summary.attempt_id, 0) + 1
        return frozenset(
            attempt_id
            for attempt_id, count in observed.items()
            if attempt_id not in self._attempts
            or count >= self._attempts[attempt_id].assignment.replicas
        )

    # ---------------------------------------------------------------------- API (threads)

    def _list_nodes(self) -> list[dict[str, Any]]:
        items = self._api.list_nodes(timeout=_REQUEST_TIMEOUT)["items"]
        return [pods.node_essentials(node, self._settings) for node in items]

    def _list_pods(self, namespace: str) -> list[dict[str, Any]]:
        listed = self._api.list_pods(namespace, self._selector, timeout=_REQUEST_TIMEOUT)
        items: list[dict[str, Any]] = listed["items"]
        return items

    def _create_pod(self, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
        return self._api.create_pod(namespace, manifest, timeout=_REQUEST_TIMEOUT)

    def _create_secret(self, namespace: str, manifest: dict[str, Any]) -> None:
        self._api.create_secret(namespace, manifest, timeout=_REQUEST_TIMEOUT)

    def _patch_pod(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self._api.patch_pod(namespace, name, patch, timeout=_REQUEST_TIMEOUT)

    async def _delete_pod(self, namespace: str, name: str, grace: float) -> None:
        def delete() -> None:
            try:
                self._api.delete_pod(namespace, name, int(grace), timeout=_REQUEST_TIMEOUT)
            except ApiException as exc:
                if exc.status != 404:  # gone already: what we wanted
                    raise

        await asyncio.to_thread(delete)

    def _load_namespaces(self) -> set[str]:
        namespaces = set(self._settings.namespaces.values())
        path = self._work_dir / NAMESPACES_FILE
        with contextlib.suppress(FileNotFoundError, ValueError, TypeError):
            namespaces.update(str(n) for n in json.loads(path.read_text()))
        return namespaces

    def _save_namespaces(self, namespaces: set[str]) -> None:
        self._work_dir.mkdir(parents=True, exist_ok=True)
        path = self._work_dir / NAMESPACES_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(sorted(namespaces)))
        tmp.replace(path)

    # ----------------------------------------------------------------------------- watches

    def _ensure_watch(self, namespace: str) -> None:
        if namespace in self._watched:
            return
        self._loop = self._loop or asyncio.get_running_loop()
        self._watched.add(namespace)
        thread = threading.Thread(
            target=self._watch_namespace, args=(namespace,), name=f"watch-{namespace}", daemon=True
        )
        thread.start()

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed() or self._closing.is_set():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(callback, *args)

    def _watch_namespace(self, namespace: str) -> None:
        """List, then watch from the list's resourceVersion; relist on 410 Gone."""
        resource_version: str | None = None
        delay = 0.5
        while not self._closing.is_set():
            try:
                if resource_version is None:
                    listed = self._api.list_pods(
                        namespace, self._selector, timeout=_REQUEST_TIMEOUT
                    )
                    resource_version = listed["metadata"]["resourceVersion"]
                    self._post(self._on_list, namespace, listed["items"])
                resource_version = self._watch_once(namespace, resource_version)
                delay = 0.5
            except ApiException as exc:
                if exc.status == 410:
                    resource_version = None
                    continue
                logger.warning("watch of pods in %s failed: %s", namespace, _api_error(exc))
                self._closing.wait(delay)
                delay = min(delay * 2, 10.0)
            except Exception as exc:  # connection errors: retry with backoff
                if self._closing.is_set():
                    return
                logger.warning("watch of pods in %s broke: %s", namespace, exc)
                self._closing.wait(delay)
                delay = min(delay * 2, 10.0)

    def _watch_once(self, namespace: str, resource_version: str) -> str | None:
        """One watch request; returns the resourceVersion to resume from (None: relist)."""
        response = self._api.watch_pods(
            namespace,
            self._selector,
            resource_version,
            timeout_seconds=WATCH_TIMEOUT_SECONDS,
            timeout=WATCH_TIMEOUT_SECONDS + 15,
        )
        try:
            for line in iter_resp_lines(response):
                if self._closing.is_set():
                    return resource_version
                event = json.loads(line)
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        logger.info("watch of pods in %s expired (410 Gone); relisting", namespace)
                        return None
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                resource_version = obj.get("metadata", {}).get("resourceVersion", resource_version)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._post(self._on_pod, kind, obj)
        finally:
            response.release_conn()
        return resource_version


class _AlreadyExists(Exception):
    """A create answered 409: an earlier try made it, which is success."""


def _api_error(exc: ApiException) -> str:
    """The API server's message of a failed call (its Status), else the HTTP reason."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        status = json.loads(exc.body or "")
        if isinstance(status, dict) and status.get("message"):
            return f"{status.get('reason') or exc.reason}: {status['message']}"
    return f"{exc.status} {exc.reason}"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
