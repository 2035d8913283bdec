"""`/dashboard`: each tenant's quota utilisation and recent usage as a server-rendered page.

No JavaScript and no CDN: bars and charts are inline SVG, so the page works on an air-gapped
cluster. A browser cannot send a bearer header by itself, so the page also accepts the API
token from an HttpOnly, SameSite=Strict cookie that `POST /dashboard/login` sets from a form.
A principal sees the tenants where it may read usage (every tenant for platform admins);
without a valid token the page shows only the login form.
"""

from __future__ import annotations

from datetime import timedelta
from html import escape
from typing import Annotated

from fastapi import APIRouter, Cookie, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from control_plane.api.auth import (
    AuthorizerDep,
    authenticate_token,
    client_address,
    get_request_guard,
)
from control_plane.api.deps import SessionDep
from control_plane.api.routes.admin import quota_public
from control_plane.auth.rbac import EVERY_TENANT, Act, Authorizer, Obj
from control_plane.db.models import Tenant, utcnow
from control_plane.db.repositories import tenancy
from control_plane.db.repositories import usage as usage_repo
from control_plane.placement import format_bytes

router = APIRouter(include_in_schema=False)
COOKIE = "fleetflow_token"
_HOURS = 24

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#1f2933;background:#f7f9fb}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin:0 0 .6rem}
section{background:#fff;border:1px solid #d9e2ec;border-radius:8px;padding:1rem 1.2rem;
margin:0 0 1.2rem;max-width:60rem}
table{border-collapse:collapse}td,th{padding:.2rem .8rem .2rem 0;text-align:left}
.muted{color:#7b8794}.bar{vertical-align:middle}
form{background:#fff;border:1px solid #d9e2ec;border-radius:8px;padding:1rem;max-width:28rem}
input[type=password]{width:100%;margin:.4rem 0 .8rem;padding:.3rem}
"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    html = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(
        html,
        status_code=status,
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
            "form-action 'self'; frame-ancestors 'none'",
        },
    )


def _login_form(message: str = "") -> str:
    note = f"<p class=muted>{escape(message)}</p>" if message else ""
    return (
        f"{note}<form method=post action=/dashboard/login>"
        "<label>API token<input type=password name=token autocomplete=off required></label>"
        "<button type=submit>Show dashboard</button></form>"
    )


def _bar(used: float, limit: float | None, width: int = 240) -> str:
    """A utilisation bar: filled share of the limit (a grey outline when unlimited)."""
    if limit is None or limit <= 0:
        return (
            f"<svg class=bar width={width} height=12 role=img aria-label=unlimited>"
            f"<rect width={width} height=12 fill=none stroke=#cbd2d9 /></svg>"
        )
    share = min(used / limit, 1.0)
    colour = "#e12d39" if used >= limit else "#3ebd93" if share < 0.8 else "#f0b429"
    return (
        f"<svg class=bar width={width} height=12 role=img "
        f'aria-label="{used:g} of {limit:g}">'
        f"<rect width={width} height=12 fill=#e4e7eb />"
        f"<rect width={share * width:.1f} height=12 fill={colour} /></svg>"
    )


def _chart(values: list[float], width: int = 480, height: int = 80) -> str:
    """GPU-seconds per hour as bars, oldest left."""
    top = max(values) if values and max(values) > 0 else 1.0
    step = width / max(len(values), 1)
    bars = "".join(
        f'<rect x="{i * step:.1f}" y="{height - v / top * height:.1f}" '
        f'width="{max(step - 1, 1):.1f}" height="{v / top * height:.1f}" fill="#2186eb">'
        f"<title>{v:,.0f} GPU-s</title></rect>"
        for i, v in enumerate(values)
    )
    return (
        f"<svg width={width} height={height} role=img aria-label='GPU-seconds per hour'>"
        f"<rect width={width} height={height} fill=#f5f7fa />{bars}</svg>"
    )


def _tenant_section(session: Session, tenant: Tenant) -> str:
    load = usage_repo.current_load(session, tenant.id)
    quota = quota_public(session, tenant)
    rows = [
        ("GPUs", load.gpu, quota.gpu if quota else None, f"{load.gpu}"),
        ("CPU", load.cpu, quota.cpu if quota else None, f"{load.cpu:g}"),
        (
            "Memory",
            load.memory_bytes,
            quota.memory_bytes if quota else None,
            format_bytes(load.memory_bytes),
        ),
        (
            "Running tasks",
            load.running_tasks,
            quota.max_running_tasks if quota else None,
            f"{load.running_tasks}",
        ),
        (
            "Running executions",
            load.running_executions,
            quota.max_running_executions if quota else None,
            f"{load.running_executions}",
        ),
    ]
    if quota:
        for gpu_type, limit in sorted(quota.gpu_per_type.items()):
            used = load.gpu_per_type.get(gpu_type, 0)
            rows.append((f"GPUs {gpu_type}", used, limit, str(used)))
    table = "".join(
        f"<tr><th>{escape(name)}</th><td>{_bar(float(used), limit)}</td>"
        f"<td>{escape(shown)} / {'∞' if limit is None else escape(f'{limit:g}')}</td></tr>"
        for name, used, limit, shown in rows
    )
    now = utcnow()
    history = usage_repo.history(
        session,
        tenant.id,
        since=now - timedelta(hours=_HOURS),
        until=now,
        bucket=usage_repo.Bucket.HOUR,
    )
    top = usage_repo.top_workflows(session, tenant.id, since=now - timedelta(days=7), limit=5)
    top_rows = (
        "".join(
            f"<tr><td>{escape(w.workflow)}</td><td>{w.gpu_seconds / 3600:,.2f}</td>"
            f"<td>{w.cpu_seconds / 3600:,.2f}</td><td>{w.executions}</td></tr>"
            for w in top
        )
        or "<tr><td class=muted colspan=4>no usage in the last 7 days</td></tr>"
    )
    waiting = usage_repo.waiting_for_quota(session, tenant.id)
    return (
        f"<section><h2>{escape(tenant.name)}</h2>"
        f"<table>{table}</table>"
        f"<p class=muted>{waiting} task(s) waiting for quota</p>"
        f"<h2>GPU-seconds per hour, last {_HOURS} hours</h2>"
        f"{_chart([b.total.gpu_seconds for b in history])}"
        "<h2>Top workflows, last 7 days</h2><table><tr><th>workflow</th><th>GPU-hours</th>"
        f"<th>CPU-hours</th><th>executions</th></tr>{top_rows}</table></section>"
    )


def _readable_tenants(session: Session, authorizer: Authorizer, principal_id: str) -> list[Tenant]:
    if authorizer.allowed(session, principal_id, EVERY_TENANT, Obj.PLATFORM, Act.READ):
        return tenancy.list_tenants(session)
    names = {dom for _, dom in authorizer.roles(session, principal_id)}
    return [
        t
        for t in tenancy.list_tenants(session)
        if t.name in names
        and authorizer.allowed(session, principal_id, t.name, Obj.USAGE, Act.READ)
    ]


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard(
    request: Request,
    session: SessionDep,
    authorizer: AuthorizerDep,
    cookie: Annotated[str | None, Cookie(alias=COOKIE)] = None,
) -> HTMLResponse:
    header = request.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else cookie
    who = (
        authenticate_token(session, get_request_guard(request), client_address(request), token)
        if token
        else None
    )
    if who is None:
        message = "The token is invalid, expired or revoked." if token else ""
        return _page("Fleetflow usage", _login_form(message), status=401)
    session.commit()  # last_used_at
    tenants = _readable_tenants(session, authorizer, who.principal.id)
    sections = "".join(_tenant_section(session, t) for t in tenants) or (
        "<p>You may not read the usage of any tenant.</p>"
    )
    header_line = (
        f"<p class=muted>Signed in as {escape(who.principal.name)} · "
        "<a href=/dashboard/logout>sign out</a></p>"
    )
    return _page("Fleetflow usage", header_line + sections)


@router.post("/dashboard/login")
def login(request: Request, token: Annotated[str, Form()]) -> Response:
    response = RedirectResponse("/dashboard", status_code=303)
    response.set_cookie(
        COOKIE,
        token.strip(),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=12 * 3600,
        path="/dashboard",
    )
    return response


@router.get("/dashboard/logout")
def logout() -> Response:
    response = RedirectResponse("/dashboard", status_code=303)
    response.delete_cookie(COOKIE, path="/dashboard")
    return response
