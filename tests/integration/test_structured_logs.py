"""Structured logs across the agent protocol: JSON lines that carry the execution, attempt, node
and cluster of what they describe, on the control plane and the agent alike, and no token in
them when authentication fails.

The real agent runs against the real `AgentService` on SQLite; the attempt it runs fails at
once (its code bundle is not a tarball), which is enough to go through lease, launch and
reports.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.migrate import upgrade_database
from control_plane.db.session import make_engine, make_session_factory
from data_plane_agent.agent import Agent, AgentAuthenticationError
from data_plane_agent.settings import AgentSettings
from fleetflow.agent.v1 import agent_pb2, agent_pb2_grpc
from fleetflow.ir import WorkflowSpec
from fleetflow.logs import LogFormat, make_handler
from tests.integration.agent_server import (
    CLUSTER,
    PREPARE_NODE,
    TOKEN,
    AgentServer,
    serve_agent_service,
)
from tests.polling import wait_until_async

pytestmark = pytest.mark.integration

DEADLINE_SECONDS = 30.0
WRONG_TOKEN = "ffa_d3JvbmctdG9rZW4tdGhhdC1tdXN0LW5vdC1iZS1sb2dnZWQ"


class JsonLog:
    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self, logger_prefix: str = "") -> list[dict[str, Any]]:
        entries = [json.loads(line) for line in self.text.splitlines()]
        return [e for e in entries if e["logger"].startswith(logger_prefix)]

    def find(self, logger_prefix: str, fragment: str) -> list[dict[str, Any]]:
        return [e for e in self.lines(logger_prefix) if fragment in e["message"]]


@pytest.fixture
def json_log() -> Iterator[JsonLog]:
    """Everything logged in this process, as the `json` format writes it, at DEBUG."""
    captured = JsonLog()
    handler = make_handler(LogFormat.JSON, captured.stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield captured
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path / 'fleetflow.db'}"
    upgrade_database(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
async def cp(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec, tmp_path: Path
) -> AsyncIterator[AgentServer]:
    async with serve_agent_service(sessions, workflow_spec, tmp_path / "blobs") as server:
        yield server


def agent_settings(cp: AgentServer, tmp_path: Path, token: str = TOKEN) -> AgentSettings:
    return AgentSettings(
        control_plane=cp.target,
        token=token,
        work_dir=tmp_path / "agent",
        lease_wait_seconds=1,
        reconnect_initial_backoff_seconds=0.05,
        reconnect_max_backoff_seconds=0.2,
        kill_grace_seconds=1,
        shutdown_report_seconds=2,
    )


async def eventually(condition: Callable[[], bool], what: str) -> None:
    await wait_until_async(condition, timeout=DEADLINE_SECONDS, message=what)


async def test_attempt_logs_carry_their_ids_on_both_sides(
    cp: AgentServer, tmp_path: Path, json_log: JsonLog
) -> None:
    attempt_id = cp.create_attempt()
    ids = {
        "execution_id": cp.execution_id,
        "attempt_id": attempt_id,
        "node_id": PREPARE_NODE,
        "cluster": CLUSTER,
    }
    agent = Agent(agent_settings(cp, tmp_path))
    run = asyncio.create_task(agent.run())
    try:
        await eventually(lambda: cp.attempt_status(attempt_id) == "FAILED", "the attempt to fail")
        await eventually(
            lambda: bool(json_log.find("data_plane_agent", "delivered its FAILED report")),
            "the agent to deliver the final report",
        )
    finally:
        agent.request_stop()
        await asyncio.wait_for(run, DEADLINE_SECONDS)

    # Control plane: the lease and the finished report.
    (leased,) = json_log.find("control_plane.agent_api", f"leased attempt {attempt_id}")
    (finished,) = json_log.find("control_plane.agent_api", f"attempt {attempt_id} finished")
    for entry in (leased, finished):
        assert {key: entry.get(key) for key in ids} == ids, entry
    # Agent: every line about the attempt, from the lease to the last report, carries them.
    about_attempt = [e for e in json_log.lines("data_plane_agent") if attempt_id in e["message"]]
    assert len(about_attempt) >= 3, about_attempt
    for entry in about_attempt:
        assert {key: entry.get(key) for key in ids} == ids, entry
    # Lines about nothing in particular carry no attempt.
    (dialling,) = json_log.find("data_plane_agent", "dialling the control plane")
    assert "attempt_id" not in dialling and "execution_id" not in dialling


async def test_a_refused_token_is_never_logged(
    cp: AgentServer, tmp_path: Path, json_log: JsonLog
) -> None:
    async with grpc.aio.insecure_channel(cp.target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await agent_pb2_grpc.AgentServiceStub(channel).Register(
                agent_pb2.RegisterRequest(),
                metadata=(("authorization", f"Bearer {WRONG_TOKEN}"),),
                timeout=DEADLINE_SECONDS,
            )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    agent = Agent(agent_settings(cp, tmp_path, token=WRONG_TOKEN))
    with pytest.raises(AgentAuthenticationError) as rejected:
        await asyncio.wait_for(agent.run(), DEADLINE_SECONDS)
    logging.getLogger("data_plane_agent.agent").error("%s", rejected.value)

    server_lines = json_log.find("control_plane.agent_api", "refused an agent call from ")
    assert len(server_lines) == 2, json_log.lines("control_plane")
    assert all(line["message"].endswith(": invalid agent token") for line in server_lines)
    assert json_log.find("data_plane_agent", "rejected this agent's cluster token")
    # Anywhere, at any level, from any logger: not the token, nor its secret part.
    assert WRONG_TOKEN not in json_log.text
    assert WRONG_TOKEN.removeprefix("ffa_") not in json_log.text
    # And what the redaction filter replaces when something does try to log it.
    logging.getLogger("control_plane.test").warning("header was Bearer %s", WRONG_TOKEN)
    assert WRONG_TOKEN not in json_log.text
    assert json_log.lines()[-1]["message"] == "header was Bearer [REDACTED]"
