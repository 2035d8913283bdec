"""Presigned blob access against a real S3 server (issue 13, finding 3): a task pod reads
exactly its inputs and writes below its own attempt's prefix only, holding no credentials.

The agent's half (`data_plane_agent.presign`) signs with the server's credentials; the runtime
runs as a Kubernetes pod would run it (`--presigned`), in a process whose environment has the
URLs and nothing else of the store's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import timedelta
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest

from data_plane_agent.attempts import InputBlob, TaskAssignment
from data_plane_agent.presign import PresignError, presignable, presigned_manifest
from fleetflow.bundle import build_bundle
from fleetflow.presigned import ENV, PresignedError, upload_outputs
from fleetflow.storage import relative_key
from fleetflow.storage.s3 import S3BlobStore, S3Settings

pytest_plugins = ["tests.integration.s3_server"]

TYPED_BUNDLE = Path(__file__).parents[1] / "unit" / "sdk" / "fixtures" / "typed_bundle"
PREFIX = "tenants/acme/executions/ex-1"


@pytest.fixture
def store(s3_bucket: str, s3_settings: S3Settings, s3_server: Any, monkeypatch: Any) -> S3BlobStore:
    for name, value in s3_server.env().items():  # the agent's settings
        monkeypatch.setenv(name, value)
    return S3BlobStore(s3_bucket, settings=s3_settings)


def assignment(
    store: S3BlobStore, node: str, function: str, inputs: dict[str, Any], *blobs: InputBlob
) -> TaskAssignment:
    digest, data = build_bundle(TYPED_BUNDLE)
    prefix = f"{PREFIX}/{node}/1"
    return TaskAssignment(
        attempt_id=f"at-{node}",
        fencing_token=1,
        execution_id="ex-1",
        node_id=node,
        tenant="acme",
        task_module="typed_tasks",
        task_function=function,
        bundle_uri=store.put(f"tenants/acme/bundles/{digest}.tar.gz", data),
        inputs_uri=store.put(f"{prefix}/inputs.json", json.dumps(inputs).encode()),
        outputs_uri=store.uri(f"{prefix}/outputs.json"),
        input_blobs=blobs,
    )


def run_as_a_pod(task: TaskAssignment, tmp_path: Path) -> dict[str, Any]:
    """`python -m fleetflow.runtime --presigned`, with the URLs and no store settings."""
    manifest = presigned_manifest(task, timedelta(minutes=10))
    work = tmp_path / task.node_id
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEETFLOW_", "AWS_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "fleetflow.runtime"]
        + ["--bundle-uri", task.bundle_uri, "--inputs-uri", task.inputs_uri]
        + ["--outputs-uri", task.outputs_uri, "--module", task.task_module]
        + ["--function", task.task_function, "--result-file", str(work / "result.json")]
        + ["--workdir", str(work / "code"), "--presigned", "--staged", str(work / "staged")],
        env={**env, ENV: manifest},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    result: dict[str, Any] = json.loads((work / "result.json").read_text())
    assert result["status"] == "SUCCEEDED", proc.stderr
    return result


def test_a_pod_reads_its_inputs_and_writes_its_outputs_through_urls_only(
    store: S3BlobStore, tmp_path: Path
) -> None:
    written = assignment(store, "n0", "write_report", {"text": "accuracy: 0.93"})
    assert presignable(written)
    run_as_a_pod(written, tmp_path)

    report = json.loads(store.get(written.outputs_uri))["o0"]
    digest = sha256(b"accuracy: 0.93").hexdigest()
    assert report == {
        "uri": store.uri(f"{PREFIX}/n0/1/files/{digest}/report.txt"),
        "name": "report.txt",
    }
    assert store.get(report["uri"]) == b"accuracy: 0.93"  # with its sha256 recorded: verified

    files = {"a.txt": "alpha", "nested/b.txt": "beta"}
    tree_task = assignment(store, "n1", "write_tree", {"files": files})
    run_as_a_pod(tree_task, tmp_path)
    tree = json.loads(store.get(tree_task.outputs_uri))["o0"]

    reader = assignment(
        store,
        "n2",
        "read_report",
        {"report": report},
        InputBlob(uri=report["uri"], file_name="report.txt"),
    )
    run_as_a_pod(reader, tmp_path)
    assert json.loads(store.get(reader.outputs_uri)) == {"o0": "report.txt:accuracy: 0.93"}

    tree_reader = assignment(
        store, "n3", "read_tree", {"tree": tree}, InputBlob(uri=tree["uri"], directory=True)
    )
    run_as_a_pod(tree_reader, tmp_path)
    assert json.loads(store.get(tree_reader.outputs_uri)) == {"o0": files}


def test_the_upload_policy_refuses_keys_outside_the_attempts_prefix(
    store: S3BlobStore, tmp_path: Path
) -> None:
    task = assignment(store, "n0", "write_report", {"text": "x"})
    manifest = json.loads(presigned_manifest(task, timedelta(minutes=10)))
    outputs = tmp_path / "outputs"
    (outputs / "files").mkdir(parents=True)
    (outputs / "files" / "fine.txt").write_text("mine")
    assert upload_outputs(manifest, tmp_path, "outputs.json") == 1
    assert store.exists(store.uri(f"{PREFIX}/n0/1/files/fine.txt"))

    # A hostile task with the same form aims at another tenant's bundle and its own inputs'
    # parent: the server refuses both.
    hostile = dict(manifest["upload"])
    for target in ("tenants/beta/bundles/evil.tar.gz", f"{PREFIX}/n0/other-attempt.json"):
        hostile["prefix"] = target.rsplit("/", 1)[0] + "/"
        (outputs / "files" / "fine.txt").write_text("evil")
        with pytest.raises(PresignedError, match="HTTP 403"):
            upload_outputs({"upload": hostile}, tmp_path, "outputs.json")
        assert not store.exists(store.uri(f"{hostile['prefix']}files/fine.txt"))


def test_a_url_reads_its_object_and_no_other(store: S3BlobStore) -> None:
    secret = store.put("tenants/beta/uploads/files/secret.txt", b"beta's")
    task = assignment(store, "n0", "write_report", {"text": "x"})
    manifest = json.loads(presigned_manifest(task, timedelta(minutes=10)))
    own = relative_key(task.inputs_uri, f"s3://{store.bucket}")
    other = relative_key(secret, f"s3://{store.bucket}")

    assert urllib.request.urlopen(manifest["inputs"]).read() == store.get(task.inputs_uri)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(manifest["inputs"].replace(own, other))
    assert refused.value.code == 403


def test_an_attempt_outside_s3_is_not_presigned(tmp_path: Path, store: S3BlobStore) -> None:
    task = assignment(store, "n0", "write_report", {"text": "x"})
    local = TaskAssignment(**{**task.__dict__, "outputs_uri": (tmp_path / "outputs.json").as_uri()})
    assert not presignable(local)
    with pytest.raises(PresignError, match="not in S3"):
        presigned_manifest(local, timedelta(minutes=1))
