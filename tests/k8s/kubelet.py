"""A kubelet stand-in for the pods a test wants run for real: kwok only plays a pod's life (its
stages), nothing runs in it. `run_pod` runs the pod's container command as a local process, as
the container would (its environment and working directory, the pod's volume as a directory of
the test's own, its Secret variables read from their Secrets), then reports the outcome in the
pod's status, as a kubelet would."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from kubernetes import client as k8s

from tests.polling import wait_until

TERMINATION_LOG_BYTES = 2048  # what `FallbackToLogsOnError` keeps of the log


def run_pod(
    core: k8s.CoreV1Api,
    pod: k8s.V1Pod,
    root: Path,
    *,
    kill_when: Callable[[], bool] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the one container of a running `pod` to its end, with its volume below `root`, and
    set the pod's phase and container state from its exit code. `kill_when`: SIGKILL the
    container as soon as it holds (as a kubelet does past a deletion's grace period, or the
    kernel out of memory); the pod then fails with exit code 137."""
    (container,) = pod.spec.containers
    (mount,) = container.volume_mounts
    volume = root / pod.metadata.name
    volume.mkdir(parents=True)

    def local(arg: str) -> str:
        if arg == mount.mount_path or arg.startswith(mount.mount_path + "/"):
            return str(volume) + arg[len(mount.mount_path) :]
        return arg

    # The image's interpreter is this one, with the packages of the repository.
    command = [sys.executable, *(local(arg) for arg in container.command[1:])]
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        **{e.name: _env_value(core, pod.metadata.namespace, e) for e in container.env or []},
    }
    started = _now()
    if kill_when is None:
        ran = subprocess.run(
            command,
            cwd=local(container.working_dir),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    else:
        ran = _run_until(command, local(container.working_dir), env, kill_when)
    exit_code = 128 + signal.SIGKILL if ran.returncode == -signal.SIGKILL else ran.returncode
    terminated = {
        "exitCode": exit_code,
        "reason": "Completed" if ran.returncode == 0 else "Error",
        "startedAt": started,
        "finishedAt": _now(),
    }
    if ran.returncode != 0:
        terminated["message"] = (ran.stdout + ran.stderr)[-TERMINATION_LOG_BYTES:]
    status = {
        "phase": "Succeeded" if ran.returncode == 0 else "Failed",
        "containerStatuses": [
            {
                "name": container.name,
                "image": container.image,
                "ready": False,
                "restartCount": 0,
                "started": False,
                "state": {"terminated": terminated},
            }
        ],
    }
    core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, {"status": status})
    return ran


def _run_until(
    command: list[str], cwd: str, env: dict[str, str], kill_when: Callable[[], bool]
) -> subprocess.CompletedProcess[str]:
    """Run `command`, SIGKILLed once `kill_when` holds (bounded: 120 s)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
        try:
            wait_until(
                lambda: process.poll() is not None or kill_when(),
                timeout=120,
                message="the container to end or to be killed",
            )
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=60)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(command, process.returncode, out.read(), err.read())


def _env_value(core: k8s.CoreV1Api, namespace: str, var: k8s.V1EnvVar) -> str:
    """A variable's value, as a kubelet reads it: literal, or the key of a Secret (read here
    with the test's admin credentials, as the kubelet reads it with its own)."""
    ref = var.value_from.secret_key_ref if var.value_from is not None else None
    if ref is None:
        return str(var.value or "")
    secret = core.read_namespaced_secret(ref.name, namespace)
    return base64.b64decode(secret.data[ref.key]).decode()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
