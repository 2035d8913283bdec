"""The console's read-only pages of what a tenant can run on: its registered workflows (versions,
typed interface, the graph before any run), the clusters granted to it (status, heartbeat,
capacity and use per GPU type) and quotas against use (`/dashboard`'s sections, under the
console's sign-in). Each calls the REST API's own route function with a caller checked for the
same right (`workflows:read`, `clusters:read`; usage: the dashboard's own rule)."""

from __future__ import annotations

import json
from html import escape
from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from control_plane.api.auth import AuthorizerDep
from control_plane.api.console import dag
from control_plane.api.console.admin import clusters_admin_section, platform_may, waiting_section
from control_plane.api.console.launch import launch_form
from control_plane.api.console.pages import Viewer, badge, error_page, finish, page, viewer_of, when
from control_plane.api.deps import SessionDep, SettingsDep
from control_plane.api.errors import ApiError
from control_plane.api.routes import clusters as clusters_routes
from control_plane.api.routes import workflows as workflows_routes
from control_plane.api.routes.dashboard import tenant_section, usage_tenants
from control_plane.auth.rbac import Act, Obj
from control_plane.placement import format_bytes
from fleetflow.api_models.clusters import ClusterPublic
from fleetflow.ir import TypedInterface

router = APIRouter(include_in_schema=False)
MAX_SHOWN = 200


def _workflow_url(name: str, tenant: str, version: str | None = None) -> str:
    query = {"tenant": tenant, **({"version": version} if version else {})}
    return f"/ui/workflows/{quote(name, safe='')}?{urlencode(query)}"


@router.get("/ui/workflows")
def workflows_page(
    request: Request,
    session: SessionDep,
    authorizer: AuthorizerDep,
    tenant: str | None = None,
) -> Response:
    """The newest version of each of the tenant's workflows."""
    viewer = viewer_of(request, session, authorizer, tenant, Obj.WORKFLOWS)
    if not isinstance(viewer, Viewer):
        return viewer
    latest = workflows_routes.list_workflows(
        session, viewer.caller, latest_only=True, limit=MAX_SHOWN, offset=0
    )
    rows = "".join(
        f'<tr data-workflow="{escape(w.name)}">'
        f'<td><a href="{_workflow_url(w.name, viewer.tenant)}">'
        f"{escape(w.name)}</a></td><td>{escape(w.version)}</td><td>{when(w.created_at)}</td>"
        f"<td><code>{escape(_signature(w.interface))}</code></td></tr>"
        for w in latest
    )
    body = (
        "<table class=list><thead><tr><th>Workflow</th><th>Newest version</th>"
        f"<th>Registered</th><th>Interface</th></tr></thead><tbody>{rows}</tbody></table>"
        if latest
        else "<p class=muted>No workflows registered (<code>fleetflow register</code>).</p>"
    )
    return finish(page("Workflows", body, viewer=viewer), request, viewer)


def _signature(interface: TypedInterface) -> str:
    """`(n: int, lr: float = 0.1) -> float`, as `fleetflow workflows get` writes it."""
    inputs = ", ".join(
        f"{v.name}: {v.type.describe()}" + (f" = {json.dumps(v.default)}" if v.has_default else "")
        for v in interface.inputs
    )
    outputs = ", ".join(v.type.describe() for v in interface.outputs) or "None"
    return f"({inputs}) -> {outputs}"


@router.get("/ui/workflows/{name}")
def workflow_page(
    name: str,
    request: Request,
    session: SessionDep,
    authorizer: AuthorizerDep,
    tenant: str | None = None,
    version: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    """One version of a workflow (the newest by default): its interface, its graph, its other
    versions and a link to its executions."""
    viewer = viewer_of(request, session, authorizer, tenant, Obj.WORKFLOWS)
    if not isinstance(viewer, Viewer):
        return viewer
    try:
        detail = workflows_routes.get_workflow_detail(name, session, viewer.caller, version)
        versions = workflows_routes.list_versions_of_workflow(
            name, session, viewer.caller, limit=MAX_SHOWN, offset=0
        )
    except ApiError as exc:
        return finish(error_page("Not found", exc.detail, exc.status_code, viewer), request, viewer)
    inputs = "".join(
        f"<tr><th>{escape(v.name)}</th><td><code>{escape(v.type.describe())}</code></td>"
        f"<td>{escape(json.dumps(v.default)) if v.has_default else 'required'}</td></tr>"
        for v in detail.interface.inputs
    )
    outputs = "".join(
        f"<tr><th>{escape(v.name)}</th><td><code>{escape(v.type.describe())}</code></td></tr>"
        for v in detail.interface.outputs
    )
    others = "".join(
        f'<tr><td><a href="{_workflow_url(name, viewer.tenant, v.version)}">'
        f"{escape(v.version)}</a>{' (shown)' if v.version == detail.version else ''}</td>"
        f"<td>{when(v.created_at)}</td><td><code>{escape(v.bundle_digest[:12])}</code></td></tr>"
        for v in versions
    )
    placed = dag.layout(detail.spec.model_dump(mode="json"))
    executions = f"/ui/executions?{urlencode({'tenant': viewer.tenant, 'workflow': name})}"
    form = (
        "<h2>Launch</h2>" + launch_form(name, detail.version, detail.interface, viewer)
        if viewer.caller.may(session, Obj.EXECUTIONS, Act.WRITE)
        else ""
    )
    body = (
        f"<p><b>version {escape(detail.version)}</b> <span class=muted>registered "
        f"{when(detail.created_at)} · code bundle {escape(detail.bundle_digest[:12])}</span> · "
        f'<a href="{executions}">its executions</a></p>'
        f"<h2>Inputs</h2><table class=values>{inputs or '<tr><td>none</td></tr>'}</table>"
        f"<h2>Outputs</h2><table class=values>{outputs or '<tr><td>none</td></tr>'}</table>"
        f"<h2>Graph</h2><div class=dagbox>{dag.render_svg(placed, {})}</div>{form}"
        "<h2>Versions</h2><table class=list><thead><tr><th>Version</th><th>Registered</th>"
        f"<th>Code bundle</th></tr></thead><tbody>{others}</tbody></table>"
    )
    return finish(page(f"Workflow {name}", body, viewer=viewer), request, viewer)


@router.get("/ui/clusters")
def clusters_page(
    request: Request,
    session: SessionDep,
    authorizer: AuthorizerDep,
    settings: SettingsDep,
    tenant: str | None = None,
) -> Response:
    """The clusters granted to the tenant, as `GET /api/v1/clusters` answers."""
    viewer = viewer_of(request, session, authorizer, tenant, Obj.CLUSTERS)
    if not isinstance(viewer, Viewer):
        return viewer
    clusters = clusters_routes.list_clusters(session, settings, viewer.caller)
    rows = "".join(_cluster_row(c) for c in clusters)
    body = (
        "<table class=list><thead><tr><th>Cluster</th><th>Status</th><th>Agent</th>"
        "<th>Last heartbeat</th><th>Active attempts</th><th>CPU</th><th>Memory</th>"
        f"<th>GPUs (in use / allocatable)</th></tr></thead><tbody>{rows}</tbody></table>"
        if clusters
        else "<p class=muted>No cluster is granted to this tenant.</p>"
    )
    body += clusters_admin_section(session, viewer)
    return finish(page("Clusters", body, viewer=viewer), request, viewer)


def _cluster_row(cluster: ClusterPublic) -> str:
    capacity = cluster.capacity
    if capacity is None:
        cpu = memory = gpus = "<span class=muted>no heartbeat yet</span>"
    else:
        cpu = f"{capacity.cpu_in_use:g} / {capacity.cpu_allocatable:g}"
        memory = (
            f"{format_bytes(capacity.memory_bytes_in_use)} / "
            f"{format_bytes(capacity.memory_bytes_allocatable)}"
        )
        gpus = (
            "<br>".join(
                f"{escape(g.gpu_type)}: {g.in_use} / {g.allocatable}" for g in capacity.gpus
            )
            or "none"
        )
    return (
        f'<tr data-cluster="{escape(cluster.name)}"><td>{escape(cluster.name)}</td>'
        f"<td>{badge(cluster.status.value)}</td><td>{escape(cluster.agent_version or '—')}</td>"
        f"<td>{when(cluster.last_heartbeat_at)}</td><td>{cluster.active_attempts}</td>"
        f"<td>{cpu}</td><td>{memory}</td><td>{gpus}</td></tr>"
    )


@router.get("/ui/usage")
def usage_page(
    request: Request,
    session: SessionDep,
    authorizer: AuthorizerDep,
    tenant: str | None = None,
) -> Response:
    """`/dashboard`'s quotas, usage and top workflows, for the tenants whose usage the principal
    may read, under the console's sign-in."""
    viewer = viewer_of(request, session, authorizer, tenant)
    if not isinstance(viewer, Viewer):
        return viewer
    tenants = usage_tenants(session, authorizer, viewer.caller.principal_id)
    body = "".join(tenant_section(session, t) + waiting_section(session, t) for t in tenants) or (
        "<p>You may not read the usage of any tenant.</p>"
    )
    if platform_may(session, viewer.caller, Act.READ):
        audit = f"/ui/audit?{urlencode({'tenant': viewer.tenant})}"
        body = f'<p><a id=audit-link href="{audit}">Audit log</a> (platform admins)</p>' + body
    return finish(page("Usage", body, viewer=viewer), request, viewer)
