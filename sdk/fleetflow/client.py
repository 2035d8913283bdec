"""A small synchronous client for the control plane's REST API."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import httpx

from fleetflow.config import config_path, load_cli_config
from fleetflow.errors import FleetflowError
from fleetflow.ir import WorkflowSpec

TERMINAL_EXECUTION_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})


class ApiError(FleetflowError):
    """The control plane refused a request; `detail` is its explanation."""

    def __init__(self, status_code: int, detail: str, errors: list[dict[str, Any]] | None = None):
        self.status_code = status_code
        self.detail = detail
        self.errors = errors or []
        lines = [detail]
        for error in self.errors:
            line = f"{error.get('field', '')}: {error.get('message', '')}".strip(": ")
            if line and line not in detail:  # the API often already says it in `detail`
                lines.append(f"  {line}")
        super().__init__("\n".join(lines))


class ControlPlaneUnreachableError(FleetflowError):
    """No control plane answered at the configured URL."""


class ClientConfigError(FleetflowError, ValueError):
    """The control plane URL or the CLI config file cannot be used."""


class ExecutionTimeoutError(FleetflowError, TimeoutError):
    """`wait_for_execution` gave up; the execution itself goes on."""


def _url_source(api_url: str | None) -> str:
    """Where the URL came from, so an error message says what to change."""
    if api_url:
        return "given by the caller"
    if os.environ.get("FLEETFLOW_API_URL"):
        return "from FLEETFLOW_API_URL"
    path = config_path()
    if path.is_file():
        return f"from {path}"
    return "the default; `fleetflow dev up` writes the CLI config"


def _is_http_url(url: str) -> bool:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.host)


class Client:
    """Talks to one control plane. Defaults come from the CLI config file.

    Raises:
        ClientConfigError: the CLI config file is unreadable, or the URL is not http(s).
    """

    def __init__(self, api_url: str | None = None, token: str | None = None, timeout: float = 30):
        try:
            config = load_cli_config()
        except (OSError, ValueError) as exc:
            reason = " ".join(str(exc).split("\n")[:2])
            raise ClientConfigError(
                f"cannot read the CLI config {config_path()}: {reason}; fix or delete it "
                "(`fleetflow dev up` writes a new one)"
            ) from None
        self.api_url = (api_url or config.api_url).rstrip("/")
        self._url_source = _url_source(api_url)
        if not _is_http_url(self.api_url):
            raise ClientConfigError(
                f"control plane URL {self.api_url!r} ({self._url_source}) is not an "
                "http(s):// URL, e.g. http://127.0.0.1:8080"
            )
        token = token or config.token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.api_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            reason = str(exc) or exc.__class__.__name__
            raise ControlPlaneUnreachableError(
                f"cannot reach the control plane at {self.api_url} ({self._url_source}): "
                f"{reason}. Is it running? Start a local one with `fleetflow dev up`."
            ) from None
        if response.status_code >= 400 and not (method == "HEAD" and response.status_code == 404):
            try:
                body = response.json()
            except ValueError:
                body = None
            if isinstance(body, dict):
                detail = str(body.get("detail") or response.reason_phrase)
                errors = body.get("errors")
            else:
                detail, errors = response.text or response.reason_phrase, None
            raise ApiError(response.status_code, detail, errors)
        return response

    # Code bundles -------------------------------------------------------------------------

    def has_bundle(self, digest: str) -> bool:
        return self._request("HEAD", f"/api/v1/bundles/{digest}").status_code == 200

    def upload_bundle(self, digest: str, data: bytes) -> bool:
        """Upload a bundle unless the control plane has it; True when bytes were sent."""
        if self.has_bundle(digest):
            return False
        self._request(
            "PUT",
            f"/api/v1/bundles/{digest}",
            content=data,
            headers={"Content-Type": "application/gzip"},
        )
        return True

    # Workflows and executions ---------------------------------------------------------------

    def register_workflow(
        self, spec: WorkflowSpec, bundle_digest: str, version: str | None = None
    ) -> dict[str, Any]:
        body = {"spec": spec.model_dump(mode="json"), "bundle_digest": bundle_digest}
        if version:
            body["version"] = version
        return self._request("POST", "/api/v1/workflows", json=body).json()

    def create_execution(
        self, workflow: str, inputs: dict[str, Any], version: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"workflow": workflow, "inputs": inputs}
        if version:
            body["version"] = version
        return self._request("POST", "/api/v1/executions", json=body).json()

    def get_execution(self, execution_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v1/executions/{execution_id}").json()

    def list_executions(self, limit: int = 50, status: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        body = self._request("GET", "/api/v1/executions", params=params).json()
        return body["items"] if isinstance(body, dict) else body

    def wait_for_execution(
        self,
        execution_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 0.5,
        on_change: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the execution is terminal; `on_change` sees each new snapshot.

        Raises:
            ExecutionTimeoutError: still not terminal after `timeout` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last_key: object = None
        while True:
            execution = self.get_execution(execution_id)
            key = (execution["status"], tuple(a["status"] for a in execution.get("attempts", [])))
            if on_change is not None and key != last_key:
                on_change(execution)
            last_key = key
            if execution["status"] in TERMINAL_EXECUTION_STATES:
                return execution
            if deadline is not None and time.monotonic() > deadline:
                raise ExecutionTimeoutError(
                    f"execution {execution_id} still {execution['status']} after {timeout:g}s"
                )
            time.sleep(poll_interval)
