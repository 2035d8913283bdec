"""Tenant secrets: stored encrypted under the primary key (or as a reference to a Kubernetes
Secret), listed without values, decrypted only for the lease of an attempt of their tenant, and
re-encrypted when keys rotate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from control_plane.db.models import Secret, new_id, utcnow
from control_plane.secrets_crypto import SecretBox

VALUE = "value"
KUBERNETES_REF = "kubernetes_ref"


def get_secret(session: Session, tenant_id: str, name: str) -> Secret | None:
    return session.scalar(select(Secret).where(Secret.tenant_id == tenant_id, Secret.name == name))


def list_secrets(session: Session, tenant_id: str) -> list[Secret]:
    return list(
        session.scalars(select(Secret).where(Secret.tenant_id == tenant_id).order_by(Secret.name))
    )


def put_secret(
    session: Session,
    box: SecretBox,
    tenant_id: str,
    name: str,
    *,
    value: str | None = None,
    kubernetes_secret: str | None = None,
    kubernetes_key: str | None = None,
) -> tuple[Secret, bool]:
    """Create the secret `name` of the tenant, or replace it; (the row, whether it is new)."""
    secret = get_secret(session, tenant_id, name)
    created = secret is None
    if secret is None:
        secret = Secret(id=new_id("sc"), tenant_id=tenant_id, name=name, created_at=utcnow())
        session.add(secret)
    if value is not None:
        secret.kind = VALUE
        secret.ciphertext = box.encrypt(value)
        secret.key_id = box.primary_key_id
        secret.kubernetes_secret = secret.kubernetes_key = None
    else:
        secret.kind = KUBERNETES_REF
        secret.ciphertext = secret.key_id = None
        secret.kubernetes_secret = kubernetes_secret
        secret.kubernetes_key = kubernetes_key
    secret.updated_at = utcnow()
    session.flush()
    return secret, created


def delete_secret(session: Session, tenant_id: str, name: str) -> bool:
    """Whether the secret existed (and is now gone)."""
    result = session.execute(
        delete(Secret).where(Secret.tenant_id == tenant_id, Secret.name == name)
    )
    return bool(getattr(result, "rowcount", 0))


def rotate_all(session: Session, box: SecretBox) -> int:
    """Encrypt every stored value again under the primary key; how many rows were not under
    it yet. Afterwards the older keys may be dropped from the settings."""
    rotated = 0
    for secret in session.scalars(select(Secret).where(Secret.kind == VALUE)):
        if secret.key_id == box.primary_key_id or secret.ciphertext is None:
            continue
        secret.ciphertext = box.rotate(secret.ciphertext)
        secret.key_id = box.primary_key_id
        rotated += 1
    session.flush()
    return rotated


@dataclass(frozen=True)
class TaskSecret:
    """One secret of an attempt, as its lease carries it."""

    name: str
    env_var: str
    value: str | None = field(default=None, repr=False)  # for kind "value"
    kubernetes_secret: str = ""  # for kind "kubernetes_ref"
    kubernetes_key: str = ""


class MissingSecretsError(LookupError):
    """A task names secrets its tenant does not have."""


def secrets_for_task(
    session: Session, box: SecretBox, tenant_id: str, names: Sequence[str], env_vars: Sequence[str]
) -> list[TaskSecret]:
    """The secrets `names` of the tenant `tenant_id` (values decrypted), for one attempt.

    Raises:
        MissingSecretsError: some names are not secrets of the tenant; the message lists them.
        SecretDecryptError: a value was encrypted under a key the control plane lacks.
    """
    found = {
        secret.name: secret
        for secret in session.scalars(
            select(Secret).where(Secret.tenant_id == tenant_id, Secret.name.in_(list(names)))
        )
    }
    missing = [name for name in names if name not in found]
    if missing:
        raise MissingSecretsError(
            f"its task needs the secret(s) {', '.join(map(repr, missing))}, which its tenant "
            "does not have (create them with `fleetflow secrets create`)"
        )
    out = []
    for name, variable in zip(names, env_vars, strict=True):
        secret = found[name]
        if secret.kind == VALUE and secret.ciphertext is not None:
            out.append(TaskSecret(name, variable, value=box.decrypt(secret.ciphertext)))
        else:
            out.append(
                TaskSecret(
                    name,
                    variable,
                    kubernetes_secret=secret.kubernetes_secret or "",
                    kubernetes_key=secret.kubernetes_key or "",
                )
            )
    return out
