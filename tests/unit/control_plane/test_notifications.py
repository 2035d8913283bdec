"""Notification rules, signatures, bodies, the backoff schedule, the private-address policy,
and the outbox rows a terminal state queues (on SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.models import NotificationDelivery, utcnow
from control_plane.db.repositories import notifications as repo
from control_plane.db.repositories import tenancy
from control_plane.db.repositories.executions import create_execution, move_execution
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.repositories.workflows import register_workflow_version
from control_plane.db.session import make_engine, make_session_factory, transaction
from control_plane.services.executions import ExecutionRequestError
from control_plane.services.notifications import (
    NotificationSender,
    RefusedTarget,
    backoff_seconds,
    check_targets,
    refused_address,
    refused_host,
    render,
    resolve_checked,
)
from control_plane.settings import NotifySettings
from fleetflow.api_models.notifications import NotificationRule, redacted_url
from fleetflow.ir import WorkflowSpec
from fleetflow.states import ExecutionState
from fleetflow.webhooks import signature, verify_signature


def _rule(url: str = "https://hooks.example.com/T/B/x", **fields: Any) -> NotificationRule:
    return NotificationRule.model_validate({"on": ["failed"], "webhook": {"url": url}, **fields})


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"on": []}, "at least 1"),
        ({"on": ["timed_out"]}, "'succeeded', 'failed' or 'cancelled'"),
        ({"on": ["failed", "failed"]}, "named twice"),
        ({"format": "xml"}, "'json' or 'slack'"),
        ({"webhook": {"url": "gopher://example.com"}}, "http or https, not 'gopher'"),
        ({"webhook": {"url": "https://"}}, "names no host"),
        ({"webhook": {"url": "https://a:b@example.com"}}, "credentials"),
        ({"webhook": {"url": "https://example.com:99999"}}, "not a valid URL"),
        ({"webhook": {"url": "https://example.com", "secret": "x"}}, "Extra inputs"),
        ({"extra": 1}, "Extra inputs"),
    ],
)
def test_bad_rules_say_what_is_wrong(fields: dict[str, Any], words: str) -> None:
    body = {"on": ["failed"], "webhook": {"url": "https://example.com/x"}, **fields}
    with pytest.raises(ValidationError, match=words.replace("(", r"\(")):
        NotificationRule.model_validate(body)


def test_urls_are_redacted_to_scheme_host_and_port() -> None:
    assert redacted_url("https://hooks.slack.com/services/T0/B0/s3cret") == (
        "https://hooks.slack.com/…"
    )
    assert redacted_url("http://[::1]:8080/x?token=1") == "http://[::1]:8080/…"
    assert redacted_url("https://example.com") == "https://example.com"
    assert redacted_url("https://example.com/?k=v") == "https://example.com/…"


def test_a_signature_is_the_hmac_of_timestamp_and_body() -> None:
    body = b'{"state":"FAILED"}'
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature("k", 1700000000, body) == "sha256=" + expected
    given = signature("k", 1700000000, body)
    assert verify_signature("k", "1700000000", body, given, now=1700000100)
    assert not verify_signature("k", "1700000000", body, given, now=1700000000 + 301)
    assert not verify_signature("k", "1700000000", body + b" ", given, now=1700000000)
    assert not verify_signature("other", "1700000000", body, given, now=1700000000)
    assert not verify_signature("k", "not a time", body, given)


EVENT = {
    "event": "execution.failed",
    "delivery_id": "nd-1",
    "execution_id": "ex-1",
    "tenant": "vision",
    "workflow": "train.pipeline",
    "version": "v3",
    "state": "FAILED",
    "error": "ValueError: bad lr",
    "failed_node": "n1-fit",
    "created_at": "2026-12-05T01:00:00+00:00",
    "started_at": "2026-12-05T01:00:01+00:00",
    "finished_at": "2026-12-05T01:02:00+00:00",
    "path": "/api/v1/executions/ex-1",
}


def test_bodies_in_json_and_slack_shapes() -> None:
    body = render(EVENT, "json", "https://fleetflow.example.com/")
    assert body == {**EVENT, "url": "https://fleetflow.example.com/api/v1/executions/ex-1"}
    slack = render(EVENT, "slack", "https://fleetflow.example.com")
    assert set(slack) == {"text", "blocks"}
    assert slack["text"] == (
        "Fleetflow execution ex-1 of train.pipeline (v3) FAILED: ValueError: bad lr"
    )
    assert [block["type"] for block in slack["blocks"]] == ["section", "context"]
    assert "tenant: vision" in slack["blocks"][0]["text"]["text"]
    assert slack["blocks"][1]["elements"][0]["text"].endswith("/api/v1/executions/ex-1")
    succeeded = render({**EVENT, "state": "SUCCEEDED", "error": None}, "slack", "http://x")
    assert succeeded["text"].endswith("SUCCEEDED")


def test_backoff_grows_exponentially_with_jitter_up_to_its_cap() -> None:
    settings = NotifySettings(backoff_base_seconds=2, backoff_max_seconds=60)
    rng = random.Random(7)
    for attempts, ceiling in ((1, 2), (2, 4), (3, 8), (5, 32), (6, 60), (20, 60)):
        waits = [backoff_seconds(attempts, settings, rng) for _ in range(50)]
        assert all(ceiling / 2 <= wait <= ceiling for wait in waits), (attempts, waits)
        assert len(set(waits)) > 1  # jittered: retries of many rows do not move in step


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.8", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("fd00::1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("100.64.0.1", "non-public"),
        ("0.0.0.0", "0.0.0.0 is a"),
        ("224.0.0.1", "non-public"),
    ],
)
def test_non_public_addresses_are_refused(address: str, words: str) -> None:
    why = refused_address(address)
    assert why is not None and words in why


def test_public_addresses_and_names_pass_at_creation() -> None:
    assert refused_address("8.8.8.8") is None
    assert refused_address("2606:4700:4700::1111") is None
    assert refused_host("hooks.example.com") is None  # checked again once resolved
    assert refused_host("LOCALHOST.") is not None
    assert refused_host("api.localhost") is not None
    assert refused_host("[::1]") is not None


def test_check_targets_names_each_refused_rule_unless_private_is_allowed() -> None:
    rules = [_rule(), _rule("http://127.0.0.1:8080/x"), _rule("http://10.0.0.1/")]
    with pytest.raises(ExecutionRequestError) as caught:
        check_targets(rules, NotifySettings(allow_private=False))
    assert [e.field for e in caught.value.errors or []] == [
        "notifications[1].webhook.url",
        "notifications[2].webhook.url",
    ]
    check_targets(rules, NotifySettings(allow_private=True))


def test_names_are_resolved_and_checked_at_send_time() -> None:
    with pytest.raises(RefusedTarget, match="loopback"):
        asyncio.run(resolve_checked("localhost", 80, allow_private=False))
    assert asyncio.run(resolve_checked("localhost", 80, allow_private=True)) in (
        "127.0.0.1",
        "::1",
    )
    with pytest.raises(RefusedTarget, match="cannot resolve"):
        asyncio.run(resolve_checked("no-such-host.invalid", 80, allow_private=True))


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    engine = make_engine(database_url)
    with make_session_factory(engine)() as session:
        yield session
    engine.dispose()


def test_a_terminal_state_queues_the_rules_that_fire_on_it_in_its_transaction(
    session: Session, workflow_spec: WorkflowSpec
) -> None:
    tenant = get_or_create_tenant(session, "t")
    tenancy.grant_cluster(session, tenant, tenancy.EVERY_CLUSTER)
    version = register_workflow_version(session, tenant.id, workflow_spec, "a" * 64, None)
    rules = [
        _rule(),
        _rule("https://b.example.com", on=["succeeded"]),
        _rule("https://c.example.com", on=["cancelled", "failed"], format="slack"),
    ]
    execution = create_execution(
        session,
        tenant.id,
        version,
        {},
        notifications=[rule.model_dump(mode="json") for rule in rules],
    )
    session.commit()
    assert move_execution(session, execution, ExecutionState.RUNNING)
    assert session.scalars(select(NotificationDelivery)).all() == []
    # Rolled back with the state: nothing is sent for a state never committed.
    assert move_execution(session, execution, ExecutionState.FAILED, error={"message": "x"})
    session.rollback()
    assert session.scalars(select(NotificationDelivery)).all() == []

    session.refresh(execution)
    assert move_execution(
        session, execution, ExecutionState.FAILED, error={"message": "boom", "node_id": "n0"}
    )
    session.commit()
    rows = session.scalars(select(NotificationDelivery).order_by(NotificationDelivery.rule_index))
    queued = list(rows)
    assert [(r.rule_index, r.state, r.format, r.status) for r in queued] == [
        (0, "failed", "json", "pending"),
        (2, "failed", "slack", "pending"),
    ]
    event = queued[0].payload
    assert (event["execution_id"], event["state"], event["error"], event["tenant"]) == (
        execution.id,
        "FAILED",
        "boom",
        "t",
    )
    assert event["delivery_id"] == queued[0].id and event["finished_at"]

    # Claimed once: a second sender finds it held.
    now = utcnow()
    later = now.replace(year=now.year + 1)
    first = repo.claim_delivery(session, queued[0].id, now, later)
    assert first is not None and first.url == "https://hooks.example.com/T/B/x"
    assert repo.claim_delivery(session, queued[0].id, now, later) is None
    assert repo.due_deliveries(session, tenant.id, now, 10) == [queued[1].id]
    status = repo.record_attempt(
        session, queued[0].id, delivered=False, status_code=500, error="500", retry_at=None
    )
    assert status.value == "failed"
    session.commit()
    [row] = [r for r in repo.list_deliveries(session, tenant.id, execution.id) if r.rule_index == 0]
    assert (row.attempts, row.last_status_code, row.status) == (1, 500, "failed")


def test_the_documented_receiver_snippet_verifies_a_delivery() -> None:
    """The `verify` of docs/launchplans.md accepts what the control plane signs, and nothing
    else."""
    doc = (Path(__file__).parents[3] / "docs" / "launchplans.md").read_text()
    snippet = doc.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)
    verify = namespace["verify"]
    body = b'{"state":"FAILED"}'
    sent = int(time.time())
    headers = {
        "X-Fleetflow-Timestamp": str(sent),
        "X-Fleetflow-Signature": signature("ffwh_k", sent, body),
    }
    assert verify("ffwh_k", headers, body)
    assert not verify("ffwh_other", headers, body)
    assert not verify("ffwh_k", headers, body + b"\n")
    old = {**headers, "X-Fleetflow-Timestamp": str(sent - 3600)}
    old["X-Fleetflow-Signature"] = signature("ffwh_k", sent - 3600, body)
    assert not verify("ffwh_k", old, body)


def test_a_tenants_flood_of_due_deliveries_leaves_the_others_their_turn(
    session_factory: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    """20 due deliveries of one tenant and 1 of another: a round claims the first tenant's
    share (4) and the other's one, not the first tenant's oldest 5; a replica claims no row
    another holds."""
    with transaction(session_factory) as session:
        executions = {}
        for name in ("flood", "quiet"):
            tenant = get_or_create_tenant(session, name)
            version = register_workflow_version(session, tenant.id, workflow_spec, "a" * 64, None)
            executions[name] = create_execution(session, tenant.id, version, {})
        now = utcnow()
        for name, count in (("flood", 20), ("quiet", 1)):
            execution = executions[name]
            for index in range(count):
                session.add(
                    NotificationDelivery(
                        id=f"nd-{name}-{index:02d}",
                        tenant_id=execution.tenant_id,
                        execution_id=execution.id,
                        rule_index=index,
                        state="failed",
                        url="https://example.com/",
                        format="json",
                        payload={},
                        status="pending",
                        attempts=0,
                        # The flood is older: oldest first alone would starve the quiet one.
                        next_attempt_at=now - timedelta(minutes=10 if name == "flood" else 1),
                        created_at=now,
                    )
                )
    settings = NotifySettings(concurrency=6, per_tenant_concurrency=4)
    first = NotificationSender(session_factory, settings, "http://api")
    claimed = first._claim(6)
    assert sorted(c.id for c in claimed if "quiet" in c.id) == ["nd-quiet-00"]
    assert len([c for c in claimed if "flood" in c.id]) == 4
    replica = NotificationSender(session_factory, settings, "http://api")
    again = replica._claim(6)
    assert len(again) == 4 and not {c.id for c in again} & {c.id for c in claimed}
