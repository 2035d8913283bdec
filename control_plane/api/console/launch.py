"""The console's launch form: one field per input of a workflow version's typed interface,
posted (with the anti-forgery token) to `/ui/workflows/{name}/launch`, which builds the
request `POST /api/v1/executions` takes and calls that route's own function. The API's
validation is the only validation: a value it refuses shows its message next to the field and
launches nothing. Shown only to principals allowed to write executions; the POST checks it again.

Fields: a number input for `int` and `float`, a text input for `str` (and a datetime's ISO text),
a select for `bool` and enums, the inner field for an `Optional` (empty: null), and a JSON text
area for the rest (lists, dicts, sets, dataclasses, unions, files).
"""

from __future__ import annotations

import json
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from control_plane.api.auth import AuthorizerDep
from control_plane.api.console.pages import (
    WEB,
    Viewer,
    _csrf_input,
    error_page,
    finish,
    page,
    viewer_of,
)
from control_plane.api.deps import BlobStoreDep, LauncherDep, SessionDep, SettingsDep
from control_plane.api.errors import ApiError
from control_plane.api.routes import executions as executions_routes
from control_plane.api.routes import workflows as workflows_routes
from control_plane.api.web_session import CSRF_FIELD
from control_plane.auth.rbac import Act, Obj
from control_plane.schemas.executions import ExecutionCreate
from control_plane.services.executions import ExecutionRequestError
from fleetflow.ir import LiteralType, TypedInterface, TypeKind, Variable

router = APIRouter(include_in_schema=False)
FIELD = "in."  # the form field of input `n` is `in.n`
_NUMBER = {TypeKind.INTEGER: "1", TypeKind.FLOAT: "any", TypeKind.DURATION: "any"}
_TEXT = {TypeKind.STRING, TypeKind.DATETIME, TypeKind.BYTES}


def _simple(kind: LiteralType) -> LiteralType:
    """The type a field edits: an Optional's inner type when that has a field of its own."""
    if kind.kind is TypeKind.OPTIONAL and kind.item is not None:
        inner = kind.item
        if inner.kind in _NUMBER or inner.kind in _TEXT or inner.kind is TypeKind.ENUM:
            return inner
        if inner.kind is TypeKind.BOOLEAN:
            return inner
    return kind


def _field(variable: Variable, entered: str | None, error: str) -> str:
    """One input's label, control (holding what was entered, else the default) and error."""
    kind = variable.type
    edited = _simple(kind)
    optional = kind.kind is TypeKind.OPTIONAL
    name = escape(FIELD + variable.name)
    if entered is None:
        entered = "" if not variable.has_default else _default_text(variable.default, edited)
    value = escape(entered)
    required = "" if variable.has_default or optional else " required"
    if edited.kind in _NUMBER and not _number(entered):  # what was refused stays visible
        control = f'<input type=text name={name} value="{value}"{required}>'
    elif edited.kind in _NUMBER:
        control = (
            f'<input type=number step={_NUMBER[edited.kind]} name={name} value="{value}"{required}>'
        )
    elif edited.kind in _TEXT:
        control = f'<input type=text name={name} value="{value}"{required}>'
    elif edited.kind in (TypeKind.BOOLEAN, TypeKind.ENUM):
        values = ["true", "false"] if edited.kind is TypeKind.BOOLEAN else (edited.values or [])
        empty = "(default)" if variable.has_default else "(none)" if optional else "(choose)"
        options = f'<option value="">{empty}</option>' + "".join(
            f"<option{' selected' if v == entered else ''}>{escape(v)}</option>" for v in values
        )
        control = f"<select name={name}>{options}</select>"
    else:
        control = f"<textarea name={name} rows=3 spellcheck=false>{value}</textarea>"
    hint = "JSON" if control.startswith("<textarea") else ""
    if optional:
        hint = (hint + ", " if hint else "") + "empty: null"
    elif variable.has_default:
        hint = (hint + ", " if hint else "") + f"default {json.dumps(variable.default)}"
    shown_error = f"<span class=error data-error-for={name}>{escape(error)}</span>" if error else ""
    return (
        f"<label data-input={name}><b>{escape(variable.name)}</b> "
        f"<code>{escape(kind.describe())}</code> <span class='muted hint'>{escape(hint)}</span>"
        f"{control}{shown_error}</label>"
    )


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return not text.strip()
    return True


def _default_text(default: Any, kind: LiteralType) -> str:
    if default is None:
        return ""
    if kind.kind in _NUMBER or kind.kind in _TEXT or kind.kind is TypeKind.ENUM:
        return str(default)
    if kind.kind is TypeKind.BOOLEAN:
        return "true" if default else "false"
    return json.dumps(default)


def launch_form(
    name: str,
    version: str,
    interface: TypedInterface,
    viewer: Viewer,
    entered: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    general: str = "",
) -> str:
    """The form, filled with what was `entered` and the API's `errors` by input name."""
    entered = entered or {}
    errors = errors or {}
    fields = "".join(
        _field(v, entered.get(v.name), errors.get(v.name, "")) for v in interface.inputs
    )
    action = f"/ui/workflows/{quote(name, safe='')}/launch"
    note = f"<p class=error id=launch-error>{escape(general)}</p>" if general else ""
    return (
        f"<form class=launch id=launch method=post action={escape(action)}>"
        f"{_csrf_input(viewer.csrf)}"
        f'<input type=hidden name=tenant value="{escape(viewer.tenant)}">'
        f'<input type=hidden name=version value="{escape(version)}">'
        f"{note}{fields or '<p class=muted>No inputs.</p>'}"
        "<button type=submit>Launch</button></form>"
    )


def _literal(text: str, kind: LiteralType) -> tuple[bool, Any]:
    """The JSON literal a field's text stands for: (False, …) to leave the input out (its
    default applies, or the API says it is missing). A number that does not parse goes to
    the API as text, so that the API's own message refuses it."""
    if kind.kind is TypeKind.OPTIONAL:
        if not text.strip():
            return True, None
        inner = _simple(kind)
        if inner is not kind:
            return _literal(text, inner)
    if not text.strip():
        return False, None
    if kind.kind is TypeKind.INTEGER:
        try:
            return True, int(text.strip())
        except ValueError:
            return True, text
    if kind.kind in (TypeKind.FLOAT, TypeKind.DURATION):
        try:
            return True, float(text.strip())
        except ValueError:
            return True, text
    if kind.kind is TypeKind.BOOLEAN:
        return True, {"true": True, "false": False}.get(text.strip(), text)
    if kind.kind in _TEXT or kind.kind is TypeKind.ENUM:
        return True, text
    return True, json.loads(text)  # the caller words a JSONDecodeError


def _input_of(field: str, names: list[str]) -> str | None:
    """The input an API error's field (`inputs.n`, `inputs.xs[2]`, `inputs.cfg.lr`) is about."""
    if not field.startswith("inputs."):
        return None
    rest = field.removeprefix("inputs.")
    for name in sorted(names, key=len, reverse=True):
        if rest == name or rest.startswith((f"{name}.", f"{name}[")):
            return name
    return None


@router.post("/ui/workflows/{name}/launch")
async def launch(
    name: str,
    request: Request,
    session: SessionDep,
    authorizer: AuthorizerDep,
    launcher: LauncherDep,
    blob_store: BlobStoreDep,
    settings: SettingsDep,
) -> Response:
    """Launch the version the form names with the inputs entered, through
    `POST /api/v1/executions`'s own function; its refusal comes back next to the fields."""
    form = await request.form()
    text = {k: v for k, v in form.items() if isinstance(v, str)}
    refusal = WEB.refusal(request, text.get(CSRF_FIELD, ""))
    if refusal is not None:
        return error_page("Request refused", refusal, 403)
    viewer = viewer_of(request, session, authorizer, text.get("tenant"), Obj.WORKFLOWS)
    if not isinstance(viewer, Viewer):
        return viewer
    if not viewer.caller.may(session, Obj.EXECUTIONS, Act.WRITE):
        message = f"{viewer.who.principal.name} may not launch executions in {viewer.tenant!r}"
        return finish(error_page("Refused", message, 403, viewer), request, viewer)
    try:
        detail = workflows_routes.get_workflow_detail(
            name, session, viewer.caller, text.get("version") or None
        )
    except ApiError as exc:
        return finish(error_page("Not found", exc.detail, exc.status_code, viewer), request, viewer)
    interface = detail.interface
    entered = {v.name: text[FIELD + v.name] for v in interface.inputs if FIELD + v.name in text}
    inputs: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for variable in interface.inputs:
        try:
            given, value = _literal(entered.get(variable.name, ""), variable.type)
        except json.JSONDecodeError as exc:
            errors[variable.name] = f"not valid JSON: {exc.msg} (line {exc.lineno})"
            continue
        if given:
            inputs[variable.name] = value
    general = ""
    if not errors:
        body = ExecutionCreate(workflow=name, version=detail.version, inputs=inputs)
        try:
            created = await executions_routes.start_execution(
                body, session, viewer.caller, launcher, blob_store, settings, Response()
            )
        except (ApiError, ExecutionRequestError) as exc:
            detail_text = exc.detail if isinstance(exc, ApiError) else str(exc)
            names = [v.name for v in interface.inputs]
            for error in exc.errors or []:
                about = _input_of(error.field, names)
                if about is None:
                    general += f"{error.field}: {error.message}\n"
                else:
                    errors[about] = (errors.get(about, "") + " " + error.message).strip()
            if not exc.errors:
                general = detail_text
        else:
            target = f"/ui/executions/{created.id}?{urlencode({'tenant': viewer.tenant})}"
            return RedirectResponse(target, status_code=303)
    shown = launch_form(
        name, detail.version, interface, viewer, entered, errors, general.strip() or ""
    )
    body_html = (
        f"<p class=error>Nothing was launched: the API refused the inputs.</p>{shown}"
        if errors or general
        else shown
    )
    return finish(page(f"Launch {name}", body_html, viewer=viewer, status=422), request, viewer)
