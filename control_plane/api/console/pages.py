"""The console's pages under `/ui` (and `/`, which redirects there).

Every page reads what the REST API would answer its principal: the same repository and route
functions, behind the same role checks (`control_plane.api.auth.caller_in`, `Caller.may`), in
the tenant the page names (`?tenant=`, default the principal's home tenant). Another tenant's
execution is "not found" (404) exactly as in the API. Cancel, relaunch and recover are form
POSTs that pass the cross-site and anti-forgery checks of `control_plane.api.web_session` and
are authorised again by the server, whatever buttons the page showed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from html import escape
from importlib.resources import files
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from control_plane.api.auth import (
    AuthorizerDep,
    Caller,
    authenticate_token,
    caller_in,
    client_address,
    get_request_guard,
)
from control_plane.api.console import dag
from control_plane.api.deps import BlobStoreDep, LauncherDep, SessionDep, SettingsDep
from control_plane.api.errors import ApiError
from control_plane.api.routes import executions as executions_routes
from control_plane.api.routes.logs import execution_logs
from control_plane.api.web_session import CSRF_FIELD, WebSession
from control_plane.auth.rbac import EVERY_TENANT, Act, Authorizer, Obj
from control_plane.db.repositories import principals as principals_repo
from control_plane.db.repositories import tenancy
from control_plane.db.repositories.executions import get_execution, list_executions
from fleetflow.api_models.executions import AttemptPublic, ExecutionPublic
from fleetflow.states import AttemptState, ExecutionState

router = APIRouter(include_in_schema=False)
WEB = WebSession(path="/ui", home="/ui", name="console")
PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
SSE_INTERVAL_SECONDS = 1.0
SSE_MAX_SECONDS = 300  # then the browser reconnects, and is authenticated again
_STATIC = {"console.js": "text/javascript", "console.css": "text/css"}
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


# Page frame -----------------------------------------------------------------------------------


class Viewer:
    """The signed-in principal on a page: who, the tenants it may read executions of, the
    acting one, and the anti-forgery token its forms carry."""

    def __init__(self, who: principals_repo.Authenticated, caller: Caller, tenants: list[str]):
        self.who = who
        self.caller = caller
        self.tenants = tenants
        self.csrf = ""

    @property
    def tenant(self) -> str:
        return self.caller.tenant.name


def page(title: str, body: str, *, viewer: Viewer | None = None, status: int = 200) -> HTMLResponse:
    nav = ""
    if viewer is not None:
        tenant = viewer.tenant
        nav = (
            "<nav><a class=brand href=/ui>Fleetflow</a>"
            f'<a href="/ui/executions?{urlencode({"tenant": tenant})}">Executions</a>'
            f'<a href="/ui/workflows?{urlencode({"tenant": tenant})}">Workflows</a>'
            f'<a href="/ui/clusters?{urlencode({"tenant": tenant})}">Clusters</a>'
            f'<a href="/ui/usage?{urlencode({"tenant": tenant})}">Usage</a>'
            "<span class=spacer></span>"
            f"<span class=muted>{escape(viewer.who.principal.name)} · {escape(tenant)}</span>"
            f"<form class=inline method=post action=/ui/signout>{_csrf_input(viewer.csrf)}"
            "<button type=submit>Sign out</button></form></nav>"
        )
    html = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)} · Fleetflow</title>"
        "<link rel=stylesheet href=/ui/static/console.css>"
        "<script src=/ui/static/console.js defer></script></head>"
        f"<body>{nav}<main><h1>{escape(title)}</h1>{body}</main></body></html>"
    )
    return HTMLResponse(html, status_code=status, headers=_HEADERS)


def _csrf_input(csrf: str) -> str:
    return f'<input type=hidden name={CSRF_FIELD} value="{escape(csrf)}">'


def error_page(title: str, message: str, status: int, viewer: Viewer | None = None) -> HTMLResponse:
    back = "<p><a href=/ui/executions>Back to the executions</a></p>"
    return page(title, f"<p class=error>{escape(message)}</p>{back}", viewer=viewer, status=status)


def _signin_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/ui/signin?{urlencode({'next': target})}", status_code=303)


def _safe_next(target: str) -> str:
    """Where to go after signing in: a console page of this site, nothing else."""
    if target.startswith("/ui") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/executions"


def _readable_tenants(session: Session, authorizer: Authorizer, principal_id: str) -> list[str]:
    """The tenants whose executions the principal may read (platform admins: all)."""
    if authorizer.allowed(session, principal_id, EVERY_TENANT, Obj.PLATFORM, Act.READ):
        names = [t.name for t in tenancy.list_tenants(session)]
    else:
        names = sorted({dom for _, dom in authorizer.roles(session, principal_id)} - {EVERY_TENANT})
    return [
        n for n in names if authorizer.allowed(session, principal_id, n, Obj.EXECUTIONS, Act.READ)
    ]


def viewer_of(
    request: Request,
    session: Session,
    authorizer: Authorizer,
    tenant: str | None,
    obj: Obj = Obj.EXECUTIONS,
) -> Viewer | Response:
    """The signed-in principal acting in `tenant` with the right to read `obj` there, or
    the response that refuses: to sign in (303), or 404/403 as the API answers."""
    who, _ = WEB.principal(request, session)
    if who is None:
        return _signin_redirect(request)
    try:
        caller = caller_in(session, who, authorizer, tenant or who.home_tenant)
    except ApiError as exc:
        return error_page(
            "Not found" if exc.status_code == 404 else "Refused", exc.detail, exc.status_code
        )
    if not caller.may(session, obj, Act.READ):
        message = f"{who.principal.name} may not read {obj.value} in {caller.tenant.name!r}"
        return error_page("Refused", message, 403)
    viewer = Viewer(who, caller, _readable_tenants(session, authorizer, who.principal.id))
    viewer.csrf = WEB.csrf_token(request)
    return viewer


def finish(response: Response, request: Request, viewer: Viewer) -> Response:
    WEB.keep_csrf(response, request, viewer.csrf)
    return response


# Sign in and out ------------------------------------------------------------------------------


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/ui", status_code=307)


@router.get("/ui")
def console_home() -> RedirectResponse:
    return RedirectResponse("/ui/executions", status_code=303)


@router.get("/ui/signin")
def signin_page(request: Request, next: str = "/ui/executions", message: str = "") -> Response:
    csrf = WEB.csrf_token(request)
    note = f"<p class=error>{escape(message[:200])}</p>" if message else ""
    body = (
        f"{note}<form class=card method=post action=/ui/signin>{_csrf_input(csrf)}"
        f'<input type=hidden name=next value="{escape(_safe_next(next))}">'
        "<label>API token <input type=password name=token autocomplete=off required "
        "autofocus></label><button type=submit>Sign in</button>"
        "<p class=muted>Your tenant admin creates one (<code>fleetflow admin users create"
        "</code> prints it); <code>fleetflow dev up</code> prints the admin's.</p></form>"
    )
    shown = page("Sign in", body, status=401 if message else 200)
    WEB.keep_csrf(shown, request, csrf)
    return shown


@router.post("/ui/signin")
def signin(
    request: Request,
    session: SessionDep,
    token: Annotated[str, Form()],
    csrf: Annotated[str, Form(alias=CSRF_FIELD)] = "",
    next: Annotated[str, Form()] = "/ui/executions",
) -> Response:
    """Keep a valid `token` in the session cookie (403 for a cross-site form or one without
    its anti-forgery token; the sign-in page again for a token that is not valid)."""
    refusal = WEB.refusal(request, csrf)
    if refusal is not None:
        return error_page("Request refused", refusal, 403)
    found = authenticate_token(
        session, get_request_guard(request), client_address(request), token.strip()
    )
    if found is None:
        query = urlencode(
            {"next": _safe_next(next), "message": "The token is invalid, expired or revoked."}
        )
        return RedirectResponse(f"/ui/signin?{query}", status_code=303)
    session.commit()
    response = RedirectResponse(_safe_next(next), status_code=303)
    WEB.sign_in(response, request, token)
    return response


@router.post("/ui/signout")
def signout(request: Request, csrf: Annotated[str, Form(alias=CSRF_FIELD)] = "") -> Response:
    refusal = WEB.refusal(request, csrf)
    if refusal is not None:
        return error_page("Request refused", refusal, 403)
    response = RedirectResponse("/ui/signin", status_code=303)
    WEB.sign_out(response, request)
    return response


@router.get("/ui/static/{name}")
def static(name: str) -> Response:
    if name not in _STATIC:
        return PlainTextResponse("not found", status_code=404)
    body = files("control_plane.api.console").joinpath("static", name).read_bytes()
    return Response(
        body,
        media_type=_STATIC[name],
        headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
    )


# Executions list -------------------------------------------------------------------------------


def badge(state: str) -> str:
    return f'<span class=badge data-state="{escape(state)}">{escape(state)}</span>'


def when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "—"


def _execution_url(execution_id: str, tenant: str) -> str:
    return f"/ui/executions/{escape(execution_id)}?{urlencode({'tenant': tenant})}"


@router.get("/ui/executions")
def executions_page(
    request: Request,
    session: SessionDep,
    authorizer: AuthorizerDep,
    blob_store: BlobStoreDep,
    tenant: str | None = None,
    status: str = "",
    workflow: str = "",
    q: str = "",
    number: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
    size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = PAGE_SIZE,
    fragment: bool = False,
) -> Response:
    """The acting tenant's executions, newest first, filtered and paged; `fragment=1` answers
    the table alone (what the page's script polls while executions run)."""
    viewer = viewer_of(request, session, authorizer, tenant)
    if not isinstance(viewer, Viewer):
        return viewer
    state = ExecutionState(status) if status in ExecutionState.__members__ else None
    rows = list_executions(
        session,
        viewer.caller.tenant.id,
        limit=size + 1,
        offset=(number - 1) * size,
        status=state,
        workflow=workflow.strip() or None,
        id_contains=q.strip() or None,
    )
    more = len(rows) > size
    shown = executions_routes.executions_public(session, rows[:size], blob_store)
    table = _executions_table(shown, viewer.tenant)
    running = any(not e.status.terminal for e in shown)
    params = {"tenant": viewer.tenant, "status": status, "workflow": workflow, "q": q, "size": size}
    pager = ""
    if number > 1:
        pager += f'<a rel=prev href="?{urlencode({**params, "page": number - 1})}">← newer</a> '
    pager += f"<span class=muted>page {number}</span>"
    if more:
        pager += f' <a rel=next href="?{urlencode({**params, "page": number + 1})}">older →</a>'
    refresh = f"?{urlencode({**params, 'page': number, 'fragment': 1})}"
    region = (
        f'<div id=executions data-refresh="{escape(refresh)}" '
        f'data-active="{"1" if running else "0"}">{table}</div>'
    )
    if fragment:
        return finish(HTMLResponse(region, headers=_HEADERS), request, viewer)
    body = _filters(viewer, state, workflow, q) + region + f"<p class=pager>{pager}</p>"
    return finish(page("Executions", body, viewer=viewer), request, viewer)


def _filters(viewer: Viewer, state: ExecutionState | None, workflow: str, q: str) -> str:
    options = "".join(
        f"<option{' selected' if s is state else ''}>{s.value}</option>" for s in ExecutionState
    )
    tenants = ""
    if len(viewer.tenants) > 1:
        choices = "".join(
            f"<option{' selected' if t == viewer.tenant else ''}>{escape(t)}</option>"
            for t in viewer.tenants
        )
        tenants = f"<label>Tenant <select name=tenant>{choices}</select></label>"
    else:
        tenants = f'<input type=hidden name=tenant value="{escape(viewer.tenant)}">'
    return (
        "<form class=filters method=get action=/ui/executions>"
        f"{tenants}<label>Status <select name=status><option value=''>any</option>"
        f"{options}</select></label>"
        f'<label>Workflow <input name=workflow value="{escape(workflow)}" '
        "placeholder='module.function'></label>"
        f'<label>Id <input name=q value="{escape(q)}" placeholder="ex-…"></label>'
        "<button type=submit>Filter</button></form>"
    )


def _executions_table(shown: list[ExecutionPublic], tenant: str) -> str:
    if not shown:
        return "<p class=muted>No executions match.</p>"
    rows = "".join(
        f'<tr data-execution="{escape(e.id)}"><td><a href="{_execution_url(e.id, tenant)}">'
        f"{escape(e.id)}</a></td><td>{escape(e.workflow)}</td><td>{escape(e.version)}</td>"
        f"<td>{badge(e.status.value)}</td><td>{when(e.created_at)}</td>"
        f"<td>{when(e.finished_at)}</td></tr>"
        for e in shown
    )
    return (
        "<table class=list><thead><tr><th>Execution</th><th>Workflow</th><th>Version</th>"
        f"<th>Status</th><th>Created</th><th>Finished</th></tr></thead><tbody>{rows}</tbody>"
        "</table>"
    )


# One execution ---------------------------------------------------------------------------------


def _read_execution(
    session: Session, viewer: Viewer, execution_id: str, blob_store: Any
) -> tuple[ExecutionPublic, dict[str, Any]] | None:
    """The execution as `GET /api/v1/executions/{id}` answers it, and its stored spec."""
    row = get_execution(session, viewer.caller.tenant.id, execution_id)
    if row is None:
        return None
    return executions_routes.executions_public(session, [row], blob_store)[0], row.workflow.spec


def snapshot(execution: ExecutionPublic, node_ids: list[str]) -> dict[str, Any]:
    """What the page's script redraws: the execution's state, each node's, and a digest of
    its attempts (the script reloads the attempts table when it changes)."""
    states = dag.node_states(node_ids, execution.attempts, execution.status)
    return {
        "status": execution.status.value,
        "nodes": {node: state.as_json() for node, state in states.items()},
        "attempts": [[a.id, a.status.value] for a in execution.attempts],
    }


@router.get("/ui/executions/{execution_id}")
def execution_page(
    execution_id: str,
    request: Request,
    session: SessionDep,
    authorizer: AuthorizerDep,
    blob_store: BlobStoreDep,
    tenant: str | None = None,
    fragment: str = "",
) -> Response:
    viewer = viewer_of(request, session, authorizer, tenant)
    if not isinstance(viewer, Viewer):
        return viewer
    found = _read_execution(session, viewer, execution_id, blob_store)
    if found is None:
        return finish(
            error_page("Not found", f"execution {execution_id} not found", 404, viewer),
            request,
            viewer,
        )
    execution, spec = found
    query = urlencode({"tenant": viewer.tenant})
    base = f"/ui/executions/{escape(execution.id)}"
    if fragment == "attempts":
        return finish(
            HTMLResponse(_attempts(execution, base, query), headers=_HEADERS), request, viewer
        )
    placed = dag.layout(spec)
    node_ids = [n.id for n in placed.nodes]
    states = dag.node_states(node_ids, execution.attempts, execution.status)
    may_write = viewer.caller.may(session, Obj.EXECUTIONS, Act.WRITE)
    actions = _actions(execution, viewer, base) if may_write else ""
    lineage = "".join(
        f'<div class=muted>{label} <a href="{_execution_url(other, viewer.tenant)}">'
        f"{escape(other)}</a></div>"
        for label, other in (
            ("relaunched from", execution.relaunched_from),
            ("recovered from", execution.recovered_from),
            ("child of", execution.parent_execution_id),
        )
        if other
    )
    error = _executionerror_page(execution.error)
    body = (
        f'<div id=execution data-events="{base}/events?{query}" '
        f'data-status="{execution.status.value}">'
        f"<p>{badge(execution.status.value)} <b>{escape(execution.workflow)}</b> "
        f"<span class=muted>version {escape(execution.version)} · created "
        f"{when(execution.created_at)} · finished {when(execution.finished_at)}</span></p>"
        f"{lineage}{actions}{error}"
        f"<h2>Graph</h2><div class=dagbox>{dag.render_svg(placed, states)}</div>"
        f'<h2>Attempts</h2><div id=attempts data-src="{base}?{query}&amp;fragment=attempts">'
        f"{_attempts(execution, base, query)}</div>"
        f"<h2>Inputs</h2>{_values(execution.inputs)}"
        f"<h2>Outputs</h2>{_values(execution.outputs)}</div>"
    )
    return finish(page(f"Execution {execution.id}", body, viewer=viewer), request, viewer)


def _executionerror_page(error: dict[str, Any] | None) -> str:
    """The execution's error: its message (and node), and the user's traceback as text."""
    if not error:
        return ""
    message = error.get("message")
    if not isinstance(message, str):
        return f"<pre class=error>{escape(_shown(error))}</pre>"
    node = error.get("node_id")
    where = f"{escape(str(node))}: " if node else ""
    traceback = error.get("traceback")
    shown = f"<pre class=traceback>{escape(traceback)}</pre>" if isinstance(traceback, str) else ""
    return f"<div class=error>{where}{escape(message)}</div>{shown}"


def _actions(execution: ExecutionPublic, viewer: Viewer, base: str) -> str:
    tenant = f'<input type=hidden name=tenant value="{escape(viewer.tenant)}">'
    buttons = []
    if not execution.status.terminal:
        buttons.append(("cancel", "Cancel"))
    buttons.append(("relaunch", "Relaunch"))
    if execution.status in (ExecutionState.FAILED, ExecutionState.CANCELLED):
        buttons.append(("recover", "Recover"))
    return (
        "<div class=actions>"
        + "".join(
            f"<form class=inline method=post action={base}/{action}>{_csrf_input(viewer.csrf)}"
            f"{tenant}<button type=submit name=do value={action}>{label}</button></form>"
            for action, label in buttons
        )
        + "</div>"
    )


def _attempts(execution: ExecutionPublic, base: str, query: str) -> str:
    if not execution.attempts:
        return "<p class=muted>No attempts yet.</p>"
    rows = "".join(_attempt_row(a, base, query) for a in execution.attempts)
    return (
        "<table class=list><thead><tr><th>Node</th><th>#</th><th>State</th><th>Cluster</th>"
        "<th>Created</th><th>Started</th><th>Finished</th><th>Why / error</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _attempt_row(attempt: AttemptPublic, base: str, query: str) -> str:
    node = attempt.node_id + (f"[{attempt.map_index}]" if attempt.map_index is not None else "")
    why = escape(attempt.error_message or attempt.pending_reason or "")
    if attempt.cache_hit:
        why = "cache hit"
    traceback = (
        f"<details><summary>traceback</summary><pre class=traceback>"
        f"{escape(attempt.error_traceback)}</pre></details>"
        if attempt.error_traceback
        else ""
    )
    follow = "" if attempt.status.terminal else " data-follow=1"
    log = (
        f'<details class=log><summary>log</summary><pre data-log="{base}/attempts/'
        f'{escape(attempt.id)}/log?{query}"{follow}></pre></details>'
        if not attempt.cache_hit and attempt.status is not AttemptState.SKIPPED
        else ""
    )
    return (
        f'<tr data-attempt="{escape(attempt.id)}"><td>{escape(node)}</td>'
        f"<td>{attempt.attempt_number}</td><td>{badge(attempt.status.value)}</td>"
        f"<td>{escape(attempt.cluster or '—')}</td><td>{when(attempt.created_at)}</td>"
        f"<td>{when(attempt.started_at)}</td><td>{when(attempt.finished_at)}</td>"
        f"<td>{why}{traceback}{log}</td></tr>"
    )


def _values(values: dict[str, Any] | None) -> str:
    if not values:
        return "<p class=muted>none</p>"
    rows = "".join(
        f"<tr><th>{escape(name)}</th><td><pre>{escape(_shown(value))}</pre></td></tr>"
        for name, value in values.items()
    )
    return f"<table class=values>{rows}</table>"


def _shown(value: Any) -> str:
    """A value as JSON, cut at 20,000 characters."""
    text = json.dumps(value, indent=1, default=str)
    return text if len(text) <= 20_000 else text[:20_000] + " …"


# Live updates ----------------------------------------------------------------------------------


@router.get("/ui/executions/{execution_id}/events")
def execution_events(
    execution_id: str,
    request: Request,
    session: SessionDep,
    authorizer: AuthorizerDep,
    blob_store: BlobStoreDep,
    tenant: str | None = None,
) -> Response:
    """Server-sent events: a snapshot (see `snapshot`) whenever it changes, until the
    execution ends or `SSE_MAX_SECONDS` pass (the browser's EventSource then reconnects)."""
    viewer = viewer_of(request, session, authorizer, tenant)
    if not isinstance(viewer, Viewer):
        return PlainTextResponse("sign in first, or not allowed", status_code=_status(viewer))
    found = _read_execution(session, viewer, execution_id, blob_store)
    if found is None:
        return PlainTextResponse(f"execution {execution_id} not found", status_code=404)
    node_ids = [n["id"] for n in found[1].get("nodes", []) if isinstance(n, dict)]
    tenant_id = viewer.caller.tenant.id
    sessions: sessionmaker[Session] = request.app.state.session_factory

    def read() -> dict[str, Any] | None:
        with sessions() as fresh:
            row = get_execution(fresh, tenant_id, execution_id)
            if row is None:
                return None
            public = executions_routes.executions_public(fresh, [row], blob_store)[0]
            return snapshot(public, node_ids)

    async def stream() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        last = None
        deadline = time.monotonic() + SSE_MAX_SECONDS
        while time.monotonic() < deadline:
            if await request.is_disconnected():
                return
            current = await run_in_threadpool(read)
            if current is None:
                return
            text = json.dumps(current, separators=(",", ":"))
            if text != last:
                last = text
                yield f"data: {text}\n\n"
            if ExecutionState(current["status"]).terminal:
                yield "event: end\ndata: {}\n\n"
                return
            await asyncio.sleep(SSE_INTERVAL_SECONDS)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _status(response: Response) -> int:
    return 401 if response.status_code in (303, 307) else response.status_code


@router.get("/ui/executions/{execution_id}/attempts/{attempt_id}/log")
async def attempt_log(
    execution_id: str,
    attempt_id: str,
    request: Request,
    session: SessionDep,
    authorizer: AuthorizerDep,
    blob_store: BlobStoreDep,
    tenant: str | None = None,
) -> Response:
    """What one attempt printed (its stored last MiB), through the logs API's own function;
    header `X-Attempt-State` says whether it may still grow."""
    viewer = await run_in_threadpool(viewer_of, request, session, authorizer, tenant)
    if not isinstance(viewer, Viewer):
        return PlainTextResponse("sign in first, or not allowed", status_code=_status(viewer))
    try:
        logs = await execution_logs(
            execution_id, session, viewer.caller, blob_store, attempt_id=[attempt_id]
        )
    except ApiError as exc:
        return PlainTextResponse(exc.detail, status_code=exc.status_code)
    if not logs.attempts:
        return PlainTextResponse(f"attempt {attempt_id} not found", status_code=404)
    found = logs.attempts[0]
    return PlainTextResponse(
        found.log or "",
        headers={"Cache-Control": "no-store", "X-Attempt-State": str(found.status)},
    )


# Actions ---------------------------------------------------------------------------------------


@router.post("/ui/executions/{execution_id}/{action}")
async def execution_action(
    execution_id: str,
    action: str,
    request: Request,
    session: SessionDep,
    authorizer: AuthorizerDep,
    launcher: LauncherDep,
    blob_store: BlobStoreDep,
    settings: SettingsDep,
    csrf: Annotated[str, Form(alias=CSRF_FIELD)] = "",
    tenant: Annotated[str | None, Form()] = None,
) -> Response:
    """Cancel, relaunch or recover, through the API routes' own functions, for a principal
    allowed to write executions in the tenant; then back to the (new) execution's page."""
    if action not in ("cancel", "relaunch", "recover"):
        return error_page("Not found", f"no action {action!r}", 404)
    refusal = WEB.refusal(request, csrf)
    if refusal is not None:
        return error_page("Request refused", refusal, 403)
    viewer = await run_in_threadpool(viewer_of, request, session, authorizer, tenant)
    if not isinstance(viewer, Viewer):
        return viewer
    if not viewer.caller.may(session, Obj.EXECUTIONS, Act.WRITE):
        message = f"{viewer.who.principal.name} may not write executions in {viewer.tenant!r}"
        return error_page("Refused", message, 403, viewer)
    caller = viewer.caller
    try:
        if action == "cancel":
            done = await executions_routes.cancel_execution_route(
                execution_id, session, caller, launcher, blob_store
            )
        elif action == "relaunch":
            done = await executions_routes.relaunch_execution_route(
                execution_id, session, caller, launcher, blob_store, settings, Response()
            )
        else:
            done = await executions_routes.recover_execution_route(
                execution_id, session, caller, launcher, blob_store, settings, Response()
            )
    except ApiError as exc:
        title = "Not found" if exc.status_code == 404 else f"Could not {action}"
        return error_page(title, exc.detail, exc.status_code, viewer)
    return RedirectResponse(
        f"/ui/executions/{done.id}?{urlencode({'tenant': viewer.tenant})}", status_code=303
    )
