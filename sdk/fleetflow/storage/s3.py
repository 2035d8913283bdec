"""`s3://bucket/prefix` blob stores on S3 or any S3-compatible server (MinIO), through the
`minio` client.

Every process that touches blobs (control plane, worker, agent, task runtime) reads the same
`FLEETFLOW_S3_*` settings (`S3Settings`), so a URI written by one resolves in all of them.

Integrity is checked end to end: the writer computes the sha256 of the content and stores it in
the object's metadata (`x-amz-meta-fleetflow-sha256`); every reader (`get`, `download`) hashes
what it received and raises `BlobIntegrityError` when the two differ, so corruption anywhere
between the writer's disk and the reader's (a bad disk, a bad proxy, an object replaced behind
Fleetflow's back) is an error, never a silently wrong input. Objects larger than the part size
are uploaded in parts (multipart upload); each part is signed with its own sha256, which the
server checks on arrival.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlparse

from minio import Minio
from minio.datatypes import PostPolicy
from minio.error import S3Error
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from fleetflow.errors import FleetflowError
from fleetflow.storage._base import (
    BlobAccessError,
    BlobIntegrityError,
    BlobNotFoundError,
    safe_key,
)

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3's smallest part (but the last)
CHECKSUM_METADATA = "fleetflow-sha256"  # sent as x-amz-meta-fleetflow-sha256
_CHECKSUM_HEADER = f"x-amz-meta-{CHECKSUM_METADATA}"
_CHUNK = MiB
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject"})


class S3Settings(BaseSettings):
    """Where the S3 server is and how to sign requests to it (`FLEETFLOW_S3_*`)."""

    model_config = SettingsConfigDict(env_prefix="FLEETFLOW_S3_", extra="ignore")

    endpoint: str = Field(
        default="",
        description="host:port of the S3 API, or a URL (http://127.0.0.1:9000) whose scheme "
        "decides TLS; e.g. s3.eu-west-1.amazonaws.com",
    )
    access_key: str | None = Field(default=None, description="access key id")
    secret_key: SecretStr | None = Field(default=None, description="secret access key")
    session_token: SecretStr | None = Field(default=None, description="for temporary keys")
    region: str | None = Field(default=None, description="bucket region (unset: asked)")
    secure: bool | None = Field(
        default=None,
        description="TLS to the endpoint; unset: false for an http:// endpoint, true otherwise",
    )
    part_size: int = Field(
        default=16 * MiB,
        ge=MIN_PART_SIZE,
        le=5 * 1024 * MiB,
        description="bytes per part of a multipart upload; larger objects are sent in parts",
    )
    require_checksums: bool = Field(
        default=True,
        description="refuse objects without a recorded sha256 (not written by Fleetflow); "
        "false: read them unverified (a recorded one is always verified)",
    )

    def connection(self) -> tuple[str, bool]:
        """`(host:port, secure)` for the minio client.

        Raises:
            FleetflowError: no endpoint is configured, or it is not host:port or a URL.
        """
        endpoint = self.endpoint.strip()
        if not endpoint:
            raise FleetflowError(
                "s3:// blob URIs need FLEETFLOW_S3_ENDPOINT (host:port or http(s)://host:port) "
                "and usually FLEETFLOW_S3_ACCESS_KEY / FLEETFLOW_S3_SECRET_KEY"
            )
        secure = self.secure
        if "://" in endpoint:
            parsed = urlparse(endpoint)
            malformed = parsed.path.strip("/") or not parsed.netloc
            if parsed.scheme not in ("http", "https") or malformed:
                raise FleetflowError(
                    f"FLEETFLOW_S3_ENDPOINT={endpoint!r}: use host:port or http(s)://host:port"
                )
            endpoint = parsed.netloc
            if secure is None:
                secure = parsed.scheme == "https"
        return endpoint, True if secure is None else secure


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def client_for(settings: S3Settings) -> Minio:
    """A (shared, thread-safe) minio client for these settings."""
    endpoint, secure = settings.connection()
    return _client(
        endpoint,
        secure,
        settings.access_key,
        _secret(settings.secret_key),
        _secret(settings.session_token),
        settings.region,
    )


@functools.lru_cache(maxsize=8)
def _client(
    endpoint: str,
    secure: bool,
    access_key: str | None,
    secret_key: str | None,
    session_token: str | None,
    region: str | None,
) -> Minio:
    return Minio(
        endpoint,
        access_key=access_key,
        secret_key=secret_key,
        session_token=session_token,
        secure=secure,
        region=region,
    )


def _uri_parts(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b` -> `("bucket", "a/b")` (the name unquoted, not yet checked)."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc or "@" in parsed.netloc or ":" in parsed.netloc:
        raise BlobAccessError(f"not an s3://bucket/key URI: {uri}")
    if parsed.query or parsed.fragment or parsed.params:
        raise BlobAccessError(f"an s3:// blob URI has no query or fragment: {uri}")
    return parsed.netloc, unquote(parsed.path).lstrip("/")


class S3BlobStore:
    """The objects of one bucket below one prefix (`s3://bucket/prefix`).

    Args:
        bucket: the bucket; it must exist (see `ensure_bucket`).
        prefix: a key prefix every object of this store lives under; `""` for the whole bucket.
        settings: endpoint and credentials (default: read from `FLEETFLOW_S3_*` now).
        part_size: bytes per multipart part (default: the settings' `part_size`).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        settings: S3Settings | None = None,
        part_size: int | None = None,
    ) -> None:
        self.settings = settings or S3Settings()
        self.bucket = bucket
        self.prefix = "/".join(safe_key(prefix).parts) if prefix.strip("/") else ""
        self.part_size = part_size or self.settings.part_size
        if self.part_size < MIN_PART_SIZE:
            raise FleetflowError(f"part size {self.part_size} is below S3's minimum of 5 MiB")
        self.client = client_for(self.settings)
        self.root_uri = f"s3://{bucket}/{quote(self.prefix)}".rstrip("/")

    @classmethod
    def from_uri(cls, root_uri: str, *, settings: S3Settings | None = None) -> S3BlobStore:
        """The store rooted at `s3://bucket[/prefix]`."""
        bucket, prefix = _uri_parts(root_uri)
        return cls(bucket, prefix, settings=settings)

    def __repr__(self) -> str:
        return f"S3BlobStore({self.root_uri!r})"

    # ----------------------------------------------------------------- names

    def _name(self, key: str) -> str:
        """The object name of `key` (relative to the root), normalised."""
        relative = "/".join(safe_key(key).parts)
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{quote(self._name(key))}"

    def _object_name(self, uri: str, *, allow_root: bool = False) -> str:
        """The object name a URI names, if it is one of this store's.

        Raises:
            BlobAccessError: another bucket, outside the prefix, or a name that is not
                normalised (`..`, `.`, empty parts): a URI this store never hands out.
        """
        bucket, name = _uri_parts(uri)
        outside = BlobAccessError(f"{uri} is outside the blob store at {self.root_uri}")
        if bucket != self.bucket:
            raise outside
        if self.prefix:
            if name.rstrip("/") == self.prefix:
                relative = ""
            elif name.startswith(self.prefix + "/"):
                relative = name[len(self.prefix) + 1 :]
            else:
                raise outside
        else:
            relative = name
        if not relative.strip("/"):
            if allow_root:
                return self.prefix
            raise BlobAccessError(f"{uri} names the root of {self.root_uri}, not an object")
        parts = relative.rstrip("/").split("/") if allow_root else relative.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise BlobAccessError(f"{uri} is not a normalised object name below {self.root_uri}")
        return self._name(relative)

    # ----------------------------------------------------------------- presigning

    def presigned_get(self, uri: str, expires: timedelta) -> str:
        """A URL that reads the object `uri` with no credentials until `expires` from now."""
        return self.client.presigned_get_object(
            self.bucket, self._object_name(uri), expires=expires
        )

    def presigned_post(self, prefix_uri: str, expires: timedelta) -> dict[str, Any]:
        """A form that uploads objects below `prefix_uri` only (an S3 POST policy), with no
        credentials, until `expires` from now: `{"url", "fields", "prefix"}`; an upload posts
        `fields`, its `key` (starting with `prefix`), its sha256 as
        `x-amz-meta-fleetflow-sha256` and the file."""
        prefix = self._object_name(prefix_uri, allow_root=True).rstrip("/") + "/"
        policy = PostPolicy(self.bucket, datetime.now(UTC) + expires)
        policy.add_starts_with_condition("key", prefix)
        policy.add_starts_with_condition(_CHECKSUM_HEADER, "")
        fields = self.client.presigned_post_policy(policy)
        endpoint, secure = self.settings.connection()
        url = f"{'https' if secure else 'http'}://{endpoint}/{quote(self.bucket)}"
        return {"url": url, "fields": fields, "prefix": prefix}

    # ----------------------------------------------------------------- writing

    def put(self, key: str, data: bytes) -> str:
        name = self._name(key)
        self.client.put_object(
            self.bucket,
            name,
            io.BytesIO(data),
            len(data),
            metadata={CHECKSUM_METADATA: hashlib.sha256(data).hexdigest()},
            part_size=self.part_size,
        )
        return self.uri(key)

    def upload(self, key: str, source: Path) -> str:
        name = self._name(key)
        with source.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
            f.seek(0)
            self.client.put_object(
                self.bucket,
                name,
                f,
                os.fstat(f.fileno()).st_size,
                metadata={CHECKSUM_METADATA: digest},
                part_size=self.part_size,
            )
        return self.uri(key)

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist yet (needs the right to create buckets)."""
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    # ----------------------------------------------------------------- reading

    def _open(self, uri: str) -> Any:
        name = self._object_name(uri)
        try:
            return self.client.get_object(self.bucket, name)
        except S3Error as exc:
            if exc.code in _NOT_FOUND_CODES:
                raise BlobNotFoundError(f"blob not found: {uri}") from None
            raise

    def _expected_digest(self, uri: str, headers: Any) -> str | None:
        expected = headers.get(_CHECKSUM_HEADER)
        if expected is None and self.settings.require_checksums:
            raise BlobIntegrityError(
                f"blob {uri} has no recorded sha256 (metadata {CHECKSUM_METADATA}), so it was "
                "not written by Fleetflow and cannot be verified; set "
                "FLEETFLOW_S3_REQUIRE_CHECKSUMS=false to read such objects unverified"
            )
        return str(expected).lower() if expected is not None else None

    @staticmethod
    def _verify(uri: str, expected: str | None, actual: str) -> None:
        if expected is not None and actual != expected:
            raise BlobIntegrityError(
                f"blob {uri} is corrupt: its content has sha256 {actual}, but {expected} was "
                "recorded when it was written"
            )

    def get(self, uri: str) -> bytes:
        response = self._open(uri)
        try:
            expected = self._expected_digest(uri, response.headers)
            data: bytes = response.read()
        finally:
            response.close()
            response.release_conn()
        self._verify(uri, expected, hashlib.sha256(data).hexdigest())
        return data

    def download(self, uri: str, dest: Path) -> None:
        response = self._open(uri)
        try:
            expected = self._expected_digest(uri, response.headers)
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
            try:
                digest = hashlib.sha256()
                with os.fdopen(fd, "wb") as f:
                    for chunk in response.stream(_CHUNK):
                        digest.update(chunk)
                        f.write(chunk)
                self._verify(uri, expected, digest.hexdigest())
                os.replace(tmp, dest)  # only verified content ever appears at `dest`
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        finally:
            response.close()
            response.release_conn()

    def exists(self, uri: str) -> bool:
        name = self._object_name(uri)
        try:
            self.client.stat_object(self.bucket, name)
        except S3Error as exc:
            if exc.code in _NOT_FOUND_CODES:
                return False
            raise
        return True

    def list(self, prefix_uri: str) -> list[str]:
        name = self._object_name(prefix_uri, allow_root=True).rstrip("/")
        found = self.client.list_objects(
            self.bucket, prefix=f"{name}/" if name else None, recursive=True
        )
        try:
            names = [obj.object_name for obj in found if obj.object_name]
        except S3Error as exc:
            if exc.code in _NOT_FOUND_CODES:
                return []
            raise
        return sorted(
            f"s3://{self.bucket}/{quote(n)}"
            for n in names
            if not n.endswith("/")  # "directory" markers some tools create
        )

    def scoped(self, prefix: str) -> S3BlobStore:
        return S3BlobStore(
            self.bucket, self._name(prefix), settings=self.settings, part_size=self.part_size
        )
