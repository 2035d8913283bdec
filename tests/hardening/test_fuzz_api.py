"""Every REST operation of the OpenAPI document, fuzzed with schemathesis against the
in-process app, as a platform admin and as a tenant developer, with valid (positive) and
invalid (negative) requests.

For each request: no 5xx; the status code is one the document lists; the body matches the
schema documented for that status; every error is the API's one JSON shape
(`{"detail": "<message>", "errors": [...]}`) with a non-empty message.

Example budget: `examples(...)` per operation, principal and mode (FLEETFLOW_HARDENING_EXAMPLES
raises it under `make test-hardening`). The number of requests sent is printed and recorded in
docs/reliability.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks
from sqlalchemy.orm import Session, sessionmaker

from control_plane import execution_ends
from control_plane.api.auth import TENANT_HEADER
from fleetflow.ir import WorkflowSpec
from tests.hardening.world import World, build_world, examples, unlimited
from tests.integration.auth import bearer

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture
def world(
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    workflow_spec: WorkflowSpec,
    monkeypatch: pytest.MonkeyPatch,
) -> World:
    # A long-polled progress read of the known execution (which never ends here) would hold
    # every valid example up to its `wait_seconds`, past the client's 10 s read timeout; the
    # fuzzer checks answers, not how long a wait lasts: waits end after 0.2 s.
    monkeypatch.setattr(execution_ends, "MAX_WAIT_SECONDS", 0.2)
    return build_world(session_factory, tmp_path, workflow_spec, unlimited())


def _known_values(world: World) -> dict[str, str]:
    """Path parameters that name things which exist, so fuzzing reaches past the lookups."""
    with world.client(world.alpha_dev) as alpha:
        created = alpha.post(
            "/api/v1/executions", json={"workflow": world.workflow, "inputs": {"n": 2}}
        )
        assert created.status_code == 201, created.text
    return {
        "tenant": "alpha",
        "name": world.workflow,
        "version": "v1",
        "digest": world.digest,
        "execution_id": created.json()["id"],
        "cluster": "*",
    }


def assert_error_shape(response: Any, method: str) -> None:
    """A 4xx/5xx answer is `{"detail": str, "errors"?: [{field, message}]}`."""
    if response.status_code < 400 or method == "HEAD":
        return
    body = json.loads(response.content)
    assert isinstance(body, dict) and set(body) <= {"detail", "errors"}, body
    assert isinstance(body["detail"], str) and body["detail"].strip(), body
    for error in body.get("errors") or []:
        assert set(error) == {"field", "message"} and error["message"], body


def fuzz_every_operation(
    world: World, token: str, mode: GenerationMode, budget: int
) -> tuple[int, dict[str, list[str]]]:
    """Run `budget` examples of every operation; returns (requests sent, failures by op)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", world.app)
    known = _known_values(world)
    sent = 0
    failures: dict[str, list[str]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        params = {p.name for p in operation.path_parameters}
        pinned = {k: v for k, v in known.items() if k in params}
        strategy = operation.as_strategy(generation_mode=mode)
        if pinned and mode is GenerationMode.POSITIVE:
            strategy = st.one_of(strategy, operation.as_strategy(path_parameters=pinned))

        @settings(
            max_examples=budget,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy, own_tenant=st.booleans())
        def run(case: Any, own_tenant: bool) -> None:
            nonlocal sent
            headers = dict(case.headers or {})
            if own_tenant:  # also act in the caller's own tenant, past the tenant lookup
                headers.pop(TENANT_HEADER, None)
            headers.update(bearer(token))
            case.headers = headers
            response = case.call()
            sent += 1
            case.validate_response(response, checks=CHECKS)
            assert_error_shape(response, case.method.upper())

        try:
            run()
        except Unsatisfiable:
            # No invalid request exists for an operation without parameters or body.
            assert mode is GenerationMode.NEGATIVE and not operation.body, operation.label
        except BaseException as exc:  # noqa: B036
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures.setdefault(operation.label, []).append(repr(exc)[:800])
    return sent, failures


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("who", ["platform-admin", "developer"])
def test_every_operation_answers_within_its_schema(
    world: World, who: str, mode: GenerationMode, record_property: Callable[[str, object], None]
) -> None:
    token = world.admin if who == "platform-admin" else world.alpha_dev
    sent, failures = fuzz_every_operation(world, token, mode, examples(6))
    record_property("requests", sent)
    print(f"fuzzed {sent} requests as {who} ({mode})")
    assert not failures, json.dumps(failures, indent=1)[:6000]
    assert sent > 0
