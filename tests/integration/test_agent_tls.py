"""Agents and the control plane over TLS, with a CA generated for the test (`tests/pki.py`).

The real `Agent` dials the real `AgentService` (composed as `control_plane/server.py` composes
it, listening with `server_security`) on a SQLite database: registration works over TLS and
mutual TLS, and every way of getting it wrong fails with an agent log line that says what to
change. `fleetflow control-plane serve` refuses plaintext on a non-loopback address.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy.orm import Session, sessionmaker

from control_plane.agent_api.tls import ServerSecurity, server_security
from control_plane.db.migrate import upgrade_database
from control_plane.db.models import Cluster
from control_plane.db.session import make_engine, make_session_factory, transaction
from control_plane.settings import GrpcSettings
from data_plane_agent.agent import Agent
from data_plane_agent.settings import AgentSettings
from fleetflow.agent.v1 import agent_pb2, agent_pb2_grpc
from fleetflow.bundle import build_bundle
from fleetflow.ir import WorkflowSpec
from fleetflow.loader import load_workflow
from tests.integration.agent_server import TOKEN, AgentServer, serve_agent_service
from tests.integration.stack import TemporalServer, start_stack
from tests.pki import Pki, make_pki
from tests.polling import wait_until_async

pytestmark = pytest.mark.integration

DEADLINE_SECONDS = 20.0
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FLEETFLOW = str(Path(sys.executable).parent / "fleetflow")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path / 'fleetflow.db'}"
    upgrade_database(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture(autouse=True)
def _agent_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="data_plane_agent")


def tls(pki: Pki, *, mutual: bool = False) -> ServerSecurity:
    return server_security(
        GrpcSettings(
            host="127.0.0.1",
            tls_cert_file=pki.server_cert,
            tls_key_file=pki.server_key,
            tls_client_ca_file=pki.ca_cert if mutual else None,
        )
    )


@contextlib.asynccontextmanager
async def control_plane(
    sessions: sessionmaker[Session],
    spec: WorkflowSpec,
    tmp_path: Path,
    security: ServerSecurity,
) -> AsyncIterator[AgentServer]:
    async with serve_agent_service(sessions, spec, tmp_path / "blobs", security=security) as cp:
        yield cp


def agent_settings(tmp_path: Path, target: str, **values: Any) -> AgentSettings:
    return AgentSettings(
        control_plane=target,
        token=TOKEN,
        work_dir=tmp_path / "agent",
        lease_wait_seconds=1,
        reconnect_initial_backoff_seconds=0.05,
        reconnect_max_backoff_seconds=0.2,
        shutdown_report_seconds=1,
        **values,
    )


@contextlib.asynccontextmanager
async def running_agent(settings: AgentSettings) -> AsyncIterator[Agent]:
    agent = Agent(settings)
    task = asyncio.create_task(agent.run())
    try:
        yield agent
    finally:
        agent.request_stop()
        await asyncio.wait_for(task, DEADLINE_SECONDS)


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Wait until `condition()` holds, checking every 20 ms, for at most the deadline."""
    await wait_until_async(condition, timeout=DEADLINE_SECONDS, message=what)


def heartbeated(cp: AgentServer) -> bool:
    with transaction(cp.sessions) as session:
        return session.get_one(Cluster, cp.cluster_id).last_heartbeat_at is not None


def logged(caplog: pytest.LogCaptureFixture, text: str) -> Callable[[], bool]:
    return lambda: any(text in record.getMessage() for record in caplog.records)


async def register_with(target: str, credentials: grpc.ChannelCredentials | None) -> str:
    """One Register call over a channel of the test's making; returns the cluster name."""
    channel = (
        grpc.aio.secure_channel(target, credentials)
        if credentials
        else grpc.aio.insecure_channel(target)
    )
    async with channel:
        response = await agent_pb2_grpc.AgentServiceStub(channel).Register(
            agent_pb2.RegisterRequest(agent_version="test"),
            metadata=(("authorization", f"Bearer {TOKEN}"),),
            timeout=DEADLINE_SECONDS,
        )
    return str(response.cluster_name)


@pytest.mark.parametrize(
    ("host", "server_name"),
    [("127.0.0.1", None), ("localhost", None), ("127.0.0.1", "control-plane.test")],
    ids=["ip", "localhost", "server-name-override"],
)
async def test_the_agent_registers_and_heartbeats_over_tls(
    sessions: sessionmaker[Session],
    workflow_spec: WorkflowSpec,
    tmp_path: Path,
    pki: Pki,
    caplog: pytest.LogCaptureFixture,
    host: str,
    server_name: str | None,
) -> None:
    async with control_plane(sessions, workflow_spec, tmp_path, tls(pki)) as cp:
        settings = agent_settings(
            tmp_path, f"{host}:{cp.port}", tls_ca_file=pki.ca_cert, tls_server_name=server_name
        )
        async with running_agent(settings) as agent:
            await eventually(lambda: agent.cluster_name == "alpha", "the agent to register")
            await eventually(lambda: heartbeated(cp), "the cluster's first heartbeat")
    assert logged(caplog, f"dialling the control plane at {host}:{cp.port} (TLS, trusting")()


async def test_mutual_tls_admits_agents_with_a_client_certificate_only(
    sessions: sessionmaker[Session],
    workflow_spec: WorkflowSpec,
    tmp_path: Path,
    pki: Pki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with control_plane(sessions, workflow_spec, tmp_path, tls(pki, mutual=True)) as cp:
        ca = pki.ca_cert.read_bytes()
        # Without a client certificate the handshake is refused: no call gets through.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await register_with(cp.target, grpc.ssl_channel_credentials(ca))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert not heartbeated(cp)

        anonymous = agent_settings(tmp_path, cp.target, tls_ca_file=pki.ca_cert)
        async with running_agent(anonymous) as agent:
            await eventually(
                logged(caplog, "if it requires client certificates (mutual TLS), set "
                       "FLEETFLOW_AGENT_TLS_CERT_FILE and FLEETFLOW_AGENT_TLS_KEY_FILE"),
                "the agent to say it needs a client certificate",
            )  # fmt: skip
            assert agent.cluster_name is None
        assert not heartbeated(cp)

        with_certificate = agent_settings(
            tmp_path,
            cp.target,
            tls_ca_file=pki.ca_cert,
            tls_cert_file=pki.client_cert,
            tls_key_file=pki.client_key,
        )
        async with running_agent(with_certificate) as agent:
            await eventually(lambda: agent.cluster_name == "alpha", "the agent to register")
            await eventually(lambda: heartbeated(cp), "the cluster's first heartbeat")


async def test_an_agent_trusting_another_ca_refuses_the_server_and_says_why(
    sessions: sessionmaker[Session],
    workflow_spec: WorkflowSpec,
    tmp_path: Path,
    pki: Pki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with control_plane(sessions, workflow_spec, tmp_path, tls(pki)) as cp:
        settings = agent_settings(tmp_path, cp.target, tls_ca_file=pki.other_ca_cert)
        async with running_agent(settings) as agent:
            await eventually(
                logged(
                    caplog,
                    "TLS: the control plane's certificate is not signed by the CA in "
                    f"FLEETFLOW_AGENT_TLS_CA_FILE={pki.other_ca_cert}",
                ),
                "the agent to say the server's certificate is not trusted",
            )
            assert agent.cluster_name is None
        assert not heartbeated(cp)
    record = next(r for r in caplog.records if "not signed by" in r.getMessage())
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith(
        f"cannot register with the control plane at {cp.target} (UNAVAILABLE: "
    )


async def test_a_plaintext_agent_cannot_talk_to_a_tls_control_plane(
    sessions: sessionmaker[Session],
    workflow_spec: WorkflowSpec,
    tmp_path: Path,
    pki: Pki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with control_plane(sessions, workflow_spec, tmp_path, tls(pki)) as cp:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await register_with(cp.target, None)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

        # Loopback and no TLS settings: the agent dials in plaintext, and is told what to set.
        async with running_agent(agent_settings(tmp_path, cp.target)) as agent:
            await eventually(
                logged(caplog, "the control plane closed a plaintext connection: if it serves "
                       "TLS, set FLEETFLOW_AGENT_TLS_CA_FILE"),
                "the agent to suggest TLS",
            )  # fmt: skip
            assert agent.cluster_name is None
        assert not heartbeated(cp)


def _serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLEETFLOW_")}
    return subprocess.run(
        [FLEETFLOW, "control-plane", "serve"],
        env={
            **clean,
            "FLEETFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'unused.db'}",
            # Nothing listens here: the control plane must refuse before it gets that far.
            "FLEETFLOW_TEMPORAL_ADDRESS": "127.0.0.1:9",
            "COLUMNS": "400",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_control_plane_refuses_plaintext_on_a_public_address(tmp_path: Path) -> None:
    result = _serve(tmp_path, FLEETFLOW_GRPC_HOST="0.0.0.0")
    assert result.returncode == 1, result.stderr
    message = " ".join(result.stderr.split())
    assert message.startswith(
        "error: refusing to serve agents in plaintext on 0.0.0.0:9090, which is not a loopback "
        "address"
    ), message
    assert "FLEETFLOW_GRPC_INSECURE=true to accept plaintext" in message
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "unused.db").exists()


def test_the_control_plane_names_an_unreadable_certificate(tmp_path: Path) -> None:
    result = _serve(
        tmp_path,
        FLEETFLOW_GRPC_HOST="0.0.0.0",
        FLEETFLOW_GRPC_TLS_CERT_FILE=str(tmp_path / "missing.crt"),
        FLEETFLOW_GRPC_TLS_KEY_FILE=str(tmp_path / "missing.key"),
    )
    assert result.returncode == 1, result.stderr
    message = " ".join(result.stderr.split())
    assert f"error: cannot read FLEETFLOW_GRPC_TLS_KEY_FILE={tmp_path / 'missing.key'}" in message


def json_lines(log_file: Path) -> list[dict[str, Any]]:
    """The JSON log lines of a process (other output, such as gRPC core's, is skipped)."""
    lines = log_file.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_a_stack_over_mutual_tls_runs_a_workflow_with_json_logs(
    tmp_path: Path, pki: Pki, temporal_server: TemporalServer
) -> None:
    """`fleetflow control-plane serve` and `fleetflow agent run`, configured only through their
    environment variables, as a deployment would."""
    stack = start_stack(
        tmp_path / "stack",
        f"sqlite:///{tmp_path / 'fleetflow.db'}",
        temporal_server,
        extra_env={
            "FLEETFLOW_GRPC_TLS_CERT_FILE": str(pki.server_cert),
            "FLEETFLOW_GRPC_TLS_KEY_FILE": str(pki.server_key),
            "FLEETFLOW_GRPC_TLS_CLIENT_CA_FILE": str(pki.ca_cert),
            "FLEETFLOW_AGENT_TLS_CA_FILE": str(pki.ca_cert),
            "FLEETFLOW_AGENT_TLS_CERT_FILE": str(pki.client_cert),
            "FLEETFLOW_AGENT_TLS_KEY_FILE": str(pki.client_key),
            "FLEETFLOW_LOG_FORMAT": "json",
        },
    )
    try:
        wf, root = load_workflow(EXAMPLES / "hello.py", "hello_pipeline")
        digest, data = build_bundle(root)
        with stack.client() as client:
            client.workflows.upload_bundle(digest, data)
            version = client.workflows.register_spec(wf.spec, digest).version
            execution = client.executions.create(
                wf.spec.name, wf.inputs_to_literals({"n": 6, "epochs": 50}), version=version
            )
            final = client.wait_for_execution(execution.id, timeout=120)
        assert final.status == "SUCCEEDED", stack.logs()
    finally:
        stack.stop()

    control_plane_log = json_lines(stack.home / "control-plane.log")
    agent_log = json_lines(stack.home / "agent.log")
    listening = [e for e in control_plane_log if "agent gRPC service listening" in e["message"]]
    assert listening, stack.logs()
    assert "(mutual TLS: agents need a client certificate)" in listening[0]["message"]
    dialling = [e for e in agent_log if "dialling the control plane" in e["message"]]
    assert dialling and f"client certificate {pki.client_cert}" in dialling[0]["message"]
    for attempt in final.attempts:
        for log in (control_plane_log, agent_log):
            about = [e for e in log if e.get("attempt_id") == attempt.id]
            assert about, (attempt.id, stack.logs())
            assert {e["execution_id"] for e in about} == {final.id}
            # Created by the worker before placement (no cluster yet), then the cluster's.
            assert {e.get("cluster") for e in about} - {None} == {"local"}
    assert stack.agent_token not in (stack.home / "agent.log").read_text()
