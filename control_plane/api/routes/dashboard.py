"""`/dashboard`: each tenant's quota utilisation and recent usage as a server-rendered page.

No JavaScript and no CDN: bars and charts are inline SVG, so the page works on an air-gapped
cluster. A browser cannot send a bearer header by itself, so the page also accepts the API
token from an HttpOnly, SameSite=Strict cookie that `POST /dashboard/login` sets from a form.
A principal sees the tenants where it may read usage (every tenant for platform admins);
without a valid token the page shows only the login form.

Signing in and out are the page's only state changes, and both are POSTs that another site
cannot forge (cross-site request forgery): each must come from the dashboard's own origin
(`Origin`, else `Referer`) and carry the anti-forgery token of its form, a random value that
the page also keeps in a `fleetflow_csrf` cookie (double submit). `GET /dashboard/logout`
signs nobody out: it answers 405 with the sign-out button.
"""

from __future__ import annotations

from datetime import timedelta
from html import escape
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from control_plane.api.auth import AuthorizerDep
from control_plane.api.deps import SessionDep
from control_plane.api.routes.admin import quota_public
from control_plane.api.routes.cohorts import cohort_line, cohort_usage_of
from control_plane.api.web_session import COOKIE, CSRF_COOKIE, CSRF_FIELD, WebSession, origin_of
from control_plane.auth.rbac import EVERY_TENANT, Act, Authorizer, Obj
from control_plane.db.models import Tenant, utcnow
from control_plane.db.repositories import tenancy
from control_plane.db.repositories import usage as usage_repo
from control_plane.placement import format_bytes
from control_plane.quota import current_load

router = APIRouter(include_in_schema=False)
WEB = WebSession(path="/dashboard", home="/dashboard", name="dashboard")
__all__ = ["COOKIE", "CSRF_COOKIE", "WEB", "origin_of", "router"]
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
form.inline{display:inline;background:none;border:0;padding:0}
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


def _csrf_input(csrf: str) -> str:
    return f'<input type=hidden name={CSRF_FIELD} value="{escape(csrf)}">'


def _login_form(csrf: str, message: str = "") -> str:
    note = f"<p class=muted>{escape(message)}</p>" if message else ""
    return (
        f"{note}<form method=post action=/dashboard/login>{_csrf_input(csrf)}"
        "<label>API token<input type=password name=token autocomplete=off required></label>"
        "<button type=submit>Show dashboard</button></form>"
    )


def _logout_form(csrf: str) -> str:
    return (
        f"<form class=inline method=post action=/dashboard/logout>{_csrf_input(csrf)}"
        "<button type=submit>Sign out</button></form>"
    )


def _refused(reason: str) -> HTMLResponse:
    return _page(
        "Request refused",
        f"<p>{escape(reason)}</p><p><a href=/dashboard>Back to the dashboard</a></p>",
        status=403,
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


def tenant_section(session: Session, tenant: Tenant) -> str:
    """One tenant's quota bars, usage chart and top workflows (also the console's `/ui/usage`)."""
    load = current_load(session, tenant.id)
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
        f"<p class=cohort>{escape(cohort_line(cohort_usage_of(session, tenant)))}</p>"
        f"<h2>GPU-seconds per hour, last {_HOURS} hours</h2>"
        f"{_chart([b.total.gpu_seconds for b in history])}"
        "<h2>Top workflows, last 7 days</h2><table><tr><th>workflow</th><th>GPU-hours</th>"
        f"<th>CPU-hours</th><th>executions</th></tr>{top_rows}</table></section>"
    )


def usage_tenants(session: Session, authorizer: Authorizer, principal_id: str) -> list[Tenant]:
    """The tenants whose usage the principal may read (platform admins: every tenant)."""
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
) -> HTMLResponse:
    who, token = WEB.principal(request, session)
    csrf = WEB.csrf_token(request)
    if who is None:
        message = "The token is invalid, expired or revoked." if token else ""
        page = _page("Fleetflow usage", _login_form(csrf, message), status=401)
    else:
        tenants = usage_tenants(session, authorizer, who.principal.id)
        sections = "".join(tenant_section(session, t) for t in tenants) or (
            "<p>You may not read the usage of any tenant.</p>"
        )
        signed_in = escape(who.principal.name)  # a <div>: a form may not sit in a <p>
        header_line = f"<div class=muted>Signed in as {signed_in} · {_logout_form(csrf)}</div>"
        page = _page("Fleetflow usage", header_line + sections)
    WEB.keep_csrf(page, request, csrf)
    return page


@router.post("/dashboard/login")
def login(
    request: Request,
    token: Annotated[str, Form()],
    csrf: Annotated[str, Form(alias=CSRF_FIELD)] = "",
) -> Response:
    """Keep `token` in the session cookie, if the form came from this site (see
    `WebSession.cross_site_refusal` for requests without `Origin`/`Referer`) with its anti-forgery
    token; otherwise 403 and no cookie. The token is checked when the dashboard is shown."""
    refusal = WEB.refusal(request, csrf)
    if refusal is not None:
        return _refused(refusal)
    response = RedirectResponse("/dashboard", status_code=303)
    WEB.sign_in(response, request, token)
    return response


@router.get("/dashboard/logout")
def logout_page(request: Request) -> HTMLResponse:
    """405: a link must not sign anyone out (another site could embed it); the page offers
    the sign-out button instead."""
    csrf = WEB.csrf_token(request)
    page = _page(
        "Sign out",
        "<p>Signing out takes the button below; a link cannot sign you out, so that another "
        f"site cannot do it in your name.</p>{_logout_form(csrf)}",
        status=405,
    )
    page.headers["Allow"] = "POST"
    WEB.keep_csrf(page, request, csrf)
    return page


@router.post("/dashboard/logout")
def logout(request: Request, csrf: Annotated[str, Form(alias=CSRF_FIELD)] = "") -> Response:
    """Forget the session cookie, under the same checks as `login`."""
    refusal = WEB.refusal(request, csrf)
    if refusal is not None:
        return _refused(refusal)
    response = RedirectResponse("/dashboard", status_code=303)
    WEB.sign_out(response, request)
    return response
