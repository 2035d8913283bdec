"""`client.executions`: create, read, wait for and cancel executions; their logs, previews and
outputs."""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fleetflow.api_models.executions import (
    AttemptLog,
    ExecutionInput,
    ExecutionLogs,
    ExecutionOutput,
    ExecutionProgress,
    ExecutionPublic,
    SubDag,
)
from fleetflow.api_models.notifications import NotificationDelivery, NotificationRule, SigningKey
from fleetflow.api_models.previews import ExecutionPreview
from fleetflow.client.errors import (
    ApiError,
    ExecutionNotSucceededError,
    ExecutionTimeoutError,
)
from fleetflow.client.logs import LogLine, follow_logs
from fleetflow.client.outputs import (
    DownloadedInputs,
    DownloadedOutputs,
    download_inputs,
    download_outputs,
)
from fleetflow.client.transport import Transport, path_part
from fleetflow.client.uploads import CHUNK

if TYPE_CHECKING:
    from fleetflow.workflow import WorkflowFunction

ExecutionList = list[ExecutionPublic]
AttemptLogs = list[AttemptLog]
Deliveries = list[NotificationDelivery]
LONG_POLL_SECONDS = 20.0
"""How long one of `wait`'s reads may wait for the execution to end (the server allows 30)."""
_LOGS_PER_REQUEST = 100  # the logs route's limit on attempt ids per request


def _query_time(value: datetime | str) -> str:
    """A query's ISO 8601 time; a naive datetime is taken as UTC."""
    if isinstance(value, str):
        return value
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def _progress_key(execution: ExecutionProgress | ExecutionPublic) -> object:
    """What `wait` compares between polls: the state and the attempts counted by state."""
    if isinstance(execution, ExecutionProgress):
        counts = dict(execution.attempts)
    else:
        counts = Counter(attempt.status for attempt in execution.attempts)
    return execution.status, tuple(sorted(counts.items()))


class Executions:
    """Executions of registered workflows."""

    def __init__(self, transport: Transport):
        self.transport = transport

    @staticmethod
    def path(execution_id: str) -> str:
        return f"/api/v1/executions/{path_part(execution_id)}"

    def create(
        self,
        workflow: str,
        inputs: dict[str, Any],
        version: str | None = None,
        *,
        priority: int = 0,
        idempotency_key: str | None = None,
        notifications: Sequence[NotificationRule] = (),
    ) -> ExecutionPublic:
        """Start an execution of a registered workflow on JSON-literal inputs.

        `priority` (-1000..1000) orders it among its tenant's waiting work: higher first.
        `notifications`: webhooks to call when it reaches a terminal state
        (`fleetflow.api_models.notifications.NotificationRule`).

        With an `idempotency_key` (e.g. a UUID; sent as `Idempotency-Key`) the request is safe
        to repeat: the control plane answers a repeat with the execution the first one created.
        So when the answer is lost (the connection drops), the request is sent again, and
        never starts a second execution.
        """
        body: dict[str, Any] = {"workflow": workflow, "inputs": inputs}
        if version:
            body["version"] = version
        if priority:
            body["priority"] = priority
        if notifications:
            body["notifications"] = [rule.model_dump(mode="json") for rule in notifications]
        path = "/api/v1/executions"
        if idempotency_key is None:
            return self.transport.call("POST", path, ExecutionPublic, json=body)
        return self.transport.call_idempotent(
            "POST", path, ExecutionPublic, idempotency_key, json=body
        )

    def relaunch(
        self, execution_id: str, *, latest: bool = False, idempotency_key: str | None = None
    ) -> ExecutionPublic:
        """Start an execution again as a new one, on the same inputs: of the same version of
        its workflow, or with `latest` of the latest registered one. The new execution's
        `relaunched_from` names the old one. `idempotency_key` as in `create`."""
        body = {"version": "latest" if latest else "same"}
        return self._again(execution_id, "relaunch", idempotency_key, json=body)

    def recover(self, execution_id: str, *, idempotency_key: str | None = None) -> ExecutionPublic:
        """Re-run a FAILED or CANCELLED execution from where it stopped, as a new execution
        of the same version and inputs: the nodes (and map elements) that succeeded in it are
        not run again, their outputs are reused (their attempts show as cache hits). Any
        other execution is refused (`ApiError`, status 409). `idempotency_key` as in
        `create`."""
        return self._again(execution_id, "recover", idempotency_key)

    def _again(
        self, execution_id: str, action: str, idempotency_key: str | None, **kwargs: Any
    ) -> ExecutionPublic:
        path = f"{self.path(execution_id)}/{action}"
        if idempotency_key is None:
            return self.transport.call("POST", path, ExecutionPublic, **kwargs)
        return self.transport.call_idempotent(
            "POST", path, ExecutionPublic, idempotency_key, **kwargs
        )

    def notifications(self, execution_id: str) -> Deliveries:
        """The execution's webhook deliveries: status, attempts, last answer or error (the
        tenant's admins only)."""
        path = f"{self.path(execution_id)}/notifications"
        return self.transport.call("GET", path, Deliveries)

    def signing_key(self, *, rotate: bool = False) -> SigningKey:
        """The tenant's webhook signing key (its admins only); with `rotate`, a new one that
        signs every delivery from now on."""
        if rotate:
            path = "/api/v1/notifications/signing-key/rotate"
            return self.transport.call("POST", path, SigningKey)
        return self.transport.call("GET", "/api/v1/notifications/signing-key", SigningKey)

    def get(self, execution_id: str) -> ExecutionPublic:
        """An execution: status, inputs, outputs (JSON literals) or error, task attempts."""
        return self.transport.call("GET", self.path(execution_id), ExecutionPublic)

    def progress(self, execution_id: str, *, wait_seconds: float = 0) -> ExecutionProgress:
        """The execution's state and how many of its attempts are in each state (no attempt
        itself): cheap to poll, whatever the size of the execution. `wait_seconds` (at most
        30): if it is not final yet, the control plane answers when it is, or after that
        long (a long poll)."""
        path = f"{self.path(execution_id)}/progress"
        if wait_seconds <= 0:
            return self.transport.call("GET", path, ExecutionProgress)
        return self.transport.call(
            "GET",
            path,
            ExecutionProgress,
            params={"wait_seconds": wait_seconds},
            timeout=self.transport.timeout_beyond(wait_seconds),
        )

    def sub_dag(self, execution_id: str, node: str) -> SubDag:
        """The sub-DAG the dynamic node `node` built (`a/b` for a nested one): its nodes and
        their edges. `ApiError` 404: no such node or none built yet; 409: `node` is not
        dynamic."""
        path = f"{self.path(execution_id)}/nodes/{quote(node, safe='/')}/sub-dag"
        return self.transport.call("GET", path, SubDag)

    def list(
        self,
        limit: int = 50,
        status: str | None = None,
        *,
        launched_by: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
    ) -> ExecutionList:
        """Recent executions, newest first.

        Args:
            limit: at most this many (1-200).
            status: only those in this state (`QUEUED`, `RUNNING`, `SUCCEEDED`...).
            launched_by: only those this principal launched (`ExecutionPublic.launched_by`).
            created_after: only those created at or after this time (a datetime, naive
                meaning UTC, or ISO 8601 text).
            created_before: only those created before this time.
        """
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if launched_by is not None:
            params["launched_by"] = launched_by
        if created_after is not None:
            params["created_after"] = _query_time(created_after)
        if created_before is not None:
            params["created_before"] = _query_time(created_before)
        return self.transport.call("GET", "/api/v1/executions", ExecutionList, params=params)

    def cancel(self, execution_id: str) -> ExecutionPublic:
        """Ask the control plane to cancel an execution; its running attempts are stopped.

        Idempotent. Returns the execution as it is right after the request (the cancellation
        itself completes moments later: `wait` sees it CANCELLED).
        """
        return self.transport.call("POST", f"{self.path(execution_id)}/cancel", ExecutionPublic)

    def wait(
        self,
        execution_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 0.5,
        on_change: Callable[[ExecutionPublic], None] | None = None,
    ) -> ExecutionPublic:
        """Poll until the execution is terminal; `on_change` sees each new snapshot.

        It polls the execution's progress (its state and its attempts counted by state), and
        reads the whole execution, attempts included, only when that changed and `on_change`
        wants it, and once at the end: a wait on a map of thousands of elements costs the
        control plane a count per poll, not every attempt. Without `on_change` each poll is
        a long poll (`progress`'s `wait_seconds`): it returns as the execution ends, not up to
        `poll_interval` later; a control plane that answers at once (one from before long
        polls, or this tenant's waits all taken) is read every `poll_interval` instead.

        Raises:
            ExecutionTimeoutError: still not terminal after `timeout` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last_key: object = None
        probe: Callable[[str], ExecutionProgress | ExecutionPublic] = self.progress
        while True:
            left = LONG_POLL_SECONDS if deadline is None else deadline - time.monotonic()
            wait_seconds = min(LONG_POLL_SECONDS, left) if on_change is None else 0.0
            asked_at = time.monotonic()
            try:
                polled = (
                    self.progress(execution_id, wait_seconds=wait_seconds)
                    if probe == self.progress and wait_seconds > 0
                    else probe(execution_id)
                )
            except ApiError as exc:
                if exc.status_code != 404 or probe == self.get:
                    raise
                # A control plane from before `progress`; `get` says 404 itself if it is one.
                probe = self.get
                continue
            key = _progress_key(polled)
            if polled.status.terminal or (on_change is not None and key != last_key):
                execution = (
                    polled if isinstance(polled, ExecutionPublic) else self.get(execution_id)
                )
                key = _progress_key(execution)  # it may have moved on since the probe
                if on_change is not None and key != last_key:
                    on_change(execution)
                if execution.status.terminal:
                    return execution
            last_key = key
            if deadline is not None and time.monotonic() > deadline:
                raise ExecutionTimeoutError(
                    f"execution {execution_id} still {polled.status} after {timeout:g}s"
                )
            # A long poll that came back early, not final, was not one: read at intervals.
            if wait_seconds <= 0 or time.monotonic() - asked_at < wait_seconds:
                time.sleep(poll_interval)

    def preview(
        self, workflow: str, inputs: dict[str, Any], version: str | None = None
    ) -> ExecutionPreview:
        """What `create` would do now, without creating anything: the inputs are validated
        the same way; for each task, the clusters it fits on, the one it would be placed on
        (and GPU type), and why the others are excluded."""
        body: dict[str, Any] = {"workflow": workflow, "inputs": inputs}
        if version:
            body["version"] = version
        path = "/api/v1/executions/preview"
        return self.transport.call("POST", path, ExecutionPreview, json=body)

    def logs(
        self,
        execution_id: str,
        *,
        node: str | None = None,
        attempt: int | None = None,
        attempt_ids: Sequence[str] | None = None,
    ) -> AttemptLogs:
        """What each task attempt printed (its last MiB; `log` None when nothing was stored),
        oldest attempt first. `node`, `attempt` (a number) and `attempt_ids` narrow which
        attempts."""
        params: dict[str, Any] = {}
        if node is not None:
            params["node"] = node
        if attempt is not None:
            params["attempt"] = attempt
        path = f"{self.path(execution_id)}/logs"
        if attempt_ids is None:
            return self.transport.call("GET", path, ExecutionLogs, params=params).attempts
        wanted = list(dict.fromkeys(attempt_ids))
        attempts: AttemptLogs = []
        for start in range(0, len(wanted), _LOGS_PER_REQUEST):
            batch = {**params, "attempt_id": wanted[start : start + _LOGS_PER_REQUEST]}
            attempts += self.transport.call("GET", path, ExecutionLogs, params=batch).attempts
        return attempts

    def follow_logs(
        self,
        execution_id: str,
        *,
        node: str | None = None,
        attempt: int | None = None,
        poll_interval: float = 1.0,
        final_log_grace: float = 3.0,
    ) -> Iterator[LogLine]:
        """Every line the execution's task attempts print, as they print it, across retries
        and map elements, until the execution has ended and each attempt's last output was read.

        This polls: the control plane holds each attempt's output as its agent last copied
        it (every few seconds while it runs, once more when it ends; its last MiB), so every
        `poll_interval` seconds this reads the copies of the attempts that may still add
        output and yields the lines added since the previous read (a `gap` line where output
        was lost between two reads). Lines of different attempts arrive in the order they are
        read, attempt by attempt. The final copy is stored moments after an attempt ends, so an
        attempt seen ending is read again until `final_log_grace` seconds have passed.

        Args:
            execution_id: the execution.
            node: only this node's attempts.
            attempt: only attempts with this number (1: first tries).
            poll_interval: seconds between reads.
            final_log_grace: how long an ended attempt's output is still read.
        """
        return follow_logs(
            self,
            execution_id,
            node=node,
            attempt=attempt,
            poll_interval=poll_interval,
            final_log_grace=final_log_grace,
        )

    def succeeded(self, execution_id: str) -> ExecutionPublic:
        """The execution, which must have succeeded.

        Raises:
            ExecutionNotSucceededError: it failed, was cancelled or is still going.
        """
        execution = self.get(execution_id)
        if execution.status != "SUCCEEDED":
            error = execution.error or {}
            why = f": {error['message']}" if error.get("message") else ""
            yet = "" if execution.status.terminal else " yet"
            raise ExecutionNotSucceededError(
                f"execution {execution_id} is {execution.status}{why}; it has no outputs{yet}"
            )
        return execution

    def outputs(
        self,
        execution_id: str,
        workflow_fn: WorkflowFunction[..., Any],
        *,
        download_to: str | os.PathLike[str] | None = None,
    ) -> Any:
        """The outputs of a succeeded execution as `workflow_fn`'s declared return type.

        Args:
            execution_id: the execution.
            workflow_fn: the workflow it ran, whose return type the outputs take.
            download_to: a local directory to download the `File` and `Directory` values into
                first (as `download_outputs`), so that they are readable on this machine
                whatever the blob store.

        Raises:
            ExecutionNotSucceededError: the execution failed, was cancelled or is still going.
        """
        if download_to is not None:
            downloaded = self.download_outputs(execution_id, download_to)
            return workflow_fn.outputs_to_python(downloaded.outputs)
        return workflow_fn.outputs_to_python(self.succeeded(execution_id).outputs or {})

    def output(self, execution_id: str, name: str) -> ExecutionOutput:
        """One output of a succeeded execution: its type, value (its JSON literal) and
        `blobs`, each `File` or `Directory` in it (with `files`: the paths
        `download_output_file` takes, relative to a directory of the output's own)."""
        path = f"{self.path(execution_id)}/outputs/{path_part(name)}"
        return self.transport.call("GET", path, ExecutionOutput)

    def download_output_file(
        self, execution_id: str, name: str, path: str, dest: str | os.PathLike[str]
    ) -> Path:
        """Stream one file of output `name` (a path `output` lists) to the local `dest`,
        which appears complete or not at all; returns `dest`."""
        url = f"{self.path(execution_id)}/outputs/{path_part(name)}/files/{quote(path)}"
        return self._stream_file(url, dest)

    def _stream_file(self, url: str, dest: str | os.PathLike[str]) -> Path:
        """The bytes at `url` written to `dest`, which appears complete or not at all."""
        target = Path(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
        try:
            with self.transport.stream(url) as response, partial.open("wb") as out:
                for chunk in response.iter_bytes(CHUNK):
                    out.write(chunk)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return target

    def download_outputs(
        self,
        execution_id: str,
        directory: str | os.PathLike[str],
        *,
        names: Iterable[str] | None = None,
    ) -> DownloadedOutputs:
        """Download the `File` and `Directory` values in a succeeded execution's outputs,
        through the control plane (with this client's rights), below `directory/<output>/`.

        Where each lands: a `File` output `model` at `model/<its file name>`, a `Directory`
        output `data` at `data/`, element 2 of a `list[File]` output at `files/2/<name>`,
        field `text` of a dataclass output at `report/text/<name>`.

        Args:
            execution_id: the execution.
            directory: where to write (created if needed); existing files are replaced.
            names: only these outputs; default: all.

        Returns:
            The directory, the files written, and the outputs naming the local copies.

        Raises:
            ExecutionNotSucceededError: the execution has not succeeded.
        """
        return download_outputs(self, execution_id, directory, names)

    def input(self, execution_id: str, name: str) -> ExecutionInput:
        """One input of an execution: its type, value (its JSON literal) and `blobs`, each
        `File` or `Directory` in it (with `files`: the paths `download_input_file` takes,
        relative to a directory of the input's own)."""
        path = f"{self.path(execution_id)}/inputs/{path_part(name)}"
        return self.transport.call("GET", path, ExecutionInput)

    def download_input_file(
        self, execution_id: str, name: str, path: str, dest: str | os.PathLike[str]
    ) -> Path:
        """Stream one file of input `name` (a path `input` lists) to the local `dest`, which
        appears complete or not at all; returns `dest`."""
        return self._stream_file(
            f"{self.path(execution_id)}/inputs/{path_part(name)}/files/{quote(path)}", dest
        )

    def download_inputs(
        self,
        execution_id: str,
        directory: str | os.PathLike[str],
        *,
        names: Iterable[str] | None = None,
    ) -> DownloadedInputs:
        """Download the `File` and `Directory` values in an execution's inputs (whatever its
        status), through the control plane (with this client's rights), below
        `directory/<input>/`, laid out as `download_outputs` lays out outputs.

        Args:
            execution_id: the execution.
            directory: where to write (created if needed); existing files are replaced.
            names: only these inputs; default: all.

        Returns:
            The directory, the files written, and the inputs naming the local copies.
        """
        return download_inputs(self, execution_id, directory, names)
