"""The Prefect 3 half of `bench/dispatch.py`, run with `bench/.venv-prefect`'s interpreter.

It starts its own Prefect server (`prefect server start`, SQLite, a temporary PREFECT_HOME,
a free loopback port), creates a `process` work pool, deploys the flows of
`dispatch_workloads/prefect_noop.py` from that local directory, starts `prefect worker start`
on the pool, and measures the same three figures as the Fleetflow half, the same way:

- dispatch: a flow run of `single` is created from its deployment; the sample is the time the
  task body wrote minus the time just before the create call;
- chain / fan: a flow run of `chain` / `fan`; wall time from just before the create call to the
  flow run's `end_time` as the server recorded it.

It prints one JSON object as its last stdout line. Everything it starts runs in its own
process group and is stopped (SIGTERM, then SIGKILL) before it exits, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORKLOADS = HERE / "dispatch_workloads"
POOL = "fleetflow-bench"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
POLL_SECONDS = 0.1  # how often a flow run's state is read while waiting for it to finish


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _die_with_parent(sig: int) -> None:
    """Have the kernel send `sig` to this process when its parent dies (Linux)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, sig)


def _spawn(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A child in its own process group that is killed if this process dies. Only called
    before this process starts threads (prefect is imported afterwards): `preexec_fn` is not
    safe once other threads exist."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=lambda: _die_with_parent(signal.SIGKILL),
        )


def _stop(process: subprocess.Popen[bytes], grace: float = 10) -> None:
    """SIGTERM the process group, SIGKILL it after `grace`; whatever is left in it goes too."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        if sig is signal.SIGTERM:
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
    process.wait(timeout=10)


def _wait_until(condition: Any, what: str, timeout: float, process: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {process.returncode}")
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what}: not after {timeout}s")


def _healthy(api_url: str) -> bool:
    with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
        return bool(response.status == 200)


def _logs(home: Path) -> str:
    return "\n".join(
        f"--- {path.name} ---\n{path.read_text(errors='replace')[-4000:]}"
        for path in sorted(home.glob("*.log"))
    )


def measure(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home / "prefect-home"),
        "PREFECT_API_URL": api_url,
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": str(args.query_seconds),
        "PREFECT_LOGGING_LEVEL": "WARNING",
        # Flow-run workspaces too: removed with `home` even if a run is cut short.
        "TMPDIR": str(home / "tmp"),
    }
    (home / "tmp").mkdir()
    # The deploying and measuring client in this process talks to the same server.
    os.environ.update(env)
    bin_dir = Path(sys.executable).parent
    prefect = str(bin_dir / "prefect")
    children: list[subprocess.Popen[bytes]] = []
    try:
        server = _spawn(
            [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
            home / "server.log",
            env,
        )
        children.append(server)
        _wait_until(lambda: _healthy(api_url), "prefect server", 120, server)
        subprocess.run(
            [prefect, "work-pool", "create", POOL, "--type", "process"],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        worker = _spawn(
            [prefect, "worker", "start", "--pool", POOL, "--type", "process"],
            home / "worker.log",
            env,
        )
        children.append(worker)

        import prefect as prefect_module
        from prefect import flow
        from prefect.client.orchestration import get_client

        deployments = {}
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON result
            for name in ("single", "chain", "fan"):
                deployments[name] = flow.from_source(
                    source=str(WORKLOADS), entrypoint=f"prefect_noop.py:{name}"
                ).deploy(
                    name="bench",
                    work_pool_name=POOL,
                    print_next_steps=False,
                    ignore_warnings=True,
                )
        with get_client(sync_client=True) as client:
            _wait_until(
                lambda: client.read_workers_for_work_pool(POOL), "prefect worker", 120, worker
            )
            return {
                "version": prefect_module.__version__,
                "query_seconds": args.query_seconds,
                **_run_all(client, deployments, args, home),
            }
    except Exception:
        print(_logs(home), file=sys.stderr)
        raise
    finally:
        for child in reversed(children):
            _stop(child)


def _run(client: Any, deployment_id: Any, parameters: dict[str, Any], timeout: float) -> Any:
    """Create a flow run of the deployment and wait for it to complete; (the finished flow
    run, the time just before the create call)."""
    submitted = time.time()
    run = client.create_flow_run_from_deployment(deployment_id, parameters=parameters)
    deadline = time.monotonic() + timeout
    while True:
        run = client.read_flow_run(run.id)
        if run.state_type is not None and run.state_type.value in TERMINAL:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"flow run {run.id} still {run.state_type} after {timeout}s")
        time.sleep(POLL_SECONDS)
    if run.state_type.value != "COMPLETED":
        raise RuntimeError(f"flow run {run.id} ended {run.state_type}: {run.state}")
    return run, submitted


def _run_all(
    client: Any, deployments: dict[str, Any], args: argparse.Namespace, home: Path
) -> dict[str, Any]:
    stamps = home / "stamps"
    stamps.mkdir()
    timeout = args.run_timeout

    dispatch: list[float] = []
    platform: list[float] = []  # flow run created -> flow run running, as the server saw it
    for number in range(args.warmup + args.dispatch_runs):
        path = stamps / f"single-{number}"
        time.sleep(args.dispatch_pause)  # an idle platform, as for the other systems
        run, submitted = _run(client, deployments["single"], {"path": str(path)}, timeout)
        if number >= args.warmup:
            dispatch.append(float(path.read_text()) - submitted)
            platform.append((run.start_time - run.created).total_seconds())

    def walls(name: str, size: int) -> list[float]:
        samples = []
        for _ in range(args.repeat):  # warmed up by the one-task runs, as the other systems
            run, submitted = _run(client, deployments[name], {"size": size}, timeout)
            samples.append(run.end_time.timestamp() - submitted)
        return samples

    return {
        "dispatch_s": dispatch,
        "platform_dispatch_s": platform,
        "chain_wall_s": walls("chain", args.chain_length),
        "fan_wall_s": walls("fan", args.fan_width),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dispatch-runs", type=int, required=True)
    parser.add_argument("--chain-length", type=int, required=True)
    parser.add_argument("--fan-width", type=int, required=True)
    parser.add_argument("--repeat", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--dispatch-pause", type=float, required=True)
    parser.add_argument("--query-seconds", type=float, required=True)
    parser.add_argument("--run-timeout", type=float, default=300)
    args = parser.parse_args()
    # Stopped by the driver (or left by it, dying): unwind, so the servers are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    _die_with_parent(signal.SIGTERM)
    with tempfile.TemporaryDirectory(prefix="fleetflow-bench-prefect-") as tmp:
        result = measure(args, Path(tmp))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
