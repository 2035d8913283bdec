"""A small synchronous client for the control plane's REST API."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from fleetflow.config import load_cli_config
from fleetflow.errors import FleetflowError
from fleetflow.ir import WorkflowSpec

TERMINAL_EXECUTION_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})


class ApiError(FleetflowError):
    """The control plane refused a request; `detail` is its explanation."""

    def __init__(self, status_code: int, detail: str, errors: list[dict[str, Any]] | None = None):
        self.status_code = status_code
        self.detail = detail
        self.errors = errors or []
        lines = [detail] + [
            f"  {e.get('field', '')}: {e.get('message', '')}".rstrip(": ") for e in self.errors
        ]
        super().__init__("\n".join(line for line in lines if line.strip()))


class ControlPlaneUnreachableError(FleetflowError):
    """No control plane answered at the configured URL."""


class Client:
    """Talks to one control plane. Defaults come from the CLI config file."""

    def __init__(self, api_url: str | None = None, token: str | None = None, timeout: float = 30):
        config = load_cli_config()
        self.api_url = (api_url or config.api_url).rstrip("/")
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
            raise ControlPlaneUnreachableError(
                f"cannot reach the control plane at {self.api_url} ({exc.__class__.__name__}). "
                "Is it running? Start a local one with `fleetflow dev up`."
            ) from None
        if response.status_code >= 400 and not (method == "HEAD" and response.status_code == 404):
            try:
                body = response.json()
                detail = str(body.get("detail") or response.reason_phrase)
                errors = body.get("errors")
            except ValueError:
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
        """Poll until the execution is terminal; `on_change` sees each new snapshot."""
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
                raise TimeoutError(
                    f"execution {execution_id} still {execution['status']} after {timeout}s"
                )
            time.sleep(poll_interval)
