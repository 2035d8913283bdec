"""The console's pages for what is shared between tenants and what admins manage: the waiting
work of a tenant (and why it waits), GPU use per type against the quota, the audit log, every
cluster with the tenants granted it, and agent token rotation. The audit log, grants and
rotation call the admin API's own functions and need what it needs (`platform:read`, rotation
`platform:write`); anyone else gets 403, as from `GET /api/v1/admin/audit`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from html import escape
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response
from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from control_plane.api.auth import AuthorizerDep, Caller
from control_plane.api.console.pages import (
    WEB,
    Viewer,
    _csrf_input,
    error_page,
    finish,
    page,
    reason_kind,
    viewer_of,
    when,
)
from control_plane.api.deps import SessionDep, SettingsDep
from control_plane.api.errors import ApiError
from control_plane.api.routes import admin as admin_routes
from control_plane.api.routes import clusters as clusters_routes
from control_plane.api.web_session import CSRF_FIELD
from control_plane.auth.rbac import EVERY_TENANT, Act, Obj
from control_plane.db.models import Execution, TaskAttempt, Tenant
from control_plane.db.repositories import clusters as clusters_repo
from control_plane.quota.loads import current_load
from fleetflow.states import AttemptState

router = APIRouter(include_in_schema=False)
AUDIT_SHOWN = 200
WAITING_SHOWN = 50


def platform_may(session: Session, caller: Caller, act: Act) -> bool:
    return caller.authorizer.allowed(session, caller.principal_id, EVERY_TENANT, Obj.PLATFORM, act)


def waiting_section(session: Session, tenant: Tenant) -> str:
    """A tenant's GPUs in use per type (against its quota per type) and its attempts that wait
    to start, grouped by why (the pending reason the API gives each attempt)."""
    load = current_load(session, tenant.id)
    quota = admin_routes.quota_public(session, tenant)
    per_type = quota.gpu_per_type if quota else {}
    types = sorted(set(load.gpu_per_type) | set(per_type))
    gpu_rows = "".join(
        f"<tr data-gpu-type={escape(t)}><th>{escape(t)}</th><td>{load.gpu_per_type.get(t, 0)}"
        f" / {per_type[t] if t in per_type else '∞'}</td></tr>"
        for t in types
    )
    now = datetime.now(UTC)
    rows = session.execute(
        select(
            TaskAttempt.node_id, TaskAttempt.pending_reason, TaskAttempt.created_at, Execution.id
        )
        .join(Execution, Execution.id == TaskAttempt.execution_id)
        .where(
            and_(
                Execution.tenant_id == tenant.id,
                TaskAttempt.status == AttemptState.PENDING.value,
            )
        )
        .order_by(TaskAttempt.created_at)
        .limit(WAITING_SHOWN)
    ).all()
    waiting = "".join(
        f"<tr data-waiting={escape(execution_id)}><td><a href='/ui/executions/"
        f"{quote(execution_id)}?tenant={quote(tenant.name)}'>{escape(execution_id)}</a></td>"
        f"<td>{escape(node)}</td><td><b>{reason_kind(reason) if reason else 'not placed yet'}"
        f"</b> {escape(reason or '')}</td><td>{_age(now, created)}</td></tr>"
        for node, reason, created, execution_id in rows
    )
    return (
        f"<section data-tenant-waiting={escape(tenant.name)}><h2>{escape(tenant.name)}: GPUs "
        "per type and waiting work</h2>"
        + (
            f"<table><tr><th>GPU type</th><th>in use / quota</th></tr>{gpu_rows}</table>"
            if gpu_rows
            else "<p class=muted>No GPU in use, no quota per GPU type.</p>"
        )
        + (
            "<table class=list><thead><tr><th>Execution</th><th>Node</th><th>Waits for</th>"
            f"<th>Waiting</th></tr></thead><tbody>{waiting}</tbody></table>"
            if waiting
            else "<p class=muted>Nothing waits to start.</p>"
        )
        + "</section>"
    )


def _age(now: datetime, created: datetime) -> str:
    created = created if created.tzinfo else created.replace(tzinfo=UTC)
    seconds = max((now - created).total_seconds(), 0.0)
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f} min"


@router.get("/ui/audit")
def audit_page(
    request: Request,
    session: SessionDep,
    authorizer: AuthorizerDep,
    tenant: str | None = None,
    action: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    """`GET /api/v1/admin/audit`, newest first, for platform admins (403 for anyone else)."""
    viewer = viewer_of(request, session, authorizer, tenant)
    if not isinstance(viewer, Viewer):
        return viewer
    if not platform_may(session, viewer.caller, Act.READ):
        message = f"{viewer.who.principal.name} may not read the audit log"
        return finish(error_page("Refused", message, 403, viewer), request, viewer)
    log = admin_routes.audit_log(session, viewer.caller, limit=1000)
    entries = [e for e in log.entries if action in e.action][:AUDIT_SHOWN]
    rows = "".join(
        f"<tr data-action={escape(e.action)}><td>{when(e.at)}</td><td>{escape(e.actor)}</td>"
        f"<td>{escape(e.action)}</td><td>{escape(e.target)}</td>"
        f"<td><code>{escape(json.dumps(e.details) if e.details else '')}</code></td></tr>"
        for e in entries
    )
    body = (
        "<form class=filters method=get action=/ui/audit>"
        f'<input type=hidden name=tenant value="{escape(viewer.tenant)}">'
        f'<label>Action contains <input name=action value="{escape(action)}"></label>'
        "<button type=submit>Filter</button></form>"
    ) + (
        "<table class=list><thead><tr><th>When</th><th>Who</th><th>Action</th><th>Target</th>"
        f"<th>Details</th></tr></thead><tbody>{rows}</tbody></table>"
        if rows
        else "<p class=muted>No audit entries match.</p>"
    )
    return finish(page("Audit log", body, viewer=viewer), request, viewer)


def clusters_admin_section(session: Session, viewer: Viewer) -> str:
    """For platform admins: every cluster, the tenants granted it, and a button to rotate its
    agent token (platform writers only)."""
    if not platform_may(session, viewer.caller, Act.READ):
        return ""
    may_rotate = platform_may(session, viewer.caller, Act.WRITE)
    tenants = admin_routes.list_tenants(session, viewer.caller).tenants
    grants: dict[str, list[str]] = {}
    for listed in tenants:
        detail = admin_routes.get_tenant(listed.name, session, viewer.caller)
        for granted_name in detail.clusters:
            grants.setdefault(granted_name, []).append(listed.name)
    every = grants.get("*", [])
    rows = []
    for cluster in clusters_repo.list_clusters(session):
        granted = sorted(set(grants.get(cluster.name, [])) | set(every))
        rotate = (
            f"<form class=inline method=post action=/ui/clusters/{quote(cluster.name)}/"
            f"rotate-token>{_csrf_input(viewer.csrf)}"
            f'<input type=hidden name=tenant value="{escape(viewer.tenant)}">'
            "<button type=submit>Rotate agent token</button></form>"
            if may_rotate
            else "<span class=muted>platform admins rotate it</span>"
        )
        rows.append(
            f"<tr data-grants={escape(cluster.name)}><td>{escape(cluster.name)}</td>"
            f"<td>{escape(', '.join(granted) or 'no tenant')}</td><td>{rotate}</td></tr>"
        )
    return (
        "<h2>Administration: grants and agent tokens</h2>"
        "<table class=list><thead><tr><th>Cluster</th><th>Granted to</th><th>Agent token</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        "<p class=muted>Grants change with <code>fleetflow admin clusters grant</code>; every "
        "change is in the audit log.</p>"
    )


@router.post("/ui/clusters/{name}/rotate-token")
def rotate_token(
    name: str,
    request: Request,
    session: SessionDep,
    authorizer: AuthorizerDep,
    settings: SettingsDep,
    csrf: Annotated[str, Form(alias=CSRF_FIELD)] = "",
    tenant: Annotated[str | None, Form()] = None,
) -> Response:
    """`POST /api/v1/admin/clusters/{name}/rotate-token` for a platform admin: the new token
    is shown once, on this page, never stored by the console."""
    refusal = WEB.refusal(request, csrf)
    if refusal is not None:
        return error_page("Request refused", refusal, 403)
    viewer = viewer_of(request, session, authorizer, tenant, Obj.CLUSTERS)
    if not isinstance(viewer, Viewer):
        return viewer
    if not platform_may(session, viewer.caller, Act.WRITE):
        message = f"{viewer.who.principal.name} may not rotate agent tokens"
        return finish(error_page("Refused", message, 403, viewer), request, viewer)
    try:
        rotated = clusters_routes.rotate_cluster_token(
            name, session, settings, Response(), viewer.caller
        )
    except ApiError as exc:
        return finish(error_page("Not found", exc.detail, exc.status_code, viewer), request, viewer)
    body = (
        f"<p>The agent token of cluster <b>{escape(name)}</b> was replaced; the old one is "
        "refused from the agent's next call. Copy the new one now, it is not shown again:</p>"
        f"<pre id=agent-token>{escape(rotated.agent_token)}</pre>"
        "<p><a href=/ui/clusters>Back to the clusters</a></p>"
    )
    return finish(page(f"Cluster {name}", body, viewer=viewer), request, viewer)
