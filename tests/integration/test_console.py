"""The web console under `/ui`, in process: sign-in, cookies, cross-site request forgery,
rights (a viewer cannot cancel, another tenant sees nothing), and what the pages show.

The real browser tests (live updates, screenshots, measurements) are in
tests/e2e/test_console_browser.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from control_plane.api.web_session import COOKIE, CSRF_COOKIE
from control_plane.auth.rbac import Authorizer
from control_plane.db.models import Cluster, TaskAttempt
from fleetflow.api_models.tenancy import Role
from fleetflow.ir import WorkflowSpec
from fleetflow.storage import LocalBlobStore, attempt_log_uri
from tests.integration.auth import admin_token, bearer, principal_token
from tests.integration.test_api import WORKFLOW, FakeLauncher, _app, register, upload_bundle

SITE = "http://testserver"
EVIL = "https://evil.example"


@pytest.fixture
def launcher() -> FakeLauncher:
    return FakeLauncher()


@pytest.fixture
def blob_store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


@pytest.fixture
def app(
    session_factory: sessionmaker[Session], launcher: FakeLauncher, blob_store: LocalBlobStore
) -> FastAPI:
    return _app(session_factory, launcher, blob_store)


@pytest.fixture
def admin(app: FastAPI) -> str:
    return admin_token(app)


@pytest.fixture
def api(app: FastAPI, admin: str) -> Iterator[TestClient]:
    with TestClient(app, headers=bearer(admin)) as client:
        yield client


def _token(app: FastAPI, name: str, tenant: str, role: Role) -> str:
    authorizer: Authorizer = app.state.authorizer
    return principal_token(app.state.session_factory, authorizer, name, tenant=tenant, role=role)


@pytest.fixture
def execution(api: TestClient, workflow_spec: WorkflowSpec) -> dict[str, Any]:
    """A QUEUED execution of tenant acme whose first node has a failed and a running attempt."""
    register(api, workflow_spec, upload_bundle(api))
    created = api.post("/api/v1/executions", json={"workflow": WORKFLOW, "inputs": {"n": 3}})
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


def _add_attempts(app: FastAPI, execution_id: str) -> None:
    sessions: sessionmaker[Session] = app.state.session_factory
    blobs: LocalBlobStore = app.state.blob_store
    inputs = blobs.put(f"attempts/{execution_id}/at-2/inputs.json", b"{}")
    log = Path(attempt_log_uri(inputs).removeprefix("file://"))  # where the agent copies it
    log.write_text("step 1 of 3\n")
    with sessions() as session:
        # Test data only: product code moves attempts through the transition policy.
        session.add(Cluster(id="cl-1", name="gpu-west", token_hash="h" * 64))
        session.flush()
        session.add_all(
            [
                TaskAttempt(
                    id="at-1",
                    execution_id=execution_id,
                    node_id="n0",
                    task_name="examples.train.prepare",
                    attempt_number=1,
                    status="FAILED",
                    cluster_id="cl-1",
                    inputs_uri=inputs,
                    outputs_uri="file:///out",
                    error_message="ValueError: n must be even",
                    error_traceback='Traceback (most recent call last):\n  File "train.py"\n'
                    "ValueError: n must be even <script>",
                ),
                TaskAttempt(
                    id="at-2",
                    execution_id=execution_id,
                    node_id="n0",
                    task_name="examples.train.prepare",
                    attempt_number=2,
                    status="RUNNING",
                    cluster_id="cl-1",
                    inputs_uri=inputs,
                    outputs_uri="file:///out",
                ),
            ]
        )
        session.commit()


def form_csrf(page: httpx.Response) -> str:
    match = re.search(r'name=csrf value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


def sign_in(browser: TestClient, token: str) -> str:
    """Sign in through the console's form; the anti-forgery token of the next page."""
    csrf = form_csrf(browser.get("/ui/signin"))
    page = browser.post(
        "/ui/signin",
        data={"token": token, "csrf": csrf, "next": "/ui/executions"},
        headers={"Origin": SITE},
    )
    assert page.status_code == 200 and "Sign out" in page.text, page.text
    return form_csrf(page)


@pytest.fixture
def browser(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


# --- sign-in -----------------------------------------------------------------------------------


def test_root_leads_to_the_console_and_every_page_needs_sign_in(
    browser: TestClient, execution: dict[str, Any]
) -> None:
    assert browser.get("/", follow_redirects=False).headers["location"] == "/ui"
    landing = browser.get("/ui", follow_redirects=True)
    assert landing.url.path == "/ui/signin" and "API token" in landing.text
    exid = execution["id"]
    for path in ("/ui/executions?status=RUNNING", f"/ui/executions/{exid}"):
        page = browser.get(path, follow_redirects=False)
        assert page.status_code == 303, path
        assert page.headers["location"].startswith("/ui/signin?next=%2Fui%2Fexecutions"), path
    for path in (f"/ui/executions/{exid}/events", f"/ui/executions/{exid}/attempts/at-1/log"):
        assert browser.get(path).status_code == 401, path


def test_signing_in_sets_a_strict_httponly_cookie_and_signing_out_clears_it(
    browser: TestClient, admin: str, execution: dict[str, Any]
) -> None:
    csrf = form_csrf(browser.get("/ui/signin"))
    done = browser.post(
        "/ui/signin",
        data={"token": admin, "csrf": csrf, "next": f"/ui/executions/{execution['id']}"},
        headers={"Origin": SITE},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert done.headers["location"] == f"/ui/executions/{execution['id']}"
    cookies = done.headers.get_list("set-cookie")
    session_cookie = next(c for c in cookies if c.startswith(f"{COOKIE}="))
    assert "HttpOnly" in session_cookie and "SameSite=strict" in session_cookie
    assert "Path=/ui" in session_cookie
    csrf_cookie = next(c for c in cookies if c.startswith(f"{CSRF_COOKIE}="))
    assert "HttpOnly" in csrf_cookie and "SameSite=strict" in csrf_cookie
    page = browser.get("/ui/executions")
    assert page.status_code == 200 and execution["id"] in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy

    out = browser.post("/ui/signout", data={"csrf": form_csrf(page)}, headers={"Origin": SITE})
    assert out.url.path == "/ui/signin"
    assert browser.get("/ui/executions", follow_redirects=False).status_code == 303


def test_a_wrong_token_is_refused_and_next_cannot_leave_the_console(browser: TestClient) -> None:
    csrf = form_csrf(browser.get("/ui/signin"))
    page = browser.post(
        "/ui/signin",
        data={"token": "ff_nonsense", "csrf": csrf, "next": "https://evil.example/"},
        headers={"Origin": SITE},
    )
    assert page.status_code == 401 and "invalid, expired or revoked" in page.text
    assert 'name=next value="/ui/executions"' in page.text
    assert COOKIE not in browser.cookies


@pytest.mark.parametrize(
    ("headers", "use_token"),
    [
        ({"Origin": SITE}, False),  # no anti-forgery token
        ({"Origin": SITE}, "wrong"),  # a wrong one
        ({"Origin": EVIL}, True),  # the right one, from another site
        ({"Referer": f"{EVIL}/x.html"}, True),
        ({"Origin": "null"}, True),
    ],
)
def test_forged_posts_with_a_valid_cookie_are_refused(
    browser: TestClient,
    admin: str,
    execution: dict[str, Any],
    launcher: FakeLauncher,
    headers: dict[str, str],
    use_token: bool | str,
) -> None:
    csrf = sign_in(browser, admin)
    data = {"tenant": "acme"}
    if use_token is True:
        data["csrf"] = csrf
    elif use_token:
        data["csrf"] = "x" * 43
    for action in ("cancel", "relaunch", "recover"):
        refused = browser.post(
            f"/ui/executions/{execution['id']}/{action}", data=data, headers=headers
        )
        assert refused.status_code == 403, refused.text
        assert "Refused" in refused.text
    assert launcher.cancelled == [] and launcher.started == [execution["id"]]
    signed_out = browser.post("/ui/signout", data=data, headers=headers)
    assert signed_out.status_code == 403
    assert browser.get("/ui/executions").status_code == 200  # still signed in


# --- rights ------------------------------------------------------------------------------------


def test_a_writer_cancels_and_relaunches_from_the_page(
    browser: TestClient, admin: str, execution: dict[str, Any], launcher: FakeLauncher
) -> None:
    csrf = sign_in(browser, admin)
    exid = execution["id"]
    page = browser.get(f"/ui/executions/{exid}")
    assert ">Cancel</button>" in page.text and ">Relaunch</button>" in page.text
    cancelled = browser.post(
        f"/ui/executions/{exid}/cancel",
        data={"csrf": csrf, "tenant": "acme"},
        headers={"Origin": SITE},
    )
    assert cancelled.status_code == 200 and cancelled.url.path == f"/ui/executions/{exid}"
    assert launcher.cancelled == [exid]
    assert 'data-status="CANCELLED"' in cancelled.text
    assert ">Recover</button>" in cancelled.text and ">Cancel</button>" not in cancelled.text
    relaunched = browser.post(
        f"/ui/executions/{exid}/relaunch",
        data={"csrf": csrf, "tenant": "acme"},
        headers={"Origin": SITE},
    )
    assert relaunched.status_code == 200
    new_id = relaunched.url.path.rsplit("/", 1)[1]
    assert new_id != exid and launcher.started == [exid, new_id]
    assert f'relaunched from <a href="/ui/executions/{exid}?tenant=acme">' in relaunched.text


def test_a_viewer_sees_no_buttons_and_a_forged_cancel_is_refused(
    app: FastAPI, browser: TestClient, execution: dict[str, Any], launcher: FakeLauncher
) -> None:
    viewer = _token(app, "vera", "acme", Role.VIEWER)
    csrf = sign_in(browser, viewer)
    page = browser.get(f"/ui/executions/{execution['id']}")
    assert page.status_code == 200 and execution["id"] in page.text
    assert "<button type=submit name=do" not in page.text
    for action in ("cancel", "relaunch", "recover"):
        forged = browser.post(
            f"/ui/executions/{execution['id']}/{action}",
            data={"csrf": csrf, "tenant": "acme"},
            headers={"Origin": SITE},
        )
        assert forged.status_code == 403, forged.text
        assert "vera may not write executions in &#x27;acme&#x27;" in forged.text
    assert launcher.cancelled == [] and launcher.started == [execution["id"]]


def test_another_tenant_sees_nothing_of_the_execution(
    app: FastAPI, browser: TestClient, execution: dict[str, Any]
) -> None:
    _add_attempts(app, execution["id"])
    outsider = _token(app, "bob", "beta", Role.TENANT_ADMIN)
    sign_in(browser, outsider)
    exid = execution["id"]
    listed = browser.get("/ui/executions")
    assert listed.status_code == 200 and exid not in listed.text
    assert "No executions match" in listed.text
    for path in (
        f"/ui/executions/{exid}",
        f"/ui/executions/{exid}/events",
        f"/ui/executions/{exid}/attempts/at-2/log",
        f"/ui/executions/{exid}?fragment=attempts",
    ):
        page = browser.get(path)
        assert page.status_code == 404, path
        assert "not found" in page.text, path
        assert "step 1 of 3" not in page.text and "n must be even" not in page.text
    # Naming the other tenant does not help: bob holds no role there.
    for path in ("/ui/executions?tenant=acme", f"/ui/executions/{exid}?tenant=acme"):
        page = browser.get(path)
        assert page.status_code == 404 and "tenant &#x27;acme&#x27; not found" in page.text, path
        assert exid not in page.text


# --- what the pages show -------------------------------------------------------------------------


def test_the_list_filters_searches_and_pages(
    browser: TestClient, admin: str, api: TestClient, execution: dict[str, Any]
) -> None:
    second = api.post("/api/v1/executions", json={"workflow": WORKFLOW, "inputs": {"n": 1}}).json()
    sign_in(browser, admin)
    first_id, second_id = execution["id"], second["id"]
    both = browser.get("/ui/executions").text
    assert both.index(second_id) < both.index(first_id)  # newest first
    assert 'data-active="1"' in both  # unfinished executions: the script polls
    assert first_id not in browser.get("/ui/executions", params={"q": second_id[-6:]}).text
    assert second_id not in browser.get("/ui/executions", params={"status": "RUNNING"}).text
    assert first_id in browser.get("/ui/executions", params={"status": "QUEUED"}).text
    assert first_id not in browser.get("/ui/executions", params={"workflow": "other.flow"}).text
    assert first_id in browser.get("/ui/executions", params={"workflow": WORKFLOW}).text
    first_page = browser.get("/ui/executions", params={"size": 1}).text
    assert second_id in first_page and first_id not in first_page and "older →" in first_page
    second_page = browser.get("/ui/executions", params={"size": 1, "page": 2}).text
    assert first_id in second_page and "← newer" in second_page and "older →" not in second_page
    fragment = browser.get("/ui/executions", params={"fragment": 1})
    assert fragment.text.startswith("<div id=executions") and "<nav>" not in fragment.text


def test_the_execution_page_draws_the_graph_attempts_logs_and_values(
    app: FastAPI, browser: TestClient, admin: str, execution: dict[str, Any]
) -> None:
    _add_attempts(app, execution["id"])
    sign_in(browser, admin)
    exid = execution["id"]
    page = browser.get(f"/ui/executions/{exid}")
    assert page.status_code == 200
    assert re.search(r'<g class="node" data-node="n0" data-state="RUNNING"', page.text)
    assert re.search(r'<g class="node" data-node="n1" data-state="WAITING"', page.text)
    assert page.text.count("<path class=edge") == 1
    assert "gpu-west" in page.text and "ValueError: n must be even &lt;script&gt;" in page.text
    assert "<script>" not in page.text.replace("<script src=/ui/static/console.js defer>", "")
    assert "<th>n</th><td><pre>3</pre>" in page.text  # inputs
    log = browser.get(f"/ui/executions/{exid}/attempts/at-2/log")
    assert log.text == "step 1 of 3\n" and log.headers["x-attempt-state"] == "RUNNING"
    script = browser.get("/ui/static/console.js")
    assert script.status_code == 200 and "EventSource" in script.text
    assert browser.get("/ui/static/..%2Fpages.py").status_code == 404


def test_the_event_stream_sends_the_api_state_until_the_end(
    app: FastAPI, browser: TestClient, admin: str, execution: dict[str, Any]
) -> None:
    _add_attempts(app, execution["id"])
    csrf = sign_in(browser, admin)
    exid = execution["id"]
    cancelled = browser.post(
        f"/ui/executions/{exid}/cancel", data={"csrf": csrf, "tenant": "acme"}
    )  # a terminal execution: the stream sends one snapshot and ends
    assert cancelled.status_code == 200
    stream = browser.get(f"/ui/executions/{exid}/events")
    assert stream.headers["content-type"].startswith("text/event-stream")
    data = [json.loads(line[6:]) for line in stream.text.splitlines() if line.startswith("data: {")]
    assert data and data[0]["status"] == "CANCELLED"
    api_view = browser.get(f"/api/v1/executions/{exid}", headers=bearer(admin)).json()
    assert data[0]["attempts"] == [[a["id"], a["status"]] for a in api_view["attempts"]]
    assert set(data[0]["nodes"]) == {"n0", "n1"}
    assert "event: end" in stream.text


# --- workflows and clusters ---------------------------------------------------------------------


def test_workflow_pages_show_versions_interface_and_graph_to_their_tenant_only(
    app: FastAPI, browser: TestClient, admin: str, execution: dict[str, Any]
) -> None:
    for path in ("/ui/workflows", f"/ui/workflows/{WORKFLOW}", "/ui/clusters"):
        assert browser.get(path, follow_redirects=False).status_code == 303, path
    sign_in(browser, admin)
    listed = browser.get("/ui/workflows")
    assert listed.status_code == 200
    assert f'<tr data-workflow="{WORKFLOW}">' in listed.text
    assert "(n: int, lr: float = 0.1) -&gt; float" in listed.text
    detail = browser.get(f"/ui/workflows/{WORKFLOW}")
    assert detail.status_code == 200
    assert f"version {execution['version']}" in detail.text
    assert 'data-node="n0"' in detail.text and 'data-node="n1"' in detail.text
    assert "<th>n</th><td><code>int</code></td><td>required</td>" in detail.text
    assert "<th>lr</th><td><code>float</code></td><td>0.1</td>" in detail.text
    assert f"workflow={WORKFLOW}" in detail.text  # a link to its executions
    missing = browser.get("/ui/workflows/no.such.flow")
    assert missing.status_code == 404 and "not registered" in missing.text

    browser.cookies.clear()
    sign_in(browser, _token(app, "bob", "beta", Role.TENANT_ADMIN))
    assert WORKFLOW not in browser.get("/ui/workflows").text
    assert browser.get(f"/ui/workflows/{WORKFLOW}").status_code == 404


def test_the_clusters_page_shows_the_granted_clusters(
    app: FastAPI, browser: TestClient, admin: str, execution: dict[str, Any]
) -> None:
    _add_attempts(app, execution["id"])  # registers cluster gpu-west, never heard from
    sign_in(browser, admin)
    shown = browser.get("/ui/clusters")
    assert shown.status_code == 200
    row = re.search(r'<tr data-cluster="gpu-west">.*?</tr>', shown.text)
    assert row, shown.text
    assert 'data-state="offline"' in row.group(0) and "no heartbeat yet" in row.group(0)
    browser.cookies.clear()
    sign_in(browser, _token(app, "bob", "beta", Role.VIEWER))
    other = browser.get("/ui/clusters")
    assert other.status_code == 200 and "gpu-west" not in other.text
    assert "No cluster is granted" in other.text


def test_a_principal_of_several_tenants_picks_one(
    app: FastAPI, browser: TestClient, admin: str, execution: dict[str, Any]
) -> None:
    _token(app, "bob", "beta", Role.VIEWER)  # tenant beta exists, with no executions
    sign_in(browser, admin)  # a platform admin reads every tenant
    page = browser.get("/ui/executions")
    assert "<select name=tenant><option selected>acme</option><option>beta</option>" in page.text
    beta = browser.get("/ui/executions", params={"tenant": "beta"})
    assert beta.status_code == 200 and execution["id"] not in beta.text
    assert "admin · beta" in beta.text
    # An execution is looked up in the tenant the page names, as the API does.
    assert browser.get(f"/ui/executions/{execution['id']}?tenant=beta").status_code == 404
    assert browser.get(f"/ui/executions/{execution['id']}?tenant=acme").status_code == 200


def test_the_usage_page_is_the_dashboard_under_the_console_sign_in(
    app: FastAPI, browser: TestClient, admin: str, execution: dict[str, Any]
) -> None:
    assert browser.get("/ui/usage", follow_redirects=False).status_code == 303
    _token(app, "bob", "beta", Role.TENANT_ADMIN)
    sign_in(browser, admin)
    shown = browser.get("/ui/usage")
    assert shown.status_code == 200
    assert "<h2>acme</h2>" in shown.text and "<h2>beta</h2>" in shown.text  # a platform admin
    assert "GPU-seconds per hour" in shown.text
    browser.cookies.clear()
    sign_in(browser, _token(app, "bea", "beta", Role.TENANT_ADMIN))
    other = browser.get("/ui/usage")
    assert "<h2>beta</h2>" in other.text and "<h2>acme</h2>" not in other.text
