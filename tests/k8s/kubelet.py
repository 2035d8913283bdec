"""A kubelet stand-in for the pods a test wants run for real: kwok only plays a pod's life (its
stages), nothing runs in it. `run_pod` runs the pod's container command as a local process, as
the container would (its environment and working directory, the pod's volume as a directory of
the test's own, its Secret variables read from their Secrets), then reports the outcome in the
pod's status, as a kubelet would."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from kubernetes import client as k8s

TERMINATION_LOG_BYTES = 2048  # what `FallbackToLogsOnError` keeps of the log


def run_pod(core: k8s.CoreV1Api, pod: k8s.V1Pod, root: Path) -> subprocess.CompletedProcess[str]:
    """Run the one container of a running `pod` to its end, with its volume below `root`, and
    set the pod's phase and container state from its exit code."""
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
    ran = subprocess.run(
        command,
        cwd=local(container.working_dir),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    terminated = {
        "exitCode": ran.returncode,
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
