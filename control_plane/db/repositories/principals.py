"""Users and service accounts, and their API tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from control_plane.db.models import ApiToken, Principal, Tenant, new_id, utcnow
from control_plane.tokens import hash_token, new_user_token
from fleetflow.timestamps import as_utc

PRINCIPAL_KINDS = ("user", "service")


@dataclass(frozen=True)
class Authenticated:
    """The principal behind a valid token."""

    principal: Principal
    home_tenant: str
    token_id: str


def get_principal(session: Session, name: str) -> Principal | None:
    return session.scalar(select(Principal).where(Principal.name == name))


def create_principal(
    session: Session, name: str, kind: str, tenant: Tenant, *, created_by: str | None
) -> Principal:
    principal = Principal(
        id=new_id("pr"), name=name, kind=kind, tenant_id=tenant.id, created_by=created_by
    )
    session.add(principal)
    session.flush()
    return principal


def issue_token(
    session: Session,
    principal: Principal,
    *,
    expires_in: timedelta | None,
    token: str | None = None,
) -> tuple[ApiToken, str]:
    """A new token for the principal: the row and the token itself (never stored)."""
    token = token or new_user_token()
    row = ApiToken(
        id=new_id("tok"),
        principal_id=principal.id,
        token_hash=hash_token(token),
        created_at=utcnow(),
        expires_at=utcnow() + expires_in if expires_in is not None else None,
    )
    session.add(row)
    session.flush()
    return row, token


def authenticate(
    session: Session, token: str, *, now: datetime | None = None
) -> Authenticated | None:
    """The principal a token belongs to, or None for an unknown, revoked or expired token."""
    now = now or utcnow()
    row = session.execute(
        select(ApiToken, Principal, Tenant.name)
        .join(Principal, Principal.id == ApiToken.principal_id)
        .join(Tenant, Tenant.id == Principal.tenant_id)
        .where(ApiToken.token_hash == hash_token(token))
    ).one_or_none()
    if row is None:
        return None
    api_token, principal, tenant_name = row
    if api_token.revoked_at is not None:
        return None
    if api_token.expires_at is not None and as_utc(api_token.expires_at) <= now:
        return None
    last_used = api_token.last_used_at
    if last_used is None or now - as_utc(last_used) > timedelta(minutes=1):
        api_token.last_used_at = now  # at most once a minute: reads stay reads
    return Authenticated(principal, str(tenant_name), api_token.id)


def tokens_of(session: Session, principal: Principal) -> list[ApiToken]:
    return list(
        session.scalars(
            select(ApiToken)
            .where(ApiToken.principal_id == principal.id)
            .order_by(ApiToken.created_at)
        )
    )


def get_token(session: Session, token_id: str) -> ApiToken | None:
    return session.get(ApiToken, token_id)


def revoke_token(session: Session, token: ApiToken) -> ApiToken:
    """Revoke it (idempotent: a revoked token keeps its first revocation time)."""
    session.execute(
        update(ApiToken)
        .where(ApiToken.id == token.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.refresh(token)
    return token


def principals_of_tenant(session: Session, tenant: Tenant) -> list[Principal]:
    return list(
        session.scalars(
            select(Principal).where(Principal.tenant_id == tenant.id).order_by(Principal.name)
        )
    )


def any_principal(session: Session) -> bool:
    return session.scalar(select(Principal.id).limit(1)) is not None
