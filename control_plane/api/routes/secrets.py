"""Tenant secrets: create or replace (`PUT`), list and delete; keys rotate through the admin
route. No route ever answers a value: a secret's value goes only into the leases of its
tenant's attempts (control_plane/agent_api/service.py).

Reading names needs `secrets:read` (viewers have it), every change `secrets:write` (developers
and tenant admins). Another tenant's secrets answer as missing.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response

from control_plane.api.auth import PlatformWrite, SecretsRead, SecretsWrite
from control_plane.api.deps import SessionDep
from control_plane.api.errors import ApiError
from control_plane.db.models import Secret
from control_plane.db.repositories import audit
from control_plane.db.repositories import secrets as secrets_repo
from control_plane.schemas.common import ErrorResponse
from control_plane.secrets_crypto import SecretBox, SecretDecryptError, SecretsConfigError
from fleetflow.api_models.secrets import SecretCreate, SecretPublic
from fleetflow.secrets import SECRET_NAME

router = APIRouter(prefix="/secrets", tags=["secrets"])
admin_router = APIRouter(prefix="/admin/secrets", tags=["secrets"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
    503: {"model": ErrorResponse},
}
SecretName = Annotated[
    str,
    Path(
        pattern=f"^{SECRET_NAME.pattern}$",
        max_length=63,
        description="a DNS label: lowercase letters, digits and '-'",
    ),
]


def secret_box(request: Request) -> SecretBox:
    """The app's keys, read from the settings at the first use."""
    box: SecretBox | None = getattr(request.app.state, "secret_box", None)
    if box is None:
        settings = request.app.state.settings
        try:
            box = settings.secrets.box(settings.database.url)
        except SecretsConfigError as exc:
            raise ApiError(503, str(exc)) from None
        request.app.state.secret_box = box
    return box


def secret_public(secret: Secret) -> SecretPublic:
    return SecretPublic(
        name=secret.name,
        kind="value" if secret.kind == secrets_repo.VALUE else "kubernetes_ref",
        kubernetes_secret=secret.kubernetes_secret,
        kubernetes_key=secret.kubernetes_key,
        created_at=secret.created_at,
        updated_at=secret.updated_at,
    )


@router.put(
    "/{name}",
    responses={201: {"model": SecretPublic, "description": "Created"}, **_ERRORS},
)
def put_secret(
    name: SecretName,
    body: SecretCreate,
    request: Request,
    response: Response,
    session: SessionDep,
    caller: SecretsWrite,
) -> SecretPublic:
    """Create the secret `name`, or replace its value or reference (201 when new)."""
    box = secret_box(request)
    secret, created = secrets_repo.put_secret(
        session,
        box,
        caller.tenant.id,
        name,
        value=body.value.get_secret_value() if body.value is not None else None,
        kubernetes_secret=body.kubernetes_secret,
        kubernetes_key=body.kubernetes_key,
    )
    audit.record(
        session,
        caller.principal,
        "secret.create" if created else "secret.replace",
        f"{caller.tenant.name}/{name}",
        {"kind": secret.kind},
    )
    public = secret_public(secret)
    session.commit()
    response.status_code = 201 if created else 200
    return public


@router.get("")
def list_secrets(session: SessionDep, caller: SecretsRead) -> list[SecretPublic]:
    """The tenant's secrets: names, kinds and times, never values."""
    return [secret_public(s) for s in secrets_repo.list_secrets(session, caller.tenant.id)]


@router.get("/{name}", responses=_ERRORS)
def get_secret(name: SecretName, session: SessionDep, caller: SecretsRead) -> SecretPublic:
    secret = secrets_repo.get_secret(session, caller.tenant.id, name)
    if secret is None:
        raise ApiError(404, f"secret {name} not found")
    return secret_public(secret)


@router.delete("/{name}", status_code=204, responses=_ERRORS)
def delete_secret(name: SecretName, session: SessionDep, caller: SecretsWrite) -> None:
    if not secrets_repo.delete_secret(session, caller.tenant.id, name):
        raise ApiError(404, f"secret {name} not found")
    audit.record(session, caller.principal, "secret.delete", f"{caller.tenant.name}/{name}")
    session.commit()


@admin_router.post("/rotate", responses=_ERRORS)
def rotate_secrets(request: Request, session: SessionDep, caller: PlatformWrite) -> dict[str, int]:
    """Encrypt every tenant's stored values again under the first key of
    FLEETFLOW_SECRETS_KEYS; then the older keys may be removed."""
    box = secret_box(request)
    try:
        rotated = secrets_repo.rotate_all(session, box)
    except SecretDecryptError as exc:
        session.rollback()
        raise ApiError(422, f"cannot rotate: {exc}") from None
    audit.record(session, caller.principal, "secrets.rotate", "*", {"rotated": rotated})
    session.commit()
    return {"rotated": rotated}
