"""The Kubernetes API requests of the Kubernetes executor, made through the official client's
`ApiClient` without its generated `CoreV1Api`.

Why not `CoreV1Api`: in the client's pydantic generation (kubernetes 37) loading that one class
adds about 21 MiB to the process (412 validated methods: every core endpoint in three
variants), a fifth of what an agent tracking a thousand pods may hold, and each call validates
arguments the executor hands over as plain JSON anyway (see `kubernetes_pods`). The executor
needs seven requests; each is serialized and sent by `ApiClient` as a generated method would
(`param_serialize`, `call_api`), so the kubeconfig's server, TLS and credentials (refreshed
tokens included), the connection pool and the timeouts are the client's, and an error answer is
the client's `ApiException`, as before.

Answers come back decoded JSON, or, for a watch, as the streaming urllib3 response. An answer
nobody reads is drained, so that its connection goes back to the pool: left unread, the next
request opens a new connection (a TCP connect and a TLS handshake more per call).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

_PODS = "/api/v1/namespaces/{namespace}/pods"
_POD = "/api/v1/namespaces/{namespace}/pods/{name}"
_SECRETS = "/api/v1/namespaces/{namespace}/secrets"
_SERVICES = "/api/v1/namespaces/{namespace}/services"
_SERVICE = "/api/v1/namespaces/{namespace}/services/{name}"
_JSON = "application/json"
# What a generated method sends for a JSON object patch (the client turns its default
# JSON-patch content type into this one for anything but a list of operations).
_STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


class KubernetesApi:
    """Nodes and pods, as plain JSON, through one `ApiClient` (thread-safe, as the client is)."""

    def __init__(self, api_client: ApiClient) -> None:
        self._client = api_client

    def list_nodes(self, *, timeout: float) -> dict[str, Any]:
        """The node list (its `items` and `metadata.resourceVersion`)."""
        return _json(self._request("GET", "/api/v1/nodes", {}, timeout=timeout))

    def list_pods(self, namespace: str, selector: str, *, timeout: float) -> dict[str, Any]:
        """The pods of `namespace` that match the label `selector`."""
        return _json(
            self._request(
                "GET",
                _PODS,
                {"namespace": namespace},
                query=[("labelSelector", selector)],
                timeout=timeout,
            )
        )

    def watch_pods(
        self,
        namespace: str,
        selector: str,
        resource_version: str,
        *,
        timeout_seconds: int,
        timeout: float,
    ) -> Any:
        """A watch from `resource_version` (bookmarks on) that the server ends after
        `timeout_seconds`: the urllib3 response, one JSON event per line; release its
        connection when done."""
        return self._request(
            "GET",
            _PODS,
            {"namespace": namespace},
            query=[
                ("allowWatchBookmarks", True),
                ("labelSelector", selector),
                ("resourceVersion", resource_version),
                ("timeoutSeconds", timeout_seconds),
                ("watch", True),
            ],
            timeout=timeout,
        )

    def create_pod(
        self, namespace: str, manifest: dict[str, Any], *, timeout: float
    ) -> dict[str, Any]:
        """The pod as created (with its uid)."""
        return _json(
            self._request(
                "POST",
                _PODS,
                {"namespace": namespace},
                body=manifest,
                content_type=_JSON,
                timeout=timeout,
            )
        )

    def create_secret(self, namespace: str, manifest: dict[str, Any], *, timeout: float) -> None:
        """Create a Secret. The agent only ever creates them: it never reads one (its Role has
        no `get` on secrets)."""
        _finish(
            self._request(
                "POST",
                _SECRETS,
                {"namespace": namespace},
                body=manifest,
                content_type=_JSON,
                timeout=timeout,
            )
        )

    def create_service(self, namespace: str, manifest: dict[str, Any], *, timeout: float) -> None:
        """Create a Service (a gang's headless one)."""
        _finish(
            self._request(
                "POST",
                _SERVICES,
                {"namespace": namespace},
                body=manifest,
                content_type=_JSON,
                timeout=timeout,
            )
        )

    def delete_service(self, namespace: str, name: str, *, timeout: float) -> None:
        _finish(
            self._request(
                "DELETE",
                _SERVICE,
                {"namespace": namespace, "name": name},
                content_type=_JSON,
                timeout=timeout,
            )
        )

    def patch_pod(
        self, namespace: str, name: str, patch: dict[str, Any], *, timeout: float
    ) -> None:
        """A strategic merge patch of one pod."""
        _finish(
            self._request(
                "PATCH",
                _POD,
                {"namespace": namespace, "name": name},
                body=patch,
                content_type=_STRATEGIC_MERGE_PATCH,
                timeout=timeout,
            )
        )

    def delete_pod(self, namespace: str, name: str, grace_seconds: int, *, timeout: float) -> None:
        _finish(
            self._request(
                "DELETE",
                _POD,
                {"namespace": namespace, "name": name},
                query=[("gracePeriodSeconds", grace_seconds)],
                content_type=_JSON,
                timeout=timeout,
            )
        )

    def read_pod_log(
        self,
        namespace: str,
        name: str,
        *,
        container: str,
        tail_lines: int,
        limit_bytes: int,
        timeout: float,
    ) -> str:
        """The end of a container's log (undecodable bytes replaced)."""
        response = self._request(
            "GET",
            f"{_POD}/log",
            {"namespace": namespace, "name": name},
            query=[
                ("container", container),
                ("limitBytes", limit_bytes),
                ("tailLines", tail_lines),
            ],
            timeout=timeout,
        )
        data: bytes = response.data
        return data.decode("utf-8", errors="replace")

    def _request(
        self,
        method: str,
        path: str,
        path_params: dict[str, str],
        *,
        query: Sequence[tuple[str, Any]] = (),
        body: dict[str, Any] | None = None,
        content_type: str | None = None,
        timeout: float,
    ) -> Any:
        """Send one request; the urllib3 response of a 2xx answer, else `ApiException`."""
        headers = {"Accept": _JSON}
        if content_type is not None:
            headers["Content-Type"] = content_type
        serialized = self._client.param_serialize(
            method=method,
            resource_path=path,
            path_params=path_params,
            query_params=list(query),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        answer = self._client.call_api(*serialized, _request_timeout=timeout)
        if not 200 <= answer.status <= 299:
            answer.read()  # the error's body: ApiException keeps it (the server's Status)
            raise ApiException.from_response(http_resp=answer, body=None, data=None)
        return answer.response


def _json(response: Any) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(response.data)
    return decoded


def _finish(response: Any) -> None:
    """Read the rest of an answer whose body is not wanted, so that its connection goes back
    to the pool."""
    response.drain_conn()
    response.release_conn()
