"""The `s3://` blob store against a real S3 server (SeaweedFS, built from the Go module proxy by
infra/scripts/s3_server.py): every operation, multipart uploads, end-to-end checksums, tenant
prefixes, `File`/`Directory` values, and a whole execution whose blob store is S3."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from minio import Minio

from fleetflow import Directory, File
from fleetflow.files import blob_context
from fleetflow.loader import load_workflow
from fleetflow.storage import (
    BlobAccessError,
    BlobIntegrityError,
    BlobNotFoundError,
    open_blob_store,
    read_uri,
    relative_key,
    store_for_uri,
    write_uri,
)
from fleetflow.storage.s3 import CHECKSUM_METADATA, MiB, S3BlobStore, S3Settings
from fleetflow.types import to_literal, to_python
from tests.integration.stack import Stack, TemporalServer, start_stack

pytestmark = pytest.mark.integration
# The S3 server and bucket fixtures.
pytest_plugins = ["tests.integration.s3_server"]

WORKFLOWS = Path(__file__).parent / "workflows" / "sdk_features.py"


@pytest.fixture
def store(s3_bucket: str, s3_settings: S3Settings) -> S3BlobStore:
    return S3BlobStore(s3_bucket, "fleetflow", settings=s3_settings)


@pytest.fixture
def raw(store: S3BlobStore) -> Minio:
    """The same server without Fleetflow in between: to tamper with objects behind its back."""
    return store.client


@pytest.fixture
def s3_env(s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """`FLEETFLOW_S3_*` in this process, as every Fleetflow process would have them."""
    env: dict[str, str] = s3_server.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def object_name(store: S3BlobStore, uri: str) -> str:
    return relative_key(uri, f"s3://{store.bucket}")


def test_put_get_upload_download_list_exists(store: S3BlobStore, tmp_path: Path) -> None:
    uri = store.put("executions/e1/n0/1/inputs.json", b'{"n": 3}')
    assert uri == f"s3://{store.bucket}/fleetflow/executions/e1/n0/1/inputs.json"
    assert store.exists(uri) and store.get(uri) == b'{"n": 3}'

    source = tmp_path / "my data (v2).csv"
    source.write_bytes(b"a,b\n1,2\n")
    uploaded = store.upload("uploads/files/abc/my data (v2).csv", source)
    assert uploaded == store.uri("uploads/files/abc/my data (v2).csv")
    store.download(uploaded, tmp_path / "out" / "copy.csv")
    assert (tmp_path / "out" / "copy.csv").read_bytes() == b"a,b\n1,2\n"
    empty = store.put("executions/e1/empty", b"")
    assert store.get(empty) == b""

    assert store.list(store.uri("executions/e1")) == sorted([uri, empty])
    assert store.list(store.root_uri) == sorted([uri, empty, uploaded])
    assert store.list(store.uri("executions/e")) == []  # a prefix of a name is no directory
    assert store.list(store.uri("nothing/here")) == []
    assert [relative_key(u, store.uri("uploads")) for u in store.list(store.uri("uploads"))] == [
        "files/abc/my data (v2).csv"
    ]

    absent = store.uri("executions/e1/absent.json")
    assert not store.exists(absent)
    with pytest.raises(BlobNotFoundError):
        store.get(absent)
    with pytest.raises(BlobNotFoundError):
        store.download(absent, tmp_path / "absent")
    assert not (tmp_path / "absent").exists()
    no_bucket = S3BlobStore(f"{store.bucket}-gone", settings=store.settings)
    assert not no_bucket.exists(no_bucket.uri("x"))
    with pytest.raises(BlobNotFoundError):
        no_bucket.get(no_bucket.uri("x"))


def test_a_large_file_is_uploaded_in_parts_and_verified(
    store: S3BlobStore, raw: Minio, tmp_path: Path
) -> None:
    big = tmp_path / "weights.bin"
    with big.open("wb") as f:  # 12 MiB that differ in every part
        for i in range(12):
            f.write(hashlib.sha256(str(i).encode()).digest() * (MiB // 32))
    five_mib_parts = S3BlobStore(
        store.bucket, "fleetflow", settings=store.settings, part_size=5 * MiB
    )
    uri = five_mib_parts.upload("models/weights.bin", big)

    stat = raw.stat_object(store.bucket, object_name(store, uri))
    assert stat.size == 12 * MiB
    assert stat.etag is not None and stat.etag.endswith("-3")  # a multipart upload of 3 parts
    expected = hashlib.sha256(big.read_bytes()).hexdigest()
    assert stat.metadata is not None
    assert stat.metadata[f"x-amz-meta-{CHECKSUM_METADATA}"] == expected

    store.download(uri, tmp_path / "copy.bin")
    assert hashlib.sha256((tmp_path / "copy.bin").read_bytes()).hexdigest() == expected
    assert hashlib.sha256(store.get(uri)).hexdigest() == expected

    data = big.read_bytes()[: 6 * MiB + 1]  # put() of bytes goes in parts too
    put = five_mib_parts.put("models/part.bin", data)
    assert raw.stat_object(store.bucket, object_name(store, put)).etag.endswith("-2")  # type: ignore[union-attr]
    assert store.get(put) == data


def test_a_corrupted_object_is_refused_not_returned(
    store: S3BlobStore, raw: Minio, tmp_path: Path
) -> None:
    uri = store.put("executions/e1/n0/1/outputs.json", b'{"o0": 42}')
    name = object_name(store, uri)
    recorded = hashlib.sha256(b'{"o0": 42}').hexdigest()
    # Same size, one byte different, the recorded checksum kept: what bit rot looks like.
    raw.put_object(
        store.bucket, name, io.BytesIO(b'{"o0": 43}'), 10, metadata={CHECKSUM_METADATA: recorded}
    )
    with pytest.raises(BlobIntegrityError, match="is corrupt"):
        store.get(uri)
    dest = tmp_path / "outputs.json"
    dest.write_text("previous")
    with pytest.raises(BlobIntegrityError, match="is corrupt"):
        store.download(uri, dest)
    assert dest.read_text() == "previous"  # never replaced by unverified content
    assert [p.name for p in tmp_path.iterdir()] == ["outputs.json"]  # no temporary left

    # Replaced by something that never went through Fleetflow: no checksum, refused too...
    raw.put_object(store.bucket, name, io.BytesIO(b'{"o0": 44}'), 10)
    with pytest.raises(BlobIntegrityError, match="no recorded sha256"):
        store.get(uri)
    # ...unless asked to read such objects unverified.
    lenient = S3Settings(**{**store.settings.model_dump(), "require_checksums": False})
    assert S3BlobStore(store.bucket, settings=lenient).get(uri) == b'{"o0": 44}'


def test_a_tenant_prefix_cannot_be_escaped(store: S3BlobStore, tmp_path: Path) -> None:
    acme = store.scoped("tenants/acme")
    mine = acme.put("executions/e1/out.json", b"mine")
    theirs = store.scoped("tenants/other").put("secret.txt", b"theirs")
    sibling = store.scoped("tenants/acme2").put("secret.txt", b"sibling")
    top = store.put("top.txt", b"top")

    assert acme.get(mine) == b"mine"
    assert acme.list(acme.root_uri) == [mine]  # not tenants/acme2/…
    escapes = [
        theirs,
        sibling,
        top,
        acme.root_uri + "/../other/secret.txt",
        acme.root_uri + "/%2e%2e/other/secret.txt",
        f"s3://{store.bucket}-other/fleetflow/tenants/acme/x",
    ]
    for uri in escapes:
        with pytest.raises(BlobAccessError):
            acme.get(uri)
        with pytest.raises(BlobAccessError):
            acme.download(uri, tmp_path / "stolen")
        with pytest.raises(BlobAccessError):
            acme.exists(uri)
    for uri in (store.root_uri, store.uri("tenants"), store.uri("tenants/other")):
        with pytest.raises(BlobAccessError):
            acme.list(uri)
    for key in ("../other/planted.txt", "/tenants/other/planted.txt", "a/../../x"):
        with pytest.raises(BlobAccessError):
            acme.put(key, b"planted")
        with pytest.raises(BlobAccessError):
            acme.scoped(key)
    assert not (tmp_path / "stolen").exists()
    assert store.list(store.uri("tenants/other")) == [theirs]  # nothing planted


def test_uris_resolve_in_any_process_from_the_environment(
    s3_env: dict[str, str],
    s3_bucket: str,
    tmp_path: Path,
) -> None:
    store = open_blob_store(f"s3://{s3_bucket}/root")
    assert isinstance(store, S3BlobStore) and store.root_uri == f"s3://{s3_bucket}/root"
    uri = store.uri("executions/e1/n0/1/outputs.json")
    write_uri(uri, b'{"o0": 1}')
    assert read_uri(uri) == b'{"o0": 1}'
    reader = store_for_uri(uri)
    reader.download(uri, tmp_path / "outputs.json")
    assert (tmp_path / "outputs.json").read_bytes() == b'{"o0": 1}'
    assert reader.list(store.uri("executions")) == [uri]
    with pytest.raises(BlobNotFoundError):
        read_uri(store.uri("absent"))


def test_file_and_directory_values_round_trip_through_s3(
    store: S3BlobStore, s3_env: dict[str, str], tmp_path: Path
) -> None:
    # Downloads open the store a URI names from FLEETFLOW_S3_*, as the task runtime does.
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\x00\x01 weights")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("A")
    (tree / "sub" / "b c.txt").write_text("B")

    with blob_context(store, "executions/e1/n0/1", tmp_path / "up"):
        file_literal = to_literal(File(weights), File)
        dir_literal = to_literal(Directory(tree), Directory)
    assert file_literal["uri"].startswith(store.uri("executions/e1/n0/1/files/"))
    assert store.get(file_literal["uri"]) == b"\x00\x01 weights"

    with blob_context(store, "executions/e1/n1/1", tmp_path / "down"):
        received = to_python(file_literal, File)
        folder = to_python(dir_literal, Directory)
        assert to_literal(received, File) == file_literal  # passed on: the same object
    assert received.path.read_bytes() == b"\x00\x01 weights"
    assert {p.relative_to(folder.path).as_posix(): p.read_text() for p in folder.files()} == {
        "a.txt": "A",
        "sub/b c.txt": "B",
    }


# ------------------------------------------------------------------- a whole execution


@pytest.fixture
def s3_stack(
    tmp_path: Path,
    temporal_server: TemporalServer,
    s3_server: Any,
    s3_bucket: str,
) -> Iterator[Stack]:
    stack = start_stack(
        tmp_path / "stack",
        f"sqlite:///{tmp_path / 'fleetflow.db'}",
        temporal_server,
        extra_env=s3_server.env(),
        blob_root=f"s3://{s3_bucket}/fleetflow",
    )
    yield stack
    stack.stop()


def test_an_execution_keeps_its_blobs_in_s3(
    s3_stack: Stack, s3_env: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "words.txt"
    data.write_text("one two three\nfour\n")
    report, _ = load_workflow(WORKFLOWS, "report")
    word_count, _ = load_workflow(WORKFLOWS, "word_count")
    with s3_stack.client() as client:
        # A File input: uploaded through the API into S3, downloaded from S3 by the task.
        words = client.run(word_count, data=File(data), timeout=120)
        assert words.status == "SUCCEEDED", f"{words.error}\n{s3_stack.logs()}"
        assert words.outputs == 4
        sent = words.execution.inputs["data"]["uri"]
        assert sent.startswith(f"{s3_stack.blob_root}/") and "/uploads/files/" in sent
        assert read_uri(sent) == data.read_bytes()

        # A File output: uploaded to S3 by the task, readable by its URI anywhere.
        launched = client.run(report, n=3, title="summary", wait=False)
        final = client.wait_for_execution(launched.id, timeout=120)
    assert final.status == "SUCCEEDED", f"{final.error}\n{s3_stack.logs()}"
    assert final.outputs is not None
    text = final.outputs["text"]
    assert text["name"] == "summary.txt"
    assert text["uri"].startswith(f"{s3_stack.blob_root}/")
    assert f"/executions/{final.id}/" in text["uri"]
    assert read_uri(text["uri"]) == b"summary: 3 values, total 5\n"
    assert not (s3_stack.home / "blobs").exists()  # nothing went to a local directory
    assert os.environ["FLEETFLOW_S3_ENDPOINT"] == s3_env["FLEETFLOW_S3_ENDPOINT"]
