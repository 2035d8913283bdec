"""The web console under `/ui`, in process: sign-in, cookies, cross-site request forgery,
rights (a viewer cannot cancel, another tenant sees nothing), and what the pages show.

The real browser tests (live updates, screenshots, measurements) are in
tests/e2e/test_console_browser.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
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


# --- launched by, time range, timeline ----------------------------------------------------------


def test_the_list_filters_by_who_launched_and_when_as_the_api_does(
    app: FastAPI, browser: TestClient, admin: str, api: TestClient, execution: dict[str, Any]
) -> None:
    dev = _token(app, "devi", "acme", Role.DEVELOPER)
    with TestClient(app, headers=bearer(dev)) as as_dev:
        mine = as_dev.post("/api/v1/executions", json={"workflow": WORKFLOW, "inputs": {"n": 2}})
    assert mine.status_code == 201 and mine.json()["launched_by"] == "devi"
    by_admin = execution["launched_by"]
    assert by_admin and by_admin != "devi"
    ours, theirs = mine.json()["id"], execution["id"]
    listed = api.get("/api/v1/executions", params={"launched_by": "devi"}).json()
    assert [e["id"] for e in listed] == [ours]
    sign_in(browser, admin)
    page = browser.get("/ui/executions", params={"by": "devi"}).text
    assert ours in page and theirs not in page and "<td>devi</td>" in page
    assert 'name=by value="devi"' in page and "older →" not in page  # one execution: one page
    refresh = re.search(r'data-refresh="([^"]+)"', page)
    assert refresh and "by=devi" in refresh.group(1)  # the auto-refresh keeps the filter
    created = api.get(f"/api/v1/executions/{ours}").json()["created_at"]
    moment = datetime.fromisoformat(created)
    later = (moment + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    earlier = (moment - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    assert ours in browser.get("/ui/executions", params={"after": earlier}).text
    assert ours not in browser.get("/ui/executions", params={"after": later}).text
    assert ours in browser.get("/ui/executions", params={"before": later}).text
    assert ours not in browser.get("/ui/executions", params={"before": earlier}).text
    api_after = api.get("/api/v1/executions", params={"created_after": later}).json()
    assert api_after == []
    # Times whose UTC falls outside years 1-9999 are the earliest or latest (the fuzzer's
    # 0001-01-01T00:00+05:00 was an OverflowError, a 500).
    for edge, found in (("0001-01-01T00:00:00+05:00", True), ("9999-12-31T23:00:00-05:00", False)):
        answer = api.get("/api/v1/executions", params={"created_after": edge})
        assert answer.status_code == 200 and (ours in [e["id"] for e in answer.json()]) is found
        answer = api.get("/api/v1/executions", params={"created_before": edge})
        assert answer.status_code == 200 and (ours in [e["id"] for e in answer.json()]) is not found
    bad = browser.get("/ui/executions", params={"after": "yesterday"})
    assert bad.status_code == 200 and "after: &#x27;yesterday&#x27; is not a time" in bad.text
    assert ours in bad.text  # the bad filter is left out, said so, never a stack trace
    # Paging keeps the filters.
    paged = browser.get("/ui/executions", params={"before": later, "size": 1}).text
    older = re.search(r'<a rel=next href="([^"]+)">', paged)
    assert older and "before=" in older.group(1), paged


def _add_waiting_attempt(app: FastAPI, execution_id: str, reason: str) -> None:
    sessions: sessionmaker[Session] = app.state.session_factory
    with sessions() as session:
        # Test data only: product code moves attempts through the transition policy.
        session.add(
            TaskAttempt(
                id="at-3",
                execution_id=execution_id,
                node_id="n1",
                task_name="examples.train.fit",
                attempt_number=1,
                status="PENDING",
                inputs_uri="file:///in",
                outputs_uri="file:///out",
                gpu_type=None,
                pending_reason=reason,
            )
        )
        session.commit()


def test_the_timeline_shows_each_attempt_its_cluster_and_why_it_waits(
    app: FastAPI, browser: TestClient, admin: str, execution: dict[str, Any]
) -> None:
    _add_attempts(app, execution["id"])
    _add_waiting_attempt(app, execution["id"], "quota: needs 1 A100, 2/2 in use")
    sign_in(browser, admin)
    page = browser.get(f"/ui/executions/{execution['id']}").text
    gantt = re.search(r"<svg class=gantt.*?</svg>", page)
    assert gantt, page
    spans = re.findall(
        r'<g class=span data-attempt="(at-\d)" data-wait="[\d.]+" '
        r'data-reason="(\w*)">',
        gantt.group(0),
    )
    assert spans == [("at-1", ""), ("at-2", ""), ("at-3", "quota")]
    assert "gpu-west" in gantt.group(0)
    assert "<b>quota</b> quota: needs 1 A100, 2/2 in use" in page  # waiting work, and why
    fragment = browser.get(f"/ui/executions/{execution['id']}?fragment=attempts").text
    assert "<svg class=gantt" in fragment and "<nav>" not in fragment
    api_view = browser.get(f"/api/v1/executions/{execution['id']}", headers=bearer(admin)).json()
    waiting = [a for a in api_view["attempts"] if a["id"] == "at-3"][0]
    assert waiting["pending_reason"] == "quota: needs 1 A100, 2/2 in use"


def test_the_usage_page_lists_waiting_work_and_gpus_per_type(
    app: FastAPI, browser: TestClient, admin: str, execution: dict[str, Any]
) -> None:
    _add_waiting_attempt(app, execution["id"], "unschedulable: no cluster has an H100")
    sign_in(browser, admin)
    shown = browser.get("/ui/usage").text
    row = re.search(rf"<tr data-waiting={execution['id']}>.*?</tr>", shown)
    assert row, shown
    assert "<b>unschedulable</b> unschedulable: no cluster has an H100" in row.group(0)
    assert "id=audit-link" in shown  # a platform admin
    browser.cookies.clear()
    sign_in(browser, _token(app, "bea", "beta", Role.TENANT_ADMIN))
    other = browser.get("/ui/usage").text
    assert execution["id"] not in other and "Nothing waits to start" in other
    assert "id=audit-link" not in other


# --- launch form ---------------------------------------------------------------------------------


def test_the_launch_form_launches_with_the_apis_validation(
    app: FastAPI, browser: TestClient, admin: str, execution: dict[str, Any], launcher: FakeLauncher
) -> None:
    csrf = sign_in(browser, admin)
    detail = browser.get(f"/ui/workflows/{WORKFLOW}").text
    assert "<form class=launch id=launch" in detail
    assert re.search(r"<input type=number step=1 name=in\.n value=\"\" required>", detail)
    assert re.search(r'<input type=number step=any name=in\.lr value="0.1">', detail)
    url = f"/ui/workflows/{WORKFLOW}/launch"
    form = {"csrf": form_csrf(browser.get(f"/ui/workflows/{WORKFLOW}")), "tenant": "acme"}
    form["version"] = execution["version"]
    started = list(launcher.started)
    # A value the API refuses: its message next to the field, nothing launched.
    bad = browser.post(url, data={**form, "in.n": "many", "in.lr": "0.5"}, headers={"Origin": SITE})
    assert bad.status_code == 422, bad.text
    assert "Nothing was launched" in bad.text
    error = re.search(r"<span class=error data-error-for=in\.n>([^<]+)</span>", bad.text)
    assert error and "int" in error.group(1), bad.text
    assert '<input type=text name=in.n value="many"' in bad.text  # kept, visible
    assert 'value="0.5"' in bad.text
    assert launcher.started == started
    missing = browser.post(url, data={**form, "in.lr": "0.5"}, headers={"Origin": SITE})
    assert missing.status_code == 422 and "data-error-for=in.n" in missing.text
    # Forged: no token, a wrong token, another site.
    for forged, headers in (
        ({**form, "csrf": ""}, {"Origin": SITE}),
        ({**form, "csrf": "x" * 40}, {"Origin": SITE}),
        (form, {"Origin": EVIL}),
    ):
        refused = browser.post(url, data={**forged, "in.n": "4"}, headers=headers)
        assert refused.status_code == 403, refused.text
    assert launcher.started == started
    # A good one: launched as the API launches, then its page.
    good = browser.post(url, data={**form, "in.n": "4"}, headers={"Origin": SITE})
    assert good.status_code == 200 and "/ui/executions/ex-" in str(good.url), good.text
    new_id = str(good.url).split("/ui/executions/")[1].split("?")[0]
    assert launcher.started == [*started, new_id]
    created = browser.get(f"/api/v1/executions/{new_id}", headers=bearer(admin)).json()
    assert created["inputs"] == {"n": 4, "lr": 0.1} and created["launched_by"]
    assert csrf  # the sign-in page's token was the session's


def test_a_viewer_gets_no_launch_form_and_a_forged_launch_is_refused(
    app: FastAPI, browser: TestClient, execution: dict[str, Any], launcher: FakeLauncher
) -> None:
    sign_in(browser, _token(app, "vera", "acme", Role.VIEWER))
    detail = browser.get(f"/ui/workflows/{WORKFLOW}")
    assert detail.status_code == 200 and "id=launch" not in detail.text
    refused = browser.post(
        f"/ui/workflows/{WORKFLOW}/launch",
        data={"csrf": form_csrf(detail), "tenant": "acme", "in.n": "3"},
        headers={"Origin": SITE},
    )
    assert refused.status_code == 403 and "may not launch executions" in refused.text
    assert launcher.started == [execution["id"]]


# --- admins: audit log, grants, token rotation ---------------------------------------------------


def test_the_audit_log_is_for_platform_admins_only(
    app: FastAPI, browser: TestClient, admin: str, execution: dict[str, Any]
) -> None:
    _token(app, "bob", "beta", Role.TENANT_ADMIN)
    sign_in(browser, admin)
    log = browser.get("/ui/audit")
    assert log.status_code == 200
    api_log = browser.get("/api/v1/admin/audit", headers=bearer(admin)).json()["entries"]
    assert api_log and all(f"<td>{e['action']}</td>" in log.text for e in api_log[:20])
    browser.cookies.clear()
    sign_in(browser, _token(app, "tina", "acme", Role.TENANT_ADMIN))
    refused = browser.get("/ui/audit")
    assert refused.status_code == 403 and "may not read the audit log" in refused.text


def test_admins_see_grants_and_rotate_an_agent_token(
    app: FastAPI, browser: TestClient, admin: str, execution: dict[str, Any]
) -> None:
    _add_attempts(app, execution["id"])  # registers cluster gpu-west
    csrf = sign_in(browser, admin)
    shown = browser.get("/ui/clusters").text
    row = re.search(r"<tr data-grants=gpu-west>.*?</tr>", shown)
    assert row and "acme" in row.group(0) and "Rotate agent token" in row.group(0), shown
    csrf = form_csrf(browser.get("/ui/clusters"))
    forged = browser.post(
        "/ui/clusters/gpu-west/rotate-token", data={"csrf": "no"}, headers={"Origin": SITE}
    )
    assert forged.status_code == 403
    rotated = browser.post(
        "/ui/clusters/gpu-west/rotate-token", data={"csrf": csrf}, headers={"Origin": SITE}
    )
    assert rotated.status_code == 200, rotated.text
    token = re.search(r"<pre id=agent-token>([^<]+)</pre>", rotated.text)
    assert token and len(token.group(1)) > 20
    assert "<td>cluster.rotate-token</td><td>gpu-west</td>" in browser.get("/ui/audit").text
    filtered = browser.get("/ui/audit", params={"action": "rotate"}).text
    assert "<td>cluster.rotate-token</td>" in filtered and "<td>role.grant</td>" not in filtered
    nothing = browser.get("/ui/audit", params={"action": "no-such-action"}).text
    assert "No audit entries match" in nothing and "name=action" in nothing
    browser.cookies.clear()
    tina = _token(app, "tina", "acme", Role.TENANT_ADMIN)
    csrf = sign_in(browser, tina)
    assert "data-grants=" not in browser.get("/ui/clusters").text
    refused = browser.post(
        "/ui/clusters/gpu-west/rotate-token", data={"csrf": csrf}, headers={"Origin": SITE}
    )
    assert refused.status_code == 403 and "may not rotate agent tokens" in refused.text


def test_a_refused_recovery_is_a_page_that_says_why(
    browser: TestClient, admin: str, execution: dict[str, Any], launcher: FakeLauncher
) -> None:
    csrf = sign_in(browser, admin)
    refused = browser.post(
        f"/ui/executions/{execution['id']}/recover",
        data={"csrf": csrf, "tenant": "acme"},
        headers={"Origin": SITE},
    )
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"].startswith("text/html")
    assert "Could not recover" in refused.text and "QUEUED" in refused.text
    assert launcher.started == [execution["id"]]


def test_a_relaunch_is_launched_by_who_relaunched_it(
    app: FastAPI, browser: TestClient, execution: dict[str, Any]
) -> None:
    csrf = sign_in(browser, _token(app, "devi", "acme", Role.DEVELOPER))
    again = browser.post(
        f"/ui/executions/{execution['id']}/relaunch",
        data={"csrf": csrf, "tenant": "acme"},
        headers={"Origin": SITE},
    )
    assert again.status_code == 200 and "launched by devi" in again.text, again.text
    assert execution["launched_by"] != "devi"
    mine = browser.get("/ui/executions", params={"by": "devi"}).text
    assert mine.count("<tr data-execution=") == 1 and execution["id"] not in mine
