"""Webhook notifications of executions' terminal states, end to end: a real stack (control
plane, Temporal test server, agent) runs failing and succeeding workflows whose rules point at
a local HTTP receiver; deliveries are signed, retried with backoff, independent of each other
and of slow receivers, durable across a control-plane restart, and their log is the tenant's
admins' alone. The request checks (bad rules, private addresses refused by default, a launch
plan's rules inherited by its executions) run against the REST API in-process.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from control_plane.api.app import create_app
from control_plane.auth.rbac import Authorizer
from control_plane.db.models import Execution
from control_plane.db.repositories.notifications import Claimed
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.session import make_engine, make_session_factory, transaction
from control_plane.services.notifications import NotificationSender
from control_plane.settings import ApiSettings, DatabaseSettings, NotifySettings, Settings
from fleetflow.api_models.notifications import NotificationRule
from fleetflow.api_models.tenancy import Role
from fleetflow.bundle import build_bundle
from fleetflow.ir import WorkflowSpec
from fleetflow.loader import load_workflow
from fleetflow.storage import LocalBlobStore
from fleetflow.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from tests.integration.auth import bearer, principal_token
from tests.integration.stack import Stack, TemporalServer, start_stack
from tests.integration.test_api import FakeLauncher, make_bundle
from tests.pki import _leaf, make_pki

pytestmark = pytest.mark.integration

FLOWS = Path(__file__).parent / "workflows" / "notify_flows.py"
READ_TIMEOUT = 3.0


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A webhook receiver on loopback: `/ok/…` answers 200, `/flaky/<n>/…` 500 to its first
    n requests, `/down/…` 503 while `down` is set, `/hang/…` never answers in time."""

    url: str
    received: list[Received] = field(default_factory=list)
    down: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    state: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            me = state["receiver"]
            with me.lock:
                me.received.append(Received(self.path, dict(self.headers), body, time.time()))
                seen = sum(1 for r in me.received if r.path == self.path)
            kind = self.path.split("/")[1]
            if kind == "hang":
                me.release.wait(timeout=30)
                code = 200
            elif kind == "flaky":
                code = 500 if seen <= int(self.path.split("/")[2]) else 200
            elif kind == "down":
                code = 503 if me.down.is_set() else 200
            else:
                code = 200
            try:
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:  # the sender gave up on a hanging answer
                pass

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state["receiver"] = Receiver(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state["receiver"]
    state["receiver"].release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def notify_stack(
    tmp_path_factory: pytest.TempPathFactory, temporal_server: TemporalServer
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("notify-stack")
    env = {
        "FLEETFLOW_NOTIFY_ALLOW_PRIVATE": "true",  # the receiver is on loopback
        "FLEETFLOW_NOTIFY_BACKOFF_BASE_SECONDS": "0.2",
        "FLEETFLOW_NOTIFY_BACKOFF_MAX_SECONDS": "0.5",
        "FLEETFLOW_NOTIFY_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT),
        "FLEETFLOW_NOTIFY_CONNECT_TIMEOUT_SECONDS": "1",
        "FLEETFLOW_NOTIFY_MAX_ATTEMPTS": "5",
        "FLEETFLOW_NOTIFY_POLL_INTERVAL_SECONDS": "0.2",
    }
    stack = start_stack(home, f"sqlite:///{home / 'fleetflow.db'}", temporal_server, extra_env=env)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def versions(notify_stack: Stack) -> dict[str, str]:
    """The flows registered in the default tenant: workflow name -> version."""
    registered = {}
    for name in ("failing", "fine"):
        wf, root = load_workflow(FLOWS, name)
        digest, data = build_bundle(root)
        with notify_stack.client() as client:
            client.workflows.upload_bundle(digest, data)
            registered[wf.spec.name] = client.workflows.register_spec(wf.spec, digest).version
    return registered


def _rule(url: str, *on: str, fmt: str = "json") -> NotificationRule:
    return NotificationRule.model_validate({"on": list(on), "webhook": {"url": url}, "format": fmt})


def _run(stack: Stack, versions: dict[str, str], which: str, *rules: NotificationRule) -> str:
    name = next(n for n in versions if n.endswith("." + which))
    with stack.client() as client:
        created = client.executions.create(
            name, {"x": 21}, version=versions[name], notifications=rules
        )
    return str(created.id)


def _finished(stack: Stack, execution_id: str) -> str:
    def status() -> str | None:
        with stack.client() as client:
            current = client.executions.get(execution_id).status.value
        return current if current in ("SUCCEEDED", "FAILED", "CANCELLED") else None

    return str(stack.wait_for(status, f"execution {execution_id} to finish", timeout=90))


def _log(stack: Stack, execution_id: str) -> list[dict[str, Any]]:
    with stack.client() as client:
        return [d.model_dump(mode="json") for d in client.executions.notifications(execution_id)]


def _wait_log(stack: Stack, execution_id: str, what: str, until: Any) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = stack.wait_for(
        lambda: (lambda log: log if until(log) else None)(_log(stack, execution_id)),
        what,
        timeout=60,
    )
    return result


def test_a_failure_sends_one_signed_delivery_and_a_succeeded_rule_stays_quiet(
    notify_stack: Stack, versions: dict[str, str], receiver: Receiver
) -> None:
    execution_id = _run(
        notify_stack,
        versions,
        "failing",
        _rule(f"{receiver.url}/ok/failed", "failed"),
        _rule(f"{receiver.url}/ok/succeeded", "succeeded"),
        _rule(f"{receiver.url}/ok/slack", "failed", "cancelled", fmt="slack"),
    )
    assert _finished(notify_stack, execution_id) == "FAILED"
    log = _wait_log(
        notify_stack,
        execution_id,
        "both failure rules delivered",
        lambda log: len(log) == 2 and all(d["status"] == "delivered" for d in log),
    )
    assert [(d["rule_index"], d["state"], d["attempts"]) for d in log] == [
        (0, "failed", 1),
        (2, "failed", 1),
    ]
    assert log[0]["url"] == receiver.url + "/…" and log[0]["last_status_code"] == 200

    [request] = receiver.at("/ok/failed")
    assert receiver.at("/ok/succeeded") == []
    with notify_stack.client() as client:
        key = client.executions.signing_key().key
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert verify_signature(
        key, headers[TIMESTAMP_HEADER.lower()], request.body, headers[SIGNATURE_HEADER.lower()]
    )
    assert not verify_signature(
        key,
        headers[TIMESTAMP_HEADER.lower()],
        request.body + b" ",
        headers[SIGNATURE_HEADER.lower()],
    )
    event = json.loads(request.body)
    assert event["execution_id"] == execution_id
    assert (event["event"], event["state"], event["tenant"]) == (
        "execution.failed",
        "FAILED",
        "default",
    )
    assert event["workflow"].endswith(".failing") and "exploded on 21" in event["error"]
    assert event["url"] == f"{notify_stack.api_url}/api/v1/executions/{execution_id}"
    assert event["finished_at"] and event["started_at"]
    [slack] = receiver.at("/ok/slack")
    message = json.loads(slack.body)
    assert execution_id in message["text"] and message["blocks"][0]["type"] == "section"


def test_a_failing_receiver_is_retried_with_backoff_until_it_answers(
    notify_stack: Stack, versions: dict[str, str], receiver: Receiver
) -> None:
    execution_id = _run(
        notify_stack, versions, "fine", _rule(f"{receiver.url}/flaky/2/a", "succeeded")
    )
    assert _finished(notify_stack, execution_id) == "SUCCEEDED"
    [delivery] = _wait_log(
        notify_stack,
        execution_id,
        "the flaky receiver's delivery",
        lambda log: log and log[0]["status"] == "delivered",
    )
    assert (delivery["attempts"], delivery["last_status_code"], delivery["last_error"]) == (
        3,
        200,
        None,
    )
    tries = receiver.at("/flaky/2/a")
    assert len(tries) == 3
    # One delivery, three attempts: the same event each time, freshly signed.
    assert len({json.loads(t.body)["delivery_id"] for t in tries}) == 1


def test_a_hanging_receiver_holds_up_neither_the_execution_nor_other_deliveries(
    notify_stack: Stack, versions: dict[str, str], receiver: Receiver
) -> None:
    execution_id = _run(
        notify_stack,
        versions,
        "failing",
        _rule(f"{receiver.url}/hang/x", "failed"),
        _rule(f"{receiver.url}/ok/beside-hang", "failed"),
    )
    assert _finished(notify_stack, execution_id) == "FAILED"
    log = _wait_log(
        notify_stack,
        execution_id,
        "the delivery beside the hanging one",
        lambda log: len(log) == 2 and log[1]["status"] == "delivered",
    )
    # Delivered while the hanging receiver still holds its first attempt.
    assert log[0]["status"] == "pending" and log[0]["attempts"] == 0
    assert receiver.at("/hang/x"), "the hanging receiver was called"
    hung = _wait_log(
        notify_stack,
        execution_id,
        "the hanging attempt to time out",
        lambda log: log[0]["attempts"] >= 1,
    )[0]
    assert "Timeout" in (hung["last_error"] or ""), hung


def test_a_pending_delivery_survives_a_control_plane_restart(
    notify_stack: Stack, versions: dict[str, str], receiver: Receiver
) -> None:
    receiver.down.set()
    execution_id = _run(
        notify_stack, versions, "failing", _rule(f"{receiver.url}/down/r", "failed")
    )
    assert _finished(notify_stack, execution_id) == "FAILED"
    _wait_log(
        notify_stack,
        execution_id,
        "a refused attempt",
        lambda log: log and log[0]["attempts"] >= 1 and log[0]["status"] == "pending",
    )
    notify_stack.restart_control_plane()
    receiver.down.clear()
    [delivery] = _wait_log(
        notify_stack,
        execution_id,
        "the delivery after the restart",
        lambda log: log[0]["status"] == "delivered",
    )
    assert delivery["last_status_code"] == 200 and delivery["attempts"] >= 2


def test_the_delivery_log_is_for_the_tenants_admins_only(
    notify_stack: Stack, versions: dict[str, str], receiver: Receiver
) -> None:
    execution_id = _run(
        notify_stack, versions, "failing", _rule(f"{receiver.url}/ok/private", "failed")
    )
    engine = make_engine(notify_stack.database_url)
    sessions = make_session_factory(engine)
    try:
        authorizer = Authorizer(engine)
        outsider = principal_token(
            sessions, authorizer, "mallory", tenant="hostile", role=Role.TENANT_ADMIN
        )
        viewer = principal_token(sessions, authorizer, "vic", tenant="default", role=Role.VIEWER)
        developer = principal_token(
            sessions, authorizer, "dee", tenant="default", role=Role.DEVELOPER
        )
    finally:
        engine.dispose()
    path = f"{notify_stack.api_url}/api/v1/executions/{execution_id}/notifications"
    assert httpx.get(path, headers=bearer(outsider)).status_code == 404
    for token in (viewer, developer):
        refused = httpx.get(path, headers=bearer(token))
        assert refused.status_code == 403, refused.text
        assert "may not read notifications" in refused.json()["detail"]
        key = httpx.get(
            f"{notify_stack.api_url}/api/v1/notifications/signing-key", headers=bearer(token)
        )
        assert key.status_code == 403
    # The outsider's own signing key is its tenant's, not the default tenant's.
    with notify_stack.client() as client:
        ours = client.executions.signing_key().key
    theirs = httpx.get(
        f"{notify_stack.api_url}/api/v1/notifications/signing-key", headers=bearer(outsider)
    )
    assert theirs.status_code == 200 and theirs.json()["key"] != ours
    rotated = httpx.post(
        f"{notify_stack.api_url}/api/v1/notifications/signing-key/rotate",
        headers=bearer(outsider),
    )
    assert rotated.status_code == 200 and rotated.json()["key"] != theirs.json()["key"]
    with notify_stack.client() as client:
        assert client.executions.signing_key().key == ours
        audited = [(e.action, e.actor, e.target) for e in client.admin.audit_log()]
    assert ("notifications.rotate_key", "mallory", "hostile") in audited


# --- the REST API in-process: rules as requests carry them --------------------------------


@pytest.fixture
def api(
    session_factory: sessionmaker[Session], tmp_path: Path, workflow_spec: WorkflowSpec
) -> Iterator[tuple[TestClient, sessionmaker[Session]]]:
    settings = Settings(
        database=DatabaseSettings(url="sqlite://"), api=ApiSettings(), notify=NotifySettings()
    )
    app = create_app(
        settings,
        session_factory=session_factory,
        launcher=FakeLauncher(),
        blob_store=LocalBlobStore(tmp_path / "blobs"),
    )
    token = principal_token(
        session_factory, app.state.authorizer, "dev", tenant="alpha", role=Role.DEVELOPER
    )
    with TestClient(app, headers=bearer(token)) as client:
        body, digest = make_bundle()
        assert client.put(f"/api/v1/bundles/{digest}", content=body).status_code == 201
        registered = client.post(
            "/api/v1/workflows",
            json={
                "spec": workflow_spec.model_dump(mode="json"),
                "bundle_digest": digest,
                "version": "v1",
            },
        )
        assert registered.status_code == 201, registered.text
        yield client, session_factory


def _hook(url: str = "https://hooks.example.com/services/T0/B0/s3cret", **fields: Any) -> Any:
    return {"on": ["failed"], "webhook": {"url": url}, **fields}


@pytest.mark.parametrize(
    ("notifications", "field", "words"),
    [
        ([_hook("http://127.0.0.1:9/x")], "notifications[0].webhook.url", "loopback"),
        ([_hook("http://10.1.2.3/x")], "notifications[0].webhook.url", "private"),
        ([_hook("http://169.254.169.254/latest")], "notifications[0].webhook.url", "link-local"),
        ([_hook("http://[::1]:8080/")], "notifications[0].webhook.url", "loopback"),
        ([_hook("http://localhost:8080/")], "notifications[0].webhook.url", "loopback"),
        ([_hook(), _hook("http://192.168.0.1")], "notifications[1].webhook.url", "private"),
        ([_hook("ftp://example.com/x")], "notifications[0].webhook.url", "http or https"),
        ([_hook("https://user:pw@example.com/")], "notifications[0].webhook.url", "credentials"),
        ([_hook(on=["timed_out"])], "notifications[0].on[0]", "succeeded"),
        ([_hook(on=[])], "notifications[0].on", "at least 1"),
        ([_hook(on=["failed", "failed"])], "notifications[0].on", "twice"),
        ([_hook(format="xml")], "notifications[0].format", "json"),
        ([_hook()] * 11, "notifications", "at most 10"),
    ],
)
def test_bad_rules_are_refused_naming_the_field(
    api: tuple[TestClient, sessionmaker[Session]],
    workflow_spec: WorkflowSpec,
    notifications: list[Any],
    field: str,
    words: str,
) -> None:
    client, _ = api
    for path, body in (
        ("/api/v1/executions", {"workflow": workflow_spec.name, "inputs": {"n": 1}}),
        ("/api/v1/launchplans", {"name": "p", "workflow": workflow_spec.name}),
    ):
        refused = client.post(path, json={**body, "notifications": notifications})
        assert refused.status_code == 422, refused.text
        errors = refused.json()["errors"]
        assert any(e["field"] == field and words in e["message"] for e in errors), errors


def test_a_launch_plans_rules_go_with_its_executions_and_read_back_redacted(
    api: tuple[TestClient, sessionmaker[Session]], workflow_spec: WorkflowSpec
) -> None:
    client, sessions = api
    rules = [_hook(), _hook("https://ops.example.com:8443/", on=["succeeded"], format="slack")]
    created = client.post(
        "/api/v1/launchplans",
        json={"name": "p", "workflow": workflow_spec.name, "notifications": rules},
    )
    assert created.status_code == 201, created.text
    # The path of a webhook URL is often its secret (Slack's): answers show scheme and host.
    assert created.json()["notifications"] == [
        {"on": ["failed"], "url": "https://hooks.example.com/…", "format": "json"},
        {"on": ["succeeded"], "url": "https://ops.example.com:8443", "format": "slack"},
    ]
    launched = client.post("/api/v1/launchplans/p/launch", json={"inputs": {"n": 2}})
    assert launched.status_code == 201, launched.text
    with sessions() as session:
        execution = session.get(Execution, launched.json()["id"])
        assert execution is not None
        assert execution.notifications == [
            NotificationRule.model_validate(rule).model_dump(mode="json") for rule in rules
        ]
    # An execution's own rules are kept as given, and a relaunch carries its source's.
    own = client.post(
        "/api/v1/executions",
        json={"workflow": workflow_spec.name, "inputs": {"n": 1}, "notifications": [_hook()]},
    )
    assert own.status_code == 201, own.text
    again = client.post(f"/api/v1/executions/{own.json()['id']}/relaunch", json={})
    assert again.status_code == 201, again.text
    plain = client.post(
        "/api/v1/executions", json={"workflow": workflow_spec.name, "inputs": {"n": 1}}
    )
    assert plain.status_code == 201, plain.text
    with sessions() as session:
        stored = {
            row.id: row.notifications
            for row in session.query(Execution).filter(
                Execution.id.in_([own.json()["id"], again.json()["id"], plain.json()["id"]])
            )
        }
    rule = NotificationRule.model_validate(_hook()).model_dump(mode="json")
    assert stored == {
        own.json()["id"]: [rule],
        again.json()["id"]: [rule],
        plain.json()["id"]: None,
    }


def test_the_cli_sets_rules_and_shows_the_log(
    notify_stack: Stack, versions: dict[str, str], receiver: Receiver
) -> None:
    failing = next(n for n in versions if n.endswith(".failing"))
    bad = notify_stack.cli(
        "launchplans", "create", "alerts", failing, "--notify-webhook", "ftp://x", "--json"
    )
    assert bad.returncode == 2 and "webhook.url" in bad.stderr, bad.stderr
    created = notify_stack.cli(
        "launchplans",
        "create",
        "alerts",
        failing,
        "--default",
        "x=3",
        "--notify-webhook",
        f"{receiver.url}/ok/cli",
        "--notify-on",
        "failed,cancelled",
        "--json",
    )
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["notifications"] == [
        {"on": ["failed", "cancelled"], "url": receiver.url + "/…", "format": "json"}
    ]
    launched = notify_stack.cli("launchplans", "launch", "alerts", "--json")
    assert launched.returncode == 0, launched.stderr
    execution_id = json.loads(launched.stdout)["id"]
    assert _finished(notify_stack, execution_id) == "FAILED"
    _wait_log(
        notify_stack,
        execution_id,
        "the plan's rule delivered",
        lambda log: log and log[0]["status"] == "delivered",
    )
    assert json.loads(receiver.at("/ok/cli")[0].body)["execution_id"] == execution_id
    shown = notify_stack.cli("executions", "notifications", execution_id)
    assert shown.returncode == 0, shown.stderr
    assert "delivered" in shown.stdout and receiver.url in shown.stdout


def test_run_remote_takes_notification_options(notify_stack: Stack, receiver: Receiver) -> None:
    local = notify_stack.cli(
        "run", str(FLOWS), "fine", "--x", "1", "--notify-webhook", "https://e.com"
    )
    assert local.returncode == 2 and "add --remote" in local.stderr, local.stderr
    run = notify_stack.cli(
        "run",
        "--remote",
        "--no-wait",
        "--json",
        str(FLOWS),
        "fine",
        "--x",
        "4",
        "--notify-webhook",
        f"{receiver.url}/ok/run-remote",
        "--notify-on",
        "succeeded",
        "--notify-format",
        "slack",
    )
    assert run.returncode == 0, run.stderr
    execution_id = json.loads(run.stdout)["id"]
    assert _finished(notify_stack, execution_id) == "SUCCEEDED"
    [delivery] = _wait_log(
        notify_stack,
        execution_id,
        "the run's rule delivered",
        lambda log: log and log[0]["status"] == "delivered",
    )
    assert (delivery["state"], delivery["format"]) == ("succeeded", "slack")
    [request] = receiver.at("/ok/run-remote")
    assert execution_id in json.loads(request.body)["text"]


def test_https_goes_to_the_checked_address_and_verifies_the_url_host(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """The sender connects to the address it checked, not to a second resolution, yet TLS
    is still the URL host's: SNI and certificate verification use the name (a certificate
    for `localhost` only is accepted at https://localhost and refused at https://127.0.0.1)."""
    pki = make_pki(tmp_path / "pki")
    cert = _leaf(
        "hook",
        "/CN=hook",
        "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost\n",
        (pki.ca_cert, tmp_path / "pki" / "ca.key"),
        tmp_path / "pki",
    )
    seen: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            seen.append((dict(self.headers), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, tmp_path / "pki" / "hook.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    with transaction(session_factory) as session:
        tenant_id = get_or_create_tenant(session, "tls").id

    async def attempt(url: str) -> tuple[int | None, str | None]:
        trusted = ssl.create_default_context(cafile=str(pki.ca_cert))
        async with httpx.AsyncClient(verify=trusted) as client:
            sender = NotificationSender(
                session_factory, NotifySettings(allow_private=True), "http://api", client=client
            )
            claimed = Claimed("nd-tls", tenant_id, url, "json", {"path": "/x", "state": "X"}, 0)
            return await sender._attempt(claimed)

    try:
        assert asyncio.run(attempt(f"https://localhost:{port}/hook?k=1")) == (204, None)
        [(headers, body)] = seen
        assert headers["Host"] == f"localhost:{port}"
        assert json.loads(body)["url"] == "http://api/x"
        code, error = asyncio.run(attempt(f"https://127.0.0.1:{port}/hook"))
        assert code is None and "CERTIFICATE_VERIFY_FAILED" in (error or ""), error
        assert len(seen) == 1
    finally:
        server.shutdown()
        server.server_close()
