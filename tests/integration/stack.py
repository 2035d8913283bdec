"""A real Fleetflow stack for integration tests: the Temporal test server, the control plane
(`fleetflow control-plane serve --with-worker`) and a local agent, each its own subprocess on
free loopback ports, against a migrated SQLite or PostgreSQL database."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from control_plane import processes
from control_plane.auth.rbac import Authorizer
from control_plane.bootstrap import bootstrap_local_cluster, ensure_platform_admin
from control_plane.db.migrate import upgrade_database
from control_plane.db.session import make_engine, make_session_factory
from fleetflow.bundle import build_bundle
from fleetflow.client import Client
from fleetflow.config import CliConfig
from fleetflow.loader import load_workflow
from tests.polling import wait_until

BIN = Path(sys.executable).parent
FLEETFLOW = str(BIN / "fleetflow")


@dataclass
class TemporalServer:
    address: str
    process: subprocess.Popen[bytes]


def start_temporal(home: Path) -> TemporalServer:
    port = processes.free_port()
    argv, _ = processes.temporal_server_command(port, home)
    process = processes.spawn(argv, log_file=home / "temporal.log")
    processes.wait_for_port("127.0.0.1", port, timeout=60, process=process)
    return TemporalServer(f"127.0.0.1:{port}", process)


@dataclass
class Stack:
    home: Path
    api_url: str
    grpc_address: str
    database_url: str
    blob_root: str
    env: dict[str, str]
    agent_token: str
    admin_token: str  # the platform admin `admin`, home tenant "default"
    split: bool = False  # the Temporal worker runs in its own process
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the `fleetflow` CLI as a user would, against this stack."""
        return subprocess.run(
            [FLEETFLOW, *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def client(self, token: str | None = None, tenant: str | None = None) -> Client:
        """A `fleetflow.Client` for this stack, as the platform admin unless `token`."""
        return Client(self.api_url, token=token or self.admin_token, tenant=tenant)

    def launch(
        self, workflows: Path, workflow: str, *, tenant: str | None = None, **inputs: Any
    ) -> str:
        """Bundle, register and start `workflow` of the file `workflows` (in `tenant`, the
        default one unless given); the execution id."""
        wf, root = load_workflow(workflows, workflow)
        digest, data = build_bundle(root)
        with self.client(tenant=tenant) as client:
            client.workflows.upload_bundle(digest, data)
            version = client.workflows.register_spec(wf.spec, digest).version
            literals = wf.inputs_to_literals(inputs)
            return str(client.executions.create(wf.spec.name, literals, version=version).id)

    def wait_for(self, condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
        """Poll `condition` until it is truthy and return it; fail with the stack's logs."""
        return wait_until(condition, timeout=timeout, message=what, details=self.logs)

    def logs(self) -> str:
        parts = []
        for path in sorted(self.home.glob("*.log")):
            name = path.stem
            if path.exists():
                parts.append(f"--- {name} ---\n{path.read_text()[-6000:]}")
        return "\n".join(parts)

    def add_agent(
        self,
        cluster: str,
        labels: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Another cluster with its own agent (`agent-<cluster>` in `children`); `env` adds
        agent settings."""
        engine = make_engine(self.database_url)
        token = bootstrap_local_cluster(
            make_session_factory(engine), tenant="default", cluster=cluster, labels=labels or {}
        )
        engine.dispose()
        agent = start_agent(self, token=token, name=f"agent-{cluster}", env=env)
        self.children[f"agent-{cluster}"] = agent
        return agent

    def restart_control_plane(self) -> None:
        """SIGKILL the control plane mid-flight and start it again on the same ports."""
        processes.stop(self.children.pop("control-plane"), grace=0)
        self.children["control-plane"] = spawn_control_plane(self, worker=not self.split)
        wait_ready(self)

    def stop(self) -> None:
        for name in sorted(self.children, key=lambda n: n == "control-plane"):
            processes.stop(self.children.pop(name))


def start_stack(
    home: Path,
    database_url: str,
    temporal: TemporalServer,
    *,
    split: bool = False,
    extra_env: dict[str, str] | None = None,
    blob_root: str | None = None,
) -> Stack:
    """Start the control plane and an agent. `split` runs the Temporal worker in its own
    process (`serve` + `worker`, as in production) instead of `serve --with-worker`;
    `extra_env` adds settings for every process (e.g. TLS); `blob_root` replaces the local
    blob directory (e.g. `s3://bucket/prefix`, with the `FLEETFLOW_S3_*` in `extra_env`)."""
    home.mkdir(parents=True, exist_ok=True)
    upgrade_database(database_url)
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    token = bootstrap_local_cluster(sessions, tenant="default", cluster="local", labels={})
    admin = ensure_platform_admin(sessions, Authorizer(engine), tenant="default")
    assert admin is not None, f"{database_url} has users already: use a fresh database"
    engine.dispose()
    api_port, grpc_port = processes.free_port(), processes.free_port()
    blob_root = blob_root or (home / "blobs").as_uri()
    # A fresh task queue per stack: several stacks may share one Temporal server.
    env = {
        "FLEETFLOW_DATABASE_URL": database_url,
        "FLEETFLOW_TEMPORAL_ADDRESS": temporal.address,
        "FLEETFLOW_TEMPORAL_TASK_QUEUE": f"fleetflow-{home.name}-{os.getpid()}",
        "FLEETFLOW_BLOB_ROOT": blob_root,
        "FLEETFLOW_API_PORT": str(api_port),
        "FLEETFLOW_GRPC_PORT": str(grpc_port),
        "FLEETFLOW_GRPC_HEARTBEAT_INTERVAL_SECONDS": "1",
        # Agents reconnect within 2 s here, so silence is judged soon after a restart too.
        "FLEETFLOW_AGENT_RECONNECT_MAX_BACKOFF_SECONDS": "2",
        "FLEETFLOW_GRPC_AGENT_RECONNECT_ALLOWANCE_SECONDS": "4",
        "FLEETFLOW_AGENT_LOG_UPLOAD_INTERVAL_SECONDS": "1",
        "FLEETFLOW_API_URL": f"http://127.0.0.1:{api_port}",
        "FLEETFLOW_CONFIG": str(home / "cli-config.json"),
        # Map nodes of more than 4 elements run as chunk workflows (1,000 in production), so
        # the tests' maps take both paths.
        "FLEETFLOW_TEMPORAL_MAP_CHUNK": "4",
        # On SQLite the control plane keeps a key file beside the database; on PostgreSQL it
        # refuses to start without a key.
        **(
            {}
            if database_url.startswith("sqlite")
            else {"FLEETFLOW_SECRETS_KEYS": base64.urlsafe_b64encode(os.urandom(32)).decode()}
        ),
        **(extra_env or {}),
    }
    # The CLI run by `Stack.cli` logs in as the platform admin.
    config = CliConfig(api_url=env["FLEETFLOW_API_URL"], token=admin)
    Path(env["FLEETFLOW_CONFIG"]).write_text(config.model_dump_json())
    stack = Stack(
        home=home,
        api_url=f"http://127.0.0.1:{api_port}",
        grpc_address=f"127.0.0.1:{grpc_port}",
        database_url=database_url,
        blob_root=blob_root,
        env=env,
        agent_token=token,
        admin_token=admin,
        split=split,
    )
    try:
        stack.children["control-plane"] = spawn_control_plane(stack, worker=not split)
        if split:
            stack.children["worker"] = processes.spawn(
                [FLEETFLOW, "control-plane", "worker"], log_file=home / "worker.log", env=env
            )
        wait_ready(stack)
        stack.children["agent"] = start_agent(stack)
    except BaseException:
        stack.stop()
        raise
    return stack


def process_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not). A process that ends while its stat is read is
    gone (the read fails with ESRCH), not an error."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.split()[2] != "Z"


def sigkill(process: subprocess.Popen[bytes]) -> None:
    """Kill a process group at once: no signal handler runs, nothing is reported."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def spawn_control_plane(stack: Stack, *, worker: bool) -> subprocess.Popen[bytes]:
    serve = [FLEETFLOW, "control-plane", "serve"] + (["--with-worker"] if worker else [])
    return processes.spawn(serve, log_file=stack.home / "control-plane.log", env=stack.env)


def start_agent(
    stack: Stack,
    *,
    token: str | None = None,
    name: str = "agent",
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "data_plane_agent", "run"]
    argv += ["--control-plane", stack.grpc_address, "--work-dir", str(stack.home / name)]
    return processes.spawn(
        argv,
        log_file=stack.home / f"{name}.log",
        env={**stack.env, "FLEETFLOW_AGENT_TOKEN": token or stack.agent_token, **(env or {})},
    )


def wait_ready(stack: Stack, timeout: float = 60) -> None:
    process = stack.children["control-plane"]

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"control plane exited ({process.returncode}):\n{stack.logs()}")
        try:
            return httpx.get(f"{stack.api_url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(ready, timeout=timeout, message="the control plane to be ready", details=stack.logs)
