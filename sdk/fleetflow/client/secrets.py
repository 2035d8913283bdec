"""`client.secrets`: the tenant's secrets. Values go in (stored encrypted) and never come
back: listing answers names, kinds and times only."""

from __future__ import annotations

from fleetflow.api_models.secrets import SecretPublic
from fleetflow.client.transport import Transport, path_part

SecretList = list[SecretPublic]


class Secrets:
    """Secrets of the tenant, which its tasks name in `@task(secrets=[...])`."""

    def __init__(self, transport: Transport):
        self._transport = transport

    @staticmethod
    def path(name: str) -> str:
        return f"/api/v1/secrets/{path_part(name)}"

    def create(self, name: str, value: str) -> SecretPublic:
        """Create the secret `name` with `value`, or replace its value. The control plane
        checks it (`SecretCreate`): a refusal is an `ApiError` that never quotes the value."""
        return self._put(name, {"value": value})

    def create_reference(self, name: str, kubernetes_secret: str, key: str) -> SecretPublic:
        """Create (or replace) `name` as a reference to the key `key` of the Kubernetes
        Secret `kubernetes_secret` in the tenant's namespace of the cluster a task runs on: the
        pod reads it, nothing of Fleetflow ever does."""
        return self._put(name, {"kubernetes_secret": kubernetes_secret, "kubernetes_key": key})

    def _put(self, name: str, body: dict[str, str]) -> SecretPublic:
        return self._transport.call("PUT", self.path(name), SecretPublic, json=body)

    def list(self) -> SecretList:
        return self._transport.call("GET", "/api/v1/secrets", SecretList)

    def get(self, name: str) -> SecretPublic:
        return self._transport.call("GET", self.path(name), SecretPublic)

    def delete(self, name: str) -> None:
        self._transport.request("DELETE", self.path(name))

    def rotate(self) -> int:
        """Platform admins: encrypt every stored value again under the first key; how many
        rows moved to it."""
        response = self._transport.request("POST", "/api/v1/admin/secrets/rotate")
        return int(response.json()["rotated"])
