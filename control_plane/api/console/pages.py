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
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from html import escape
from importlib.resources import files
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

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
from control_plane.api.routes import outputs as outputs_routes
from control_plane.api.routes.logs import execution_logs
from control_plane.api.web_session import CSRF_FIELD, WebSession
from control_plane.auth.rbac import EVERY_TENANT, Act, Authorizer, Obj
from control_plane.db.models import Execution
from control_plane.db.repositories import principals as principals_repo
from control_plane.db.repositories import tenancy
from control_plane.db.repositories.executions import get_execution, list_executions
from control_plane.services.executions import ExecutionRequestError
from control_plane.services.sub_dags import built_sub_dags
from fleetflow.api_models.executions import AttemptPublic, ExecutionOutput, ExecutionPublic
from fleetflow.states import AttemptState, ExecutionState
from fleetflow.storage import BlobStore
from fleetflow.timestamps import as_utc_bound

router = APIRouter(include_in_schema=False)
WEB = WebSession(path="/ui", home="/ui", name="console")
PAGE_SIZE = 50
MAX_FILES_SHOWN = 100  # download links per output; the CLI downloads them all
MAX_TIMELINE_ROWS = 500
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
    by: Annotated[str, Query(max_length=128)] = "",
    after: Annotated[str, Query(max_length=40)] = "",
    before: Annotated[str, Query(max_length=40)] = "",
    number: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
    size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = PAGE_SIZE,
    fragment: bool = False,
) -> Response:
    """The acting tenant's executions, newest first, filtered (status, workflow, part of the
    id, who launched it, created in [`after`, `before`), UTC) and paged; `fragment=1`
    answers the table alone (what the page's script polls while executions run)."""
    viewer = viewer_of(request, session, authorizer, tenant)
    if not isinstance(viewer, Viewer):
        return viewer
    state = ExecutionState(status) if status in ExecutionState.__members__ else None
    since, since_error = _moment(after, "after")
    until, until_error = _moment(before, "before")
    rows = list_executions(
        session,
        viewer.caller.tenant.id,
        limit=size + 1,
        offset=(number - 1) * size,
        status=state,
        workflow=workflow.strip() or None,
        id_contains=q.strip() or None,
        launched_by=by.strip() or None,
        created_after=since,
        created_before=until,
    )
    more = len(rows) > size
    shown = executions_routes.executions_public(session, rows[:size], blob_store)
    table = _executions_table(shown, viewer.tenant)
    running = any(not e.status.terminal for e in shown)
    params = {
        "tenant": viewer.tenant,
        "status": status,
        "workflow": workflow,
        "q": q,
        "by": by,
        "after": after,
        "before": before,
        "size": size,
    }
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
    errors = "".join(
        f"<p class=error data-field={name}>{escape(message)}</p>"
        for name, message in (("after", since_error), ("before", until_error))
        if message
    )
    filters = _filters(viewer, state, workflow, q, by, after, before)
    body = filters + errors + region + f"<p class=pager>{pager}</p>"
    return finish(page("Executions", body, viewer=viewer), request, viewer)


def _moment(text: str, name: str) -> tuple[datetime | None, str]:
    """A filter's time (`2026-12-05T10:00` as a datetime-local field sends it, or any ISO
    8601 time; without a zone: UTC), or why it is not one (the filter is then left out)."""
    if not text.strip():
        return None, ""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None, f"{name}: {text!r} is not a time like 2026-12-05T10:00 (UTC); not applied"
    return as_utc_bound(moment), ""


def _filters(
    viewer: Viewer,
    state: ExecutionState | None,
    workflow: str,
    q: str,
    by: str = "",
    after: str = "",
    before: str = "",
) -> str:
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
        f'<label>Launched by <input name=by value="{escape(by)}" placeholder="user name">'
        "</label>"
        f"<label>Created after (UTC) <input type=datetime-local name=after step=1 "
        f'value="{escape(after)}"></label>'
        f"<label>Created before (UTC) <input type=datetime-local name=before step=1 "
        f'value="{escape(before)}"></label>'
        "<button type=submit>Filter</button></form>"
    )


def _executions_table(shown: list[ExecutionPublic], tenant: str) -> str:
    if not shown:
        return "<p class=muted>No executions match.</p>"
    rows = "".join(
        f'<tr data-execution="{escape(e.id)}"><td><a href="{_execution_url(e.id, tenant)}">'
        f"{escape(e.id)}</a></td><td>{escape(e.workflow)}</td><td>{escape(e.version)}</td>"
        f"<td>{badge(e.status.value)}</td><td>{escape(e.launched_by or '—')}</td>"
        f"<td>{when(e.created_at)}</td><td>{when(e.finished_at)}</td></tr>"
        for e in shown
    )
    return (
        "<table class=list><thead><tr><th>Execution</th><th>Workflow</th><th>Version</th>"
        "<th>Status</th><th>Launched by</th><th>Created</th><th>Finished</th></tr></thead>"
        f"<tbody>{rows}</tbody>"
        "</table>"
    )


# One execution ---------------------------------------------------------------------------------


def _read_execution(
    session: Session, viewer: Viewer, execution_id: str, blob_store: Any
) -> tuple[ExecutionPublic, dict[str, Any], Execution] | None:
    """The execution as `GET /api/v1/executions/{id}` answers it, its stored spec and row."""
    row = get_execution(session, viewer.caller.tenant.id, execution_id)
    if row is None:
        return None
    public = executions_routes.executions_public(session, [row], blob_store)[0]
    return public, row.workflow.spec, row


def snapshot(execution: ExecutionPublic, node_ids: list[str]) -> dict[str, Any]:
    """What the page's script redraws: the execution's state, each node's (the spec's and
    those of dynamic sub-DAGs: a node the page lacks makes it fetch the graph again), and a
    digest of its attempts (the script reloads the attempts table when it changes)."""
    known = set(node_ids)
    extra = [a.node_id for a in execution.attempts if a.node_id not in known]
    states = dag.node_states(
        [*node_ids, *dict.fromkeys(extra)], execution.attempts, execution.status
    )
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
    execution, spec, row = found
    query = urlencode({"tenant": viewer.tenant})
    base = f"/ui/executions/{escape(execution.id)}"
    if fragment == "attempts":
        shown = _attempts(execution, base, query) + _timeline(execution, spec)
        return finish(HTMLResponse(shown, headers=_HEADERS), request, viewer)
    # The sub-DAGs built so far (the route `/executions/{id}/nodes/{node}/sub-dag` answers),
    # with their edges; nodes with attempts and no readable sub-DAG still show after theirs.
    started = {a.node_id for a in execution.attempts}
    sub_dags = built_sub_dags(session, row, blob_store, started)
    placed = dag.layout(spec, dag.dynamic_nodes(spec, execution.attempts), sub_dags)
    node_ids = [n.id for n in placed.nodes]
    states = dag.node_states(node_ids, execution.attempts, execution.status)
    if fragment == "graph":
        graph = dag.render_svg(placed, states)
        return finish(HTMLResponse(graph, headers=_HEADERS), request, viewer)
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
    ) + "".join(
        f'<div class=muted>node {escape(child.node_id)} runs <a href="'
        f'{_execution_url(child.execution_id, viewer.tenant)}">{escape(child.execution_id)}</a> '
        f"({escape(child.workflow)}) {badge(child.status.value)}</div>"
        for child in execution.children
    )
    error = _executionerror_page(execution.error)
    body = (
        f'<div id=execution data-events="{base}/events?{query}" '
        f'data-status="{execution.status.value}">'
        f"<p>{badge(execution.status.value)} <b>{escape(execution.workflow)}</b> "
        f"<span class=muted>version {escape(execution.version)} · launched by "
        f"{escape(execution.launched_by or '—')} · created "
        f"{when(execution.created_at)} · finished {when(execution.finished_at)}</span></p>"
        f"{lineage}{actions}{error}"
        f'<h2>Graph</h2><div class=dagbox data-src="{base}?{query}&amp;fragment=graph">'
        f"{dag.render_svg(placed, states)}</div>"
        f'<h2>Attempts</h2><div id=attempts data-src="{base}?{query}&amp;fragment=attempts">'
        f"{_attempts(execution, base, query)}{_timeline(execution, spec)}</div>"
        f"<h2>Inputs</h2>{_inputs(session, viewer, execution, blob_store, base, query)}"
        f"<h2>Outputs</h2>{_outputs(session, viewer, execution, blob_store, base, query)}</div>"
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


def _outputs(
    session: Session,
    viewer: Viewer,
    execution: ExecutionPublic,
    blob_store: Any,
    base: str,
    query: str,
) -> str:
    """The outputs as JSON, each with links to download the files it carries (what
    `GET .../outputs/{name}` lists for the tenant; an output it refuses says why)."""
    if execution.status is not ExecutionState.SUCCEEDED or not execution.outputs:
        return _values(execution.outputs)
    return _with_files(
        execution.outputs,
        "output",
        lambda name: outputs_routes.output_listing(
            session, viewer.caller.tenant, execution.id, name, blob_store
        ),
        base,
        query,
    )


def _inputs(
    session: Session,
    viewer: Viewer,
    execution: ExecutionPublic,
    blob_store: Any,
    base: str,
    query: str,
) -> str:
    """The inputs as JSON, each `File` or `Directory` in them with download links (what
    `GET .../inputs/{name}` lists for the tenant; an input it refuses says why)."""
    if not execution.inputs:
        return _values(execution.inputs)
    return _with_files(
        execution.inputs,
        "input",
        lambda name: outputs_routes.input_listing(
            session, viewer.caller.tenant, execution.id, name, blob_store
        ),
        base,
        query,
    )


def _with_files(
    values: dict[str, Any],
    side: Literal["input", "output"],
    listing: Callable[[str], ExecutionOutput],
    base: str,
    query: str,
) -> str:
    """`values` as JSON, each with links to `{base}/{side}s/{name}/files/{path}` for the files
    `listing(name)` lists (its refusal, if any, shown instead)."""
    rows = []
    for name, value in values.items():
        try:
            listed = listing(name)
        except ApiError as exc:
            links = f"<p class=error>{escape(exc.detail)}</p>"
        else:
            paths = [path for blob in listed.blobs for path in blob.files]
            links = "".join(
                f'<li><a download data-file="{escape(path)}" href="{base}/{side}s/'
                f'{quote(name, safe="")}/files/{quote(path)}?{query}">{escape(path)}</a></li>'
                for path in paths[:MAX_FILES_SHOWN]
            )
            more = len(paths) - MAX_FILES_SHOWN
            if more > 0:
                everything = (
                    "fleetflow executions outputs"
                    if side == "output"
                    else f"GET /api/v1/executions/{listed.execution_id}/inputs/{name}"
                )
                links += f"<li class=muted>… and {more} more ({escape(everything)})</li>"
            links = f"<ul class=files>{links}</ul>" if links else ""
        rows.append(
            f'<tr data-{side}="{escape(name)}"><th>{escape(name)}</th>'
            f"<td><pre>{escape(_shown(value))}</pre>{links}</td></tr>"
        )
    return f"<table class=values>{''.join(rows)}</table>"


def reason_kind(reason: str | None) -> str:
    """What an attempt waits for, from its pending reason: quota, unschedulable or capacity."""
    if not reason:
        return ""
    head = reason.partition(":")[0].strip().lower()
    return head if head in ("quota", "unschedulable") else "capacity"


def _timeline(execution: ExecutionPublic, spec: dict[str, Any]) -> str:
    """The attempts as a Gantt chart (SVG): one row each, the time it waited (hatched) then
    ran, on one time axis; beside it the cluster, GPU type, wait and why it waited."""
    attempts = [a for a in execution.attempts if not a.cache_hit][:MAX_TIMELINE_ROWS]
    if not attempts:
        return ""
    now = datetime.now(UTC)
    start = min(a.created_at for a in attempts)
    ends = [a.finished_at or now for a in attempts]
    end = max([*ends, execution.finished_at or start])
    span = max((end - start).total_seconds(), 1.0)
    label, chart, row = 260, 700, 22
    width = label + chart + 20
    height = row * len(attempts) + 30
    ticks = "".join(
        f'<line class=tick x1="{label + chart * i / 4:.1f}" y1="0" '
        f'x2="{label + chart * i / 4:.1f}" y2="{height - 18}"/>'
        f'<text class=tick x="{label + chart * i / 4:.1f}" y="{height - 4}" '
        f'text-anchor="middle">+{_duration(span * i / 4)}</text>'
        for i in range(5)
    )
    bars = []
    for i, a in enumerate(attempts):
        y = i * row + 4
        began = a.started_at or (a.finished_at if a.status.terminal else None)
        stop = a.finished_at or now
        x0 = label + chart * (a.created_at - start).total_seconds() / span
        x1 = label + chart * ((began or stop) - start).total_seconds() / span
        x2 = label + chart * (stop - start).total_seconds() / span
        waited = ((began or stop) - a.created_at).total_seconds()
        kind = reason_kind(a.pending_reason)
        gpu = a.gpu_type or _gpu_wanted(spec, a.node_id)
        node = a.node_id + (f"[{a.map_index}]" if a.map_index is not None else "")
        title = (
            f"{node} #{a.attempt_number} {a.status.value} · cluster {a.cluster or '—'} · "
            f"GPU {gpu or 'none'} · waited {_duration(waited)}"
            + (f" ({a.pending_reason})" if a.pending_reason else "")
        )
        ran = (
            f'<rect class=run data-state="{a.status.value}" x="{x1:.1f}" y="{y}" '
            f'width="{max(x2 - x1, 1.5):.1f}" height="{row - 8}"/>'
            if a.started_at
            else ""
        )
        bars.append(
            f'<g class=span data-attempt="{escape(a.id)}" data-wait="{waited:.1f}" '
            f'data-reason="{kind}"><title>{escape(title)}</title>'
            f'<text x="4" y="{y + 11}">{escape(_clip(node, 22))} #{a.attempt_number}</text>'
            f'<text class=where x="{label - 8}" y="{y + 11}" text-anchor="end">'
            f"{escape(_clip(a.cluster or '—', 14))} · {escape(_clip(gpu or 'no GPU', 10))}</text>"
            f'<rect class="wait {kind}" x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 0.0):.1f}" '
            f'height="{row - 8}"/>{ran}</g>'
        )
    waits = "".join(
        f"<li>{escape(a.node_id)} #{a.attempt_number}: waiting "
        f"{_duration((now - a.created_at).total_seconds())} — "
        f"<b>{reason_kind(a.pending_reason)}</b> {escape(a.pending_reason or '')}</li>"
        for a in attempts
        if a.pending_reason and a.status is AttemptState.PENDING
    )
    return (
        "<h2>Timeline</h2><div class=timeline>"
        f'<svg class=gantt xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role=img aria-label="attempts timeline">'
        f"{ticks}{''.join(bars)}</svg></div>"
        + (f"<ul class=waiting>{waits}</ul>" if waits else "")
        + "<p class=muted>hatched: waiting to start (queued for quota, capacity or a "
        "schedulable cluster); solid: running.</p>"
    )


def _gpu_wanted(spec: dict[str, Any], node_id: str) -> str:
    """The GPU types a node's task accepts, from the stored spec, before it is placed."""
    tasks = spec.get("tasks", {})
    for node in spec.get("nodes", []):
        if isinstance(node, dict) and node.get("id") == node_id:
            task = tasks.get(node.get("task"), {}) if isinstance(tasks, dict) else {}
            resources = task.get("resources") or {} if isinstance(task, dict) else {}
            if not isinstance(resources, dict) or not resources.get("gpu"):
                return ""
            types = resources.get("gpu_type") or "any GPU"
            return "|".join(types) if isinstance(types, list) else str(types)
    return ""


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else "…" + text[-(chars - 1) :]


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


async def _blob_file(
    download: Callable[..., Awaitable[Response]],
    where: tuple[str, str, str],
    request: Request,
    session: Session,
    authorizer: Authorizer,
    blob_store: BlobStore,
    tenant: str | None,
) -> Response:
    """A file of an input or output, served by the API route's own `download` function for
    the signed-in viewer: the API's rights, its refusals as plain text."""
    viewer = await run_in_threadpool(viewer_of, request, session, authorizer, tenant)
    if not isinstance(viewer, Viewer):
        return viewer  # to sign in, or the page that says "not found" or "refused"
    try:
        return await download(*where, session, viewer.caller, blob_store)
    except ApiError as exc:
        return PlainTextResponse(exc.detail, status_code=exc.status_code)


@router.get("/ui/executions/{execution_id}/outputs/{name}/files/{path:path}")
async def output_file(
    execution_id: str,
    name: str,
    path: str,
    request: Request,
    session: SessionDep,
    authorizer: AuthorizerDep,
    blob_store: BlobStoreDep,
    tenant: str | None = None,
) -> Response:
    """One file of an output, through `GET /api/v1/executions/{id}/outputs/{name}/files/...`'s
    own function: only the acting tenant's executions, only blobs the tenant may read."""
    return await _blob_file(
        outputs_routes.download_output_file,
        (execution_id, name, path),
        request,
        session,
        authorizer,
        blob_store,
        tenant,
    )


@router.get("/ui/executions/{execution_id}/inputs/{name}/files/{path:path}")
async def input_file(
    execution_id: str,
    name: str,
    path: str,
    request: Request,
    session: SessionDep,
    authorizer: AuthorizerDep,
    blob_store: BlobStoreDep,
    tenant: str | None = None,
) -> Response:
    """One file of an input, through `GET /api/v1/executions/{id}/inputs/{name}/files/...`'s
    own function: only the acting tenant's executions, only blobs the tenant may read."""
    return await _blob_file(
        outputs_routes.download_input_file,
        (execution_id, name, path),
        request,
        session,
        authorizer,
        blob_store,
        tenant,
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
    except ExecutionRequestError as exc:  # what the API answers through its handler
        title = "Not found" if exc.status_code == 404 else f"Could not {action}"
        return error_page(title, str(exc), exc.status_code, viewer)
    return RedirectResponse(
        f"/ui/executions/{done.id}?{urlencode({'tenant': viewer.tenant})}", status_code=303
    )
