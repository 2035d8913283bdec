"""Execution previews: `POST /api/v1/executions/preview` and `fleetflow run --remote --dry-run`,
on a migrated database (SQLite and PostgreSQL), a real local blob store and, for the CLI, the
API served by uvicorn on a loopback port. A preview validates like creation, creates nothing,
and says for each task where it would run now and why the other clusters are excluded."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from control_plane.api.app import create_app
from control_plane.db.models import Execution, TaskAttempt, WorkflowVersion, utcnow
from control_plane.db.repositories import clusters as clusters_repo
from control_plane.db.session import transaction
from control_plane.placement import Strategy
from control_plane.settings import ApiSettings, DatabaseSettings, PlacementSettings, Settings
from fleetflow.cli.main import main
from fleetflow.ir import Resources, WorkflowSpec
from fleetflow.storage import LocalBlobStore
from tests.integration.auth import admin_client, admin_token
from tests.integration.test_api import FakeLauncher, assert_error, register, upload_bundle
from tests.polling import wait_until

pytestmark = pytest.mark.integration

WORKFLOW = "examples.train.pipeline"
PREPARE = "examples.train.prepare"
FIT = "examples.train.fit"
GI = 2**30


def make_app(
    session_factory: sessionmaker[Session],
    launcher: FakeLauncher,
    blob_store: LocalBlobStore,
    strategy: Strategy = Strategy.SPREAD,
) -> FastAPI:
    settings = Settings(
        database=DatabaseSettings(url="sqlite://"),
        api=ApiSettings(default_tenant="acme"),
        placement=PlacementSettings(strategy=strategy),
    )
    return create_app(
        settings, session_factory=session_factory, launcher=launcher, blob_store=blob_store
    )


@pytest.fixture
def client(
    session_factory: sessionmaker[Session], launcher: FakeLauncher, blob_store: LocalBlobStore
) -> Iterator[TestClient]:
    with admin_client(make_app(session_factory, launcher, blob_store)) as test_client:
        yield test_client


@pytest.fixture
def gpu_spec(workflow_spec: WorkflowSpec) -> WorkflowSpec:
    """The shared spec; `prepare` wants 2 GPUs (H100, else A100) in zone eu."""
    resources = Resources(cpu=4, gpu=2, gpu_type=["H100", "A100"], labels={"zone": "eu"})
    prepare = workflow_spec.tasks[PREPARE].model_copy(update={"resources": resources})
    return workflow_spec.model_copy(update={"tasks": {**workflow_spec.tasks, PREPARE: prepare}})


def capacity(cpu: float, gpus: dict[str, tuple[int, int]] | None = None) -> dict[str, Any]:
    return {
        "cpu_allocatable": cpu,
        "cpu_in_use": 0.0,
        "memory_bytes_allocatable": 64 * GI,
        "memory_bytes_in_use": 0,
        "gpus": [
            {"gpu_type": t, "allocatable": a, "in_use": u} for t, (a, u) in (gpus or {}).items()
        ],
    }


def add_cluster(
    sessions: sessionmaker[Session],
    name: str,
    report: dict[str, Any],
    labels: dict[str, str],
    *,
    heartbeat_age: timedelta = timedelta(0),
) -> None:
    with transaction(sessions) as session:
        cluster = clusters_repo.ensure_cluster(session, name, f"token-{name}", labels)
        clusters_repo.record_heartbeat(session, cluster, capacity=report)
        cluster.last_heartbeat_at = utcnow() - heartbeat_age


@pytest.fixture
def fleet(session_factory: sessionmaker[Session]) -> None:
    """Five clusters, each excluded from `prepare` for another reason but one."""
    eu = {"zone": "eu"}
    add_cluster(session_factory, "a100s", capacity(32, {"A100": (8, 0)}), eu)
    add_cluster(session_factory, "h100-busy", capacity(32, {"H100": (8, 7)}), eu)
    add_cluster(session_factory, "local", capacity(2), eu)
    add_cluster(
        session_factory,
        "stale",
        capacity(64, {"H100": (8, 0)}),
        eu,
        heartbeat_age=timedelta(hours=1),
    )
    add_cluster(session_factory, "us", capacity(64, {"H100": (8, 0)}), {"zone": "us"})


def count(sessions: sessionmaker[Session], model: type[Any]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_preview_names_where_each_task_would_run_and_why_not_elsewhere(
    client: TestClient,
    session_factory: sessionmaker[Session],
    launcher: FakeLauncher,
    gpu_spec: WorkflowSpec,
    fleet: None,
) -> None:
    registered = register(client, gpu_spec, upload_bundle(client))
    response = client.post(
        "/api/v1/executions/preview", json={"workflow": WORKFLOW, "inputs": {"n": 3}}
    )
    assert response.status_code == 200, response.text
    preview = response.json()
    assert (preview["workflow"], preview["version"]) == (WORKFLOW, registered["version"])
    assert preview["inputs"] == {"n": 3, "lr": 0.1}  # defaults filled in, as creation would
    assert preview["strategy"] == "spread"
    prepare, fit = preview["tasks"]
    assert (prepare["task"], prepare["nodes"], fit["task"], fit["nodes"]) == (
        PREPARE,
        ["n0"],
        FIT,
        ["n1"],
    )
    assert prepare["resources"] == {
        "cpu": 4.0,
        "memory_bytes": 0,
        "gpu": 2,
        "gpu_types": ["H100", "A100"],
        "labels": {"zone": "eu"},
    }
    # H100 fits nowhere now (h100-busy has 1 free), so A100 on a100s.
    assert (prepare["cluster"], prepare["gpu_type"], prepare["waiting_reason"]) == (
        "a100s",
        "A100",
        None,
    )
    assert prepare["eligible"] == [{"cluster": "a100s", "gpu_types": ["A100"]}]
    assert {e["cluster"]: e["reason"] for e in prepare["excluded"]} == {
        "h100-busy": "needs 2 H100, 1 free",
        "local": "no GPU of type H100 or A100 (has none); needs 4 CPU, 2 free",
        "stale": "offline",
        "us": "missing label zone=eu (has zone=us)",
    }
    assert prepare["quota"] == fit["quota"] == "fits: the tenant has no quota"
    # fit needs 1 CPU and nothing else: every online cluster; spread takes the roomiest.
    assert [e["cluster"] for e in fit["eligible"]] == ["a100s", "h100-busy", "local", "us"]
    assert fit["excluded"] == [{"cluster": "stale", "reason": "offline"}]
    assert fit["cluster"] == "us"
    # Nothing was created or started.
    assert count(session_factory, Execution) == 0
    assert count(session_factory, TaskAttempt) == 0
    assert client.get("/api/v1/executions").json() == []
    assert launcher.started == []


def test_a_task_that_fits_nowhere_would_wait(
    client: TestClient, session_factory: sessionmaker[Session], gpu_spec: WorkflowSpec
) -> None:
    add_cluster(session_factory, "local", capacity(8), {})
    register(client, gpu_spec, upload_bundle(client))
    response = client.post(
        "/api/v1/executions/preview", json={"workflow": WORKFLOW, "inputs": {"n": 3}}
    )
    prepare = response.json()["tasks"][0]
    assert (prepare["cluster"], prepare["gpu_type"]) == (None, None)
    assert prepare["waiting_reason"] == "no cluster fits now"
    assert prepare["eligible"] == []
    assert prepare["excluded"] == [
        {
            "cluster": "local",
            "reason": "missing label zone=eu; no GPU of type H100 or A100 (has none)",
        }
    ]


def test_the_configured_strategy_is_used(
    session_factory: sessionmaker[Session],
    launcher: FakeLauncher,
    blob_store: LocalBlobStore,
    workflow_spec: WorkflowSpec,
) -> None:
    add_cluster(session_factory, "roomy", capacity(64), {})
    add_cluster(session_factory, "snug", capacity(2), {})
    app = make_app(session_factory, launcher, blob_store, Strategy.BINPACK)
    with admin_client(app) as client:
        register(client, workflow_spec, upload_bundle(client))
        preview = client.post(
            "/api/v1/executions/preview", json={"workflow": WORKFLOW, "inputs": {"n": 3}}
        ).json()
    assert preview["strategy"] == "binpack"
    assert [task["cluster"] for task in preview["tasks"]] == ["snug", "snug"]


@pytest.mark.parametrize(
    "body",
    [
        {"workflow": WORKFLOW, "inputs": {"n": "three"}},
        {"workflow": WORKFLOW, "inputs": {}},
        {"workflow": WORKFLOW, "inputs": {"n": 3, "extra": 1}},
        {"workflow": WORKFLOW, "inputs": {"n": 3}, "version": "nope"},
        {"workflow": "no.such.workflow", "inputs": {}},
        {"workflow": WORKFLOW, "inputs": {"n": 3}, "tenant": "other"},
    ],
    ids=["wrong-type", "missing", "unknown-input", "unknown-version", "unknown-workflow", "extra"],
)
def test_preview_validates_exactly_like_creation(
    client: TestClient,
    session_factory: sessionmaker[Session],
    workflow_spec: WorkflowSpec,
    body: dict[str, Any],
) -> None:
    register(client, workflow_spec, upload_bundle(client))
    preview = client.post("/api/v1/executions/preview", json=body)
    created = client.post("/api/v1/executions", json=body)
    assert preview.status_code == created.status_code
    assert preview.status_code in (404, 422)
    assert_error(preview, preview.status_code)
    assert preview.json() == created.json()
    assert count(session_factory, Execution) == 0


def test_preview_is_in_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "post" in paths["/api/v1/executions/preview"]


# --- fleetflow run --remote --dry-run ---------------------------------------------------------

FLOW = """
from fleetflow import Resources, task, workflow


@task(resources=Resources(cpu=1, gpu=4, gpu_type=["H100", "A100"]))
def train(n: int) -> int:
    return n * 2


@task
def report(x: int) -> str:
    return str(x)


@workflow
def pipeline(n: int) -> str:
    return report(x=train(n=n))
"""


class _ThreadedUvicorn(uvicorn.Server):
    """uvicorn in a background thread: signals stay with the test process."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@pytest.fixture
def api_url(
    session_factory: sessionmaker[Session],
    launcher: FakeLauncher,
    blob_store: LocalBlobStore,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[str]:
    """The API on a loopback port; the CLI in this process logs in as its platform admin."""
    app = make_app(session_factory, launcher, blob_store)
    server = _ThreadedUvicorn(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()

    def started() -> bool:
        assert thread.is_alive(), "the API's thread ended"
        return bool(server.started)

    wait_until(started, timeout=30, interval=0.01, message="the API to start")
    port = server.servers[0].sockets[0].getsockname()[1]
    monkeypatch.setenv("FLEETFLOW_TOKEN", admin_token(app))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["fleetflow", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory holding only the workflow file (it becomes the code bundle)."""
    directory = tmp_path / "project"
    directory.mkdir()
    (directory / "dry_flow.py").write_text(FLOW)
    monkeypatch.setenv("FLEETFLOW_CONFIG", str(tmp_path / "cli-config.json"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(directory)
    monkeypatch.setattr(sys, "path", list(sys.path))
    modules = set(sys.modules)
    yield directory
    for name in set(sys.modules) - modules:
        filename = getattr(sys.modules[name], "__file__", None)
        if filename and Path(filename).resolve().is_relative_to(directory.resolve()):
            del sys.modules[name]


def test_dry_run_registers_but_creates_nothing(
    api_url: str,
    project: Path,
    session_factory: sessionmaker[Session],
    launcher: FakeLauncher,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    add_cluster(session_factory, "a100s", capacity(8, {"A100": (8, 0)}), {})
    add_cluster(session_factory, "local", capacity(2), {})
    monkeypatch.setenv("FLEETFLOW_API_URL", api_url)
    code, out, err = run_cli(
        monkeypatch, capsys, "run", "--remote", "--dry-run", "dry_flow.py", "pipeline", "--n", "2"
    )
    assert code == 0, err
    assert "registered dry_flow.pipeline version" in out
    assert "(placement: spread): nothing was created" in out
    lines = out.splitlines()
    train = next(line for line in lines if line.startswith("train "))
    assert "1 CPU, 4 GPU (H100 or A100)" in train and "a100s (A100)" in train
    assert "fits: the tenant has no quota" in train
    report = next(line for line in lines if line.startswith("report "))
    assert "a100s, local" in report
    assert "dry_flow.train cannot run on:" in out
    assert "  local: no GPU of type H100 or A100 (has none)" in out
    assert count(session_factory, Execution) == 0 and launcher.started == []
    # Uploaded and registered (idempotent): the real run reuses both.
    with session_factory() as session:
        names = session.scalars(select(WorkflowVersion.name)).all()
    assert names == ["dry_flow.pipeline"]


def test_dry_run_is_for_remote_runs(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "run", "--dry-run", "dry_flow.py", "pipeline")
    assert code != 0
    assert "--dry-run previews a remote run: add --remote" in err


def test_dry_run_checks_inputs_before_uploading_anything(
    api_url: str,
    project: Path,
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("FLEETFLOW_API_URL", api_url)
    code, _, err = run_cli(
        monkeypatch, capsys, "run", "--remote", "--dry-run", "dry_flow.py", "pipeline", "--n", "x"
    )
    assert code != 0 and "input 'n': expected int, got 'x'" in err
    assert count(session_factory, WorkflowVersion) == 0  # nothing uploaded or registered
