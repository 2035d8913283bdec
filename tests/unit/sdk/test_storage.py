"""Blob store rules that need no server: keys and URIs that may not escape a store's root or a
tenant's prefix (local and S3 alike), opening stores by URI, and the `FLEETFLOW_S3_*` settings.

The S3 store's operations against a real server are in tests/integration/test_s3_store.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleetflow.errors import FleetflowError
from fleetflow.storage import (
    BlobAccessError,
    BlobNotFoundError,
    LocalBlobStore,
    open_blob_store,
    read_uri,
    store_for_uri,
    write_uri,
)
from fleetflow.storage.s3 import S3BlobStore, S3Settings

ESCAPING_KEYS = ["../x", "a/../../x", "/etc/passwd", "", ".", "a/.."]


@pytest.fixture
def s3_settings() -> S3Settings:
    # Building a client opens no connection: nothing below talks to a server.
    return S3Settings(endpoint="http://127.0.0.1:9", access_key="k", secret_key="s")


# ------------------------------------------------------------------------------ local store


def test_local_scoped_store_keeps_every_key_and_uri_below_its_prefix(tmp_path: Path) -> None:
    root = LocalBlobStore(tmp_path / "blobs")
    acme = root.scoped("tenants/acme")
    other = root.scoped("tenants/other")
    assert acme.root_uri == root.uri("tenants/acme")

    uri = acme.put("executions/e1/out.json", b"{}")
    assert uri == root.uri("tenants/acme/executions/e1/out.json")
    assert acme.get(uri) == b"{}" and root.get(uri) == b"{}"  # the parent still reads it
    assert acme.list(acme.root_uri) == [uri]

    theirs = other.put("secret.txt", b"theirs")
    for key in ESCAPING_KEYS:
        with pytest.raises(BlobAccessError):
            acme.put(key, b"x")
    # URIs of the parent, of another tenant, or climbing out through `..` are refused.
    for foreign in (
        theirs,
        root.uri("top.txt"),
        acme.root_uri + "/../other/secret.txt",
        acme.root_uri + "/%2e%2e/other/secret.txt",
        (tmp_path / "elsewhere").as_uri(),
    ):
        with pytest.raises(BlobAccessError, match="outside the blob store"):
            acme.get(foreign)
        with pytest.raises(BlobAccessError):
            acme.download(foreign, tmp_path / "stolen")
        with pytest.raises(BlobAccessError):
            acme.exists(foreign)
        with pytest.raises(BlobAccessError):
            acme.list(foreign)
    assert not (tmp_path / "stolen").exists()
    for prefix in ESCAPING_KEYS:
        with pytest.raises(BlobAccessError):
            acme.scoped(prefix)
    # Scoping twice narrows further.
    nested = acme.scoped("executions")
    with pytest.raises(BlobAccessError):
        nested.get(acme.uri("other.txt"))


def test_local_scoped_store_cannot_escape_through_a_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    root = LocalBlobStore(tmp_path / "blobs")
    acme = root.scoped("tenants/acme")
    os.symlink(outside, Path(acme.root) / "link")

    with pytest.raises(BlobAccessError):
        acme.get(acme.uri("link/secret.txt"))
    with pytest.raises(BlobAccessError):
        acme.put("link/planted.txt", b"x")
    with pytest.raises(BlobAccessError):
        acme.scoped("link")
    assert not (outside / "planted.txt").exists()


def test_uri_helpers_read_and_write_file_uris(tmp_path: Path) -> None:
    uri = (tmp_path / "a" / "b.txt").as_uri()
    write_uri(uri, b"hello")
    assert read_uri(uri) == b"hello"
    assert store_for_uri(uri).get(uri) == b"hello"
    with pytest.raises(BlobNotFoundError):
        read_uri((tmp_path / "absent").as_uri())
    assert isinstance(open_blob_store(str(tmp_path / "plain")), LocalBlobStore)
    with pytest.raises(FleetflowError, match="unsupported blob store"):
        open_blob_store("gs://bucket/x")
    with pytest.raises(FleetflowError, match="unsupported blob URI scheme"):
        read_uri("http://example.invalid/x")


# -------------------------------------------------------------------------------- S3 names


def test_s3_store_names_objects_by_normalised_keys(s3_settings: S3Settings) -> None:
    store = S3BlobStore("bucket", "fleetflow", settings=s3_settings)
    assert store.root_uri == "s3://bucket/fleetflow"
    assert store.uri("executions/e1/out.json") == "s3://bucket/fleetflow/executions/e1/out.json"
    assert store.uri("a//b/./c") == "s3://bucket/fleetflow/a/b/c"
    assert store.uri("my data (v2).txt") == "s3://bucket/fleetflow/my%20data%20%28v2%29.txt"
    whole = S3BlobStore("bucket", settings=s3_settings)
    assert whole.root_uri == "s3://bucket" and whole.uri("x") == "s3://bucket/x"
    for key in ESCAPING_KEYS:
        with pytest.raises(BlobAccessError):
            store.uri(key)


def test_s3_scoped_store_refuses_uris_outside_its_prefix(s3_settings: S3Settings) -> None:
    store = S3BlobStore("bucket", "fleetflow", settings=s3_settings)
    acme = store.scoped("tenants/acme")
    assert acme.root_uri == "s3://bucket/fleetflow/tenants/acme"
    assert acme.uri("x.txt") == store.uri("tenants/acme/x.txt")
    for prefix in ESCAPING_KEYS:
        with pytest.raises(BlobAccessError):
            store.scoped(prefix)
    refused = [
        "s3://bucket/fleetflow/tenants/other/x.txt",  # another tenant
        "s3://bucket/fleetflow/tenants/acmeX/x.txt",  # a sibling sharing the prefix's letters
        "s3://bucket/fleetflow/top.txt",  # the parent
        "s3://other-bucket/fleetflow/tenants/acme/x.txt",  # another bucket
        "s3://bucket/fleetflow/tenants/acme/../other/x.txt",  # climbing out
        "s3://bucket/fleetflow/tenants/acme/%2E%2E/other/x.txt",  # climbing out, encoded
        "s3://bucket/fleetflow/tenants/acme/a//b",  # not a name this store hands out
        "s3://bucket/fleetflow/tenants/acme/./x.txt",
        "s3://bucket/fleetflow/tenants/acme",  # the prefix itself is no object
        "s3://user@bucket/fleetflow/tenants/acme/x.txt",
        "s3://bucket:9000/fleetflow/tenants/acme/x.txt",
        "s3://bucket/fleetflow/tenants/acme/x.txt?versionId=1",
        "file:///fleetflow/tenants/acme/x.txt",
    ]
    for uri in refused:
        # Refused before any request: the endpoint (port 9) has no server behind it.
        with pytest.raises(BlobAccessError):
            acme.get(uri)
        with pytest.raises(BlobAccessError):
            acme.exists(uri)
        with pytest.raises(BlobAccessError):
            acme.download(uri, Path("/nonexistent/never-written"))
    for uri in refused[:7]:
        with pytest.raises(BlobAccessError):
            acme.list(uri)


def test_s3_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETFLOW_S3_ENDPOINT", "http://127.0.0.1:9000")
    monkeypatch.setenv("FLEETFLOW_S3_ACCESS_KEY", "key")
    monkeypatch.setenv("FLEETFLOW_S3_SECRET_KEY", "s3cr3t-value")
    monkeypatch.setenv("FLEETFLOW_S3_REGION", "eu-west-1")
    monkeypatch.setenv("FLEETFLOW_S3_PART_SIZE", str(8 * 1024 * 1024))
    settings = S3Settings()
    assert settings.connection() == ("127.0.0.1:9000", False)
    assert "s3cr3t-value" not in repr(settings)  # the secret key is never printed
    assert settings.part_size == 8 * 1024 * 1024

    store = open_blob_store("s3://bucket/prefix")
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix, store.settings.region) == ("bucket", "prefix", "eu-west-1")
    reader = store_for_uri("s3://bucket/prefix/a/b.txt")  # the whole bucket
    assert isinstance(reader, S3BlobStore) and reader.root_uri == "s3://bucket"

    assert S3Settings(endpoint="https://s3.example.com").connection() == ("s3.example.com", True)
    assert S3Settings(endpoint="s3.example.com").connection() == ("s3.example.com", True)
    assert S3Settings(endpoint="minio:9000", secure=False).connection() == ("minio:9000", False)
    for bad in ("", "ftp://host", "http://host:9000/path"):
        with pytest.raises(FleetflowError, match="FLEETFLOW_S3_ENDPOINT"):
            S3Settings(endpoint=bad).connection()
    with pytest.raises(ValueError, match="part_size"):
        S3Settings(part_size=1024)
    with pytest.raises(BlobAccessError):
        open_blob_store("s3://bucket/../x")
