"""`GET /executions/{id}/progress?wait_seconds=`: a long poll that answers as the execution's
end is committed, holds no database connection while it waits, refuses a bad wait, and tells
another tenant's caller nothing, at once (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from control_plane import execution_ends
from control_plane.db.models import Execution
from control_plane.db.repositories.executions import move_execution
from control_plane.execution_ends import ENDS
from fleetflow.ir import WorkflowSpec
from fleetflow.states import ExecutionState
from tests.integration import test_api
from tests.integration.test_api import assert_error, foreign_execution, register, upload_bundle
from tests.polling import wait_until

client = test_api.client  # the REST API's fixture, as the tenant "acme"'s admin

# A wait no test sits out: only the wake-up at the commit can answer it in time.
LONG = 30


@pytest.fixture(autouse=True)
def no_recheck(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(execution_ends, "RECHECK_SECONDS", 3600.0)


class InThread:
    """A request made from a thread of its own, so the test can act while it waits."""

    def __init__(self, request: Any) -> None:
        self.response: Any = None
        self._thread = threading.Thread(target=self._run, args=(request,), daemon=True)
        self._thread.start()

    def _run(self, request: Any) -> None:
        self.response = request()

    def answer(self, timeout: float = LONG - 10) -> Any:
        """Its response, once it came (well before the wait it asked for was up)."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the long poll did not answer when it should"
        return self.response


def _move(session_factory: sessionmaker[Session], execution_id: str, to: ExecutionState) -> None:
    with session_factory() as session:
        execution = session.get_one(Execution, execution_id)
        assert move_execution(session, execution, to)
        session.commit()


def _create(client: TestClient, spec: WorkflowSpec) -> str:
    register(client, spec, upload_bundle(client))
    response = client.post("/api/v1/executions", json={"workflow": spec.name, "inputs": {"n": 1}})
    assert response.status_code == 201, response.text
    execution_id: str = response.json()["id"]
    return execution_id


def test_a_long_poll_answers_when_the_execution_ends(
    client: TestClient, session_factory: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    execution_id = _create(client, workflow_spec)
    url = f"/api/v1/executions/{execution_id}/progress"
    _move(session_factory, execution_id, ExecutionState.RUNNING)  # not an end: no answer
    poll = InThread(lambda: client.get(url, params={"wait_seconds": LONG}))
    wait_until(lambda: ENDS.waits_for(execution_id), timeout=20, message="the poll waiting")
    # Waiting, it holds no connection of the pool (a slow execution cannot drain it).
    engine = session_factory.kw["bind"]
    assert engine.pool.checkedout() == 0
    _move(session_factory, execution_id, ExecutionState.SUCCEEDED)
    response = poll.answer()
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "SUCCEEDED"
    assert ENDS.waits_for(execution_id) == 0
    # A final execution answers at once, however long the wait asked.
    assert client.get(url, params={"wait_seconds": LONG}).json()["status"] == "SUCCEEDED"


def test_without_a_wait_it_answers_at_once(client: TestClient, workflow_spec: WorkflowSpec) -> None:
    execution_id = _create(client, workflow_spec)
    response = client.get(f"/api/v1/executions/{execution_id}/progress")
    assert response.json()["status"] == "QUEUED"
    assert ENDS.waits_for(execution_id) == 0


@pytest.mark.parametrize("wait", ["-1", "31", "soon", "nan"])
def test_a_bad_wait_is_refused_naming_it(
    client: TestClient, workflow_spec: WorkflowSpec, wait: str
) -> None:
    execution_id = _create(client, workflow_spec)
    response = client.get(
        f"/api/v1/executions/{execution_id}/progress", params={"wait_seconds": wait}
    )
    assert_error(response, 422, "query.wait_seconds")


def test_another_tenants_execution_is_not_found_at_once_and_never_waited_for(
    client: TestClient, session_factory: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    foreign_id = foreign_execution(session_factory, workflow_spec)
    poll = InThread(
        lambda: client.get(
            f"/api/v1/executions/{foreign_id}/progress", params={"wait_seconds": LONG}
        )
    )
    assert_error(poll.answer(), 404)
    assert ENDS.waits_for(foreign_id) == 0
