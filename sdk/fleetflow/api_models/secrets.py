"""Tenant secrets as the API takes and answers them: a value (stored encrypted) or a reference
to a Kubernetes Secret; what comes back never holds a value."""

from __future__ import annotations

import re
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from fleetflow.api_models.common import UtcDatetime

SecretKind = Literal["value", "kubernetes_ref"]
MAX_SECRET_BYTES = 256 * 1024
# A Kubernetes Secret's name (a DNS subdomain) and one of its keys.
_K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_K8S_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}")


class SecretCreate(BaseModel):
    """`PUT /secrets/{name}`: exactly one of `value`, or `kubernetes_secret` with
    `kubernetes_key`."""

    model_config = ConfigDict(extra="forbid")

    value: SecretStr | None = Field(default=None, description="the value, stored encrypted")
    kubernetes_secret: str | None = Field(
        default=None,
        description="a Secret in the tenant's namespace of the cluster the task runs on",
    )
    kubernetes_key: str | None = Field(default=None, description="the key in that Secret")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.value is None) == (self.kubernetes_secret is None):
            raise ValueError("give either value, or kubernetes_secret and kubernetes_key")
        if self.value is not None:
            if self.kubernetes_key is not None:
                raise ValueError("kubernetes_key goes with kubernetes_secret, not value")
            size = len(self.value.get_secret_value().encode())
            if size > MAX_SECRET_BYTES:
                raise ValueError(f"value is {size} bytes; at most {MAX_SECRET_BYTES}")
            if "\x00" in self.value.get_secret_value():
                raise ValueError("value must not contain NUL characters")
            return self
        if not _K8S_NAME.fullmatch(self.kubernetes_secret or ""):
            raise ValueError(
                f"kubernetes_secret {self.kubernetes_secret!r} is not a Kubernetes Secret name"
            )
        if self.kubernetes_key is None or not _K8S_KEY.fullmatch(self.kubernetes_key):
            raise ValueError(
                "kubernetes_secret needs kubernetes_key: the key in the Secret (letters, "
                f"digits, '-', '_' and '.'), got {self.kubernetes_key!r}"
            )
        return self


class SecretPublic(BaseModel):
    """A secret as anyone of its tenant may read it: its name and where it comes from, never
    its value."""

    name: str
    kind: SecretKind
    kubernetes_secret: str | None = None
    kubernetes_key: str | None = None
    created_at: UtcDatetime
    updated_at: UtcDatetime
