"""Checkpoints through presigned URLs against a real S3 server: a task pod reads its own unit's
checkpoint and writes it back below that unit's checkpoint location only, holding no
credentials (issue 16: the context is the same locally and in a pod)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from data_plane_agent.attempts import TaskAssignment
from data_plane_agent.presign import PresignError, presignable, presigned_manifest
from fleetflow.bundle import build_bundle
from fleetflow.context import CHECKPOINT_NAMES
from fleetflow.presigned import ENV, PresignedError, fetch_checkpoint, upload_checkpoint
from fleetflow.storage import relative_key
from fleetflow.storage.s3 import S3BlobStore, S3Settings

pytest_plugins = ["tests.integration.s3_server"]

PREFIX = "tenants/acme/executions/ex-1"
TASKS = """
from fleetflow import current_context, task


@task(retries=1)
def resume() -> str:
    ctx = current_context()
    kept = ctx.checkpoint.read()
    if kept is None:
        ctx.checkpoint.write(b"kept by attempt %d" % ctx.attempt_number)
        raise RuntimeError("failing after the checkpoint")
    return f"attempt {ctx.attempt_number} read: {kept.decode()}"
"""


@pytest.fixture
def store(s3_bucket: str, s3_settings: S3Settings, s3_server: Any, monkeypatch: Any) -> S3BlobStore:
    for name, value in s3_server.env().items():  # the agent's settings
        monkeypatch.setenv(name, value)
    return S3BlobStore(s3_bucket, settings=s3_settings)


def assignment(
    store: S3BlobStore, tmp_path: Path, unit: str, attempt: int, *, checkpoint: bool = True
) -> TaskAssignment:
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    (code / "resuming.py").write_text(TASKS)
    digest, data = build_bundle(code)
    prefix = f"{PREFIX}/{unit}/{attempt}"
    return TaskAssignment(
        attempt_id=f"at-{unit}-{attempt}",
        fencing_token=1,
        execution_id="ex-1",
        node_id=unit,
        tenant="acme",
        task_module="resuming",
        task_function="resume",
        bundle_uri=store.put(f"tenants/acme/bundles/{digest}.tar.gz", data),
        inputs_uri=store.put(f"{prefix}/inputs.json", b"{}"),
        outputs_uri=store.uri(f"{prefix}/outputs.json"),
        attempt_number=attempt,
        checkpoint_uri=store.uri(f"{PREFIX}/{unit}/checkpoint") if checkpoint else "",
    )


def run_as_a_pod(task: TaskAssignment, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """The command a pod runs (`--presigned`, `--checkpoint-uri`), with the URLs and no store
    settings."""
    manifest = presigned_manifest(task, timedelta(minutes=10))
    work = tmp_path / task.attempt_id
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEETFLOW_", "AWS_"))}
    return subprocess.run(
        [sys.executable, "-m", "fleetflow.runtime"]
        + ["--bundle-uri", task.bundle_uri, "--inputs-uri", task.inputs_uri]
        + ["--outputs-uri", task.outputs_uri, "--module", task.task_module]
        + ["--function", task.task_function, "--result-file", str(work / "result.json")]
        + ["--workdir", str(work / "code"), "--presigned", "--staged", str(work / "staged")]
        + ["--attempt-number", str(task.attempt_number)]
        + ["--checkpoint-dir", str(work / "checkpoint"), "--checkpoint-uri", task.checkpoint_uri],
        env={**env, ENV: manifest},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_next_attempt_of_a_pod_reads_the_checkpoint_through_urls_only(
    store: S3BlobStore, tmp_path: Path
) -> None:
    first = assignment(store, tmp_path, "n0", 1)
    assert presignable(first)
    failed = run_as_a_pod(first, tmp_path)
    assert failed.returncode == 1, failed.stderr
    assert "RuntimeError: failing after the checkpoint" in failed.stderr
    kept = f"{PREFIX}/n0/checkpoint/checkpoint.bin"
    assert store.get(store.uri(kept)) == b"kept by attempt 1"

    second = assignment(store, tmp_path, "n0", 2)
    succeeded = run_as_a_pod(second, tmp_path)
    assert succeeded.returncode == 0, succeeded.stderr
    assert json.loads(store.get(second.outputs_uri)) == {"o0": "attempt 2 read: kept by attempt 1"}


def test_the_checkpoint_document_names_the_units_own_location_only(
    store: S3BlobStore, tmp_path: Path
) -> None:
    task = assignment(store, tmp_path, "n0", 1)
    manifest = json.loads(presigned_manifest(task, timedelta(minutes=10)))
    checkpoint = manifest["checkpoint"]
    assert sorted(checkpoint["files"]) == sorted(CHECKPOINT_NAMES)
    assert checkpoint["upload"]["prefix"] == f"{PREFIX}/n0/checkpoint/"
    for name, url in checkpoint["files"].items():
        assert url.split("?", 1)[0].endswith(f"/{PREFIX}/n0/checkpoint/{name}")

    without = assignment(store, tmp_path, "n1", 1, checkpoint=False)
    assert "checkpoint" not in json.loads(presigned_manifest(without, timedelta(minutes=10)))
    with pytest.raises(PresignedError, match="no checkpoint URLs"):
        fetch_checkpoint(json.loads(presigned_manifest(without, timedelta(minutes=1))), tmp_path)

    outside = TaskAssignment(**{**task.__dict__, "checkpoint_uri": (tmp_path / "c").as_uri()})
    assert not presignable(outside)
    with pytest.raises(PresignError, match="not in S3"):
        presigned_manifest(outside, timedelta(minutes=1))


def test_a_hostile_task_cannot_write_outside_its_checkpoint_or_read_another_units(
    store: S3BlobStore, tmp_path: Path
) -> None:
    other = f"{PREFIX}/n1/checkpoint/checkpoint.bin"
    store.put(other, b"n1's progress")
    task = assignment(store, tmp_path, "n0", 1)
    manifest = json.loads(presigned_manifest(task, timedelta(minutes=10)))

    # No checkpoint yet: nothing comes in. Then the task's own goes back, under its unit.
    fetch_checkpoint(manifest, tmp_path / "in")
    assert list((tmp_path / "in").iterdir()) == []
    target = tmp_path / "out"
    target.mkdir()
    (target / "checkpoint.bin").write_bytes(b"mine")
    (target / "elsewhere.bin").write_bytes(b"not a checkpoint's name")
    assert upload_checkpoint(manifest, target) == ["checkpoint.bin"]
    assert store.get(store.uri(f"{PREFIX}/n0/checkpoint/checkpoint.bin")) == b"mine"
    assert not store.exists(store.uri(f"{PREFIX}/n0/checkpoint/elsewhere.bin"))

    # The same form aimed at another unit's checkpoint, the attempt's own outputs, another
    # tenant: the server refuses them all, and the outputs form does not reach the checkpoint.
    for form, prefix in [
        (manifest["checkpoint"]["upload"], f"{PREFIX}/n1/checkpoint/"),
        (manifest["checkpoint"]["upload"], f"{PREFIX}/n0/1/"),
        (manifest["checkpoint"]["upload"], f"{PREFIX}/n0/checkpoint-other/"),
        (manifest["checkpoint"]["upload"], "tenants/beta/bundles/"),
        (manifest["upload"], f"{PREFIX}/n0/checkpoint/"),
    ]:
        hostile = {"checkpoint": {"files": {}, "upload": {**form, "prefix": prefix}}}
        with pytest.raises(PresignedError, match="HTTP 403"):
            upload_checkpoint(hostile, target)
    assert store.get(store.uri(other)) == b"n1's progress"
    assert store.get(store.uri(f"{PREFIX}/n0/checkpoint/checkpoint.bin")) == b"mine"
    assert not store.exists(store.uri(f"{PREFIX}/n0/1/checkpoint.bin"))

    # Its GET URLs read its own unit's checkpoint and not another unit's.
    url = manifest["checkpoint"]["files"]["checkpoint.bin"]
    assert urllib.request.urlopen(url).read() == b"mine"
    own = relative_key(task.checkpoint_uri, f"s3://{store.bucket}")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url.replace(own, f"{PREFIX}/n1/checkpoint"))
    assert refused.value.code == 403
