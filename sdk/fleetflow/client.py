"""`fleetflow.Client`: the control plane's REST API for Python programs (and the CLI).

One implementation of everything a remote run needs (bundling and registering a workflow,
uploading its File/Directory inputs, launching, following, typed outputs, cancelling), so
`fleetflow run --remote` and a notebook calling `Client().run(pipeline, n=3)` behave the same.
The tenancy calls (who am I, tenants, users and tokens, roles, quotas, usage, the audit log)
are thin typed wrappers over the REST API, which enforces who may do what.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn
from urllib.parse import quote

import httpx

from fleetflow.config import (
    CliConfig,
    ClientConfigError,
    config_path,
    is_http_url,
    load_cli_config,
    with_env_overrides,
)
from fleetflow.errors import FleetflowError
from fleetflow.files import (
    Directory,
    directory_digest,
    file_digest,
    has_blobs,
    local_blob_path,
    map_blob_literals,
)
from fleetflow.ir import TypeKind, WorkflowSpec
from fleetflow.timestamps import parse_time

if TYPE_CHECKING:
    from fleetflow.workflow import WorkflowFunction

TERMINAL_EXECUTION_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})

# The roles the control plane grants; every one but platform-admin is granted in a tenant.
ROLES = ("platform-admin", "tenant-admin", "developer", "viewer")
TENANT_HEADER = "X-Fleetflow-Tenant"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# How often create_execution sends a request with an idempotency key whose answer was lost.
_CREATE_TRIES = 3

UsageBucket = Literal["minute", "hour", "day"]
UsageGroupBy = Literal["cluster", "gpu_type", "workflow"]
PrincipalKind = Literal["user", "service"]

__all__ = [
    "ROLES",
    "TENANT_HEADER",
    "ApiError",
    "AuthenticationError",
    "Client",
    "ClientConfigError",
    "ControlPlaneUnreachableError",
    "DownloadedOutputs",
    "ExecutionNotSucceededError",
    "ExecutionResult",
    "ExecutionTimeoutError",
    "LogLine",
    "PermissionDeniedError",
]


class ApiError(FleetflowError):
    """The control plane refused a request; `detail` is its explanation (and `message`, when
    given, what to tell the user instead)."""

    def __init__(
        self,
        status_code: int,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
        *,
        message: str | None = None,
    ):
        self.status_code = status_code
        self.detail = detail
        self.errors = errors or []
        lines = [message or detail]
        for error in self.errors:
            line = f"{error.get('field', '')}: {error.get('message', '')}".strip(": ")
            if line and line not in detail:  # the API often already says it in `detail`
                lines.append(f"  {line}")
        super().__init__("\n".join(lines))


class AuthenticationError(ApiError):
    """The control plane refused the request's token (401): none, unknown, expired or revoked.

    The message says where the token came from and how to get a working one.
    """


class PermissionDeniedError(ApiError):
    """The token is valid but its principal may not do this (403): its roles in the acting
    tenant do not allow it. The message names the acting tenant when it was not the caller's
    choice (FLEETFLOW_TENANT, the CLI config)."""


class ControlPlaneUnreachableError(FleetflowError):
    """No control plane answered at the configured URL."""


class ExecutionTimeoutError(FleetflowError, TimeoutError):
    """`wait_for_execution` gave up; the execution itself goes on."""


def _url_source(api_url: str | None) -> str:
    """Where the URL came from, so an error message says what to change."""
    if api_url:
        return "given by the caller"
    if os.environ.get("FLEETFLOW_API_URL"):
        return "from FLEETFLOW_API_URL"
    path = config_path()
    if path.is_file():
        return f"from {path}"
    return "the default; `fleetflow dev up` writes the CLI config"


def _override_source(given: str | None, env: str, saved: str | None) -> str | None:
    """Where a token or tenant came from (caller, environment, file); None when unset."""
    if given:
        return "given by the caller"
    if os.environ.get(env):
        return f"from {env}"
    if saved:
        return f"from {config_path()}"
    return None


def _query_time(value: datetime | str) -> str:
    """A query's ISO 8601 time; a naive datetime is taken as UTC."""
    if isinstance(value, str):
        return value
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


class ExecutionNotSucceededError(FleetflowError):
    """Outputs were asked of an execution that did not succeed (or has not finished)."""


@dataclass(frozen=True)
class ExecutionResult:
    """A finished execution, with its outputs as the workflow's declared Python type.

    Attributes:
        id: the execution id (`ex-…`).
        status: `SUCCEEDED`, `FAILED` or `CANCELLED`.
        outputs: what calling the workflow locally would return (a dataclass, a NamedTuple,
            a `File` readable at its path when the blob store is a local directory…);
            None unless the execution succeeded.
        error: the failure (`node_id`, `message`, `traceback`) of a failed execution.
        execution: the API's full answer, task attempts included.
    """

    id: str
    status: str
    outputs: Any
    error: dict[str, Any] | None
    execution: dict[str, Any]

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"


@dataclass(frozen=True)
class DownloadedOutputs:
    """What `Client.download_outputs` wrote.

    Attributes:
        directory: the directory given; each output's files are below `directory/<output>/`.
        files: every file written, in the order written.
        outputs: the execution's outputs (JSON literals by name) with each `File` and
            `Directory` naming its local copy (a `file://` URI), as a local run names them.
    """

    directory: Path
    files: list[Path]
    outputs: dict[str, Any]


@dataclass(frozen=True)
class LogLine:
    """One line a task attempt printed, as `Client.follow_logs` yields it.

    Attributes:
        attempt_id: the attempt (`at-…`).
        node_id: its node (`n1-train`).
        map_index: its element of a map node; None for other nodes.
        attempt_number: 1 for the first try, 2 for the first retry…
        text: the line, without its line break.
        gap: True for a marker, not a printed line: output was lost here (the attempt printed
            more than the control plane keeps between two reads).
    """

    attempt_id: str
    node_id: str
    map_index: int | None
    attempt_number: int
    text: str
    gap: bool = False


_TERMINAL_ATTEMPT_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "LOST"})
_NOT_STARTED_ATTEMPT_STATES = frozenset({"PENDING", "ASSIGNED", "LEASED"})
_LOG_MATCH_CHARS = 4096  # how much of the last read output locates it in the next read
_LOGS_PER_REQUEST = 100  # the logs route's limit on attempt ids per request
GAP_TEXT = "[output lost here: it outgrew what the control plane keeps between two reads]"


@dataclass
class _LogCursor:
    """What was read of one attempt's stored output, to yield only what was added since."""

    attempt: dict[str, Any]
    read_length: int = 0  # length of the text last read
    tail: str = ""  # its last characters, to find where it ends in the next read
    partial: str = ""  # a line not yet ended by a line break
    ended_at: float | None = None  # monotonic time the attempt was first seen ended
    done: bool = False

    def lines(self, text: str | None, *, final: bool) -> Iterator[LogLine]:
        """The lines `text` (the whole stored output now) adds; the unfinished last one too
        when `final`."""
        if text is not None:
            end = self.read_length
            if len(text) >= end and text[end - len(self.tail) : end] == self.tail:
                added, gap = text[end:], False  # it only grew: the usual case
            else:  # the stored window moved on (it keeps the last MiB): find where we were
                at = text.rfind(self.tail) if self.tail else -1
                added, gap = (text[at + len(self.tail) :], False) if at >= 0 else (text, True)
            self.read_length, self.tail = len(text), text[-_LOG_MATCH_CHARS:]
            if gap:
                if self.partial:
                    yield self._line(self.partial)
                    self.partial = ""
                yield self._line(GAP_TEXT, gap=True)
            *complete, self.partial = (self.partial + added).split("\n")
            for line in complete:
                yield self._line(line.removesuffix("\r"))
        if final and self.partial:
            yield self._line(self.partial.removesuffix("\r"))
            self.partial = ""

    def _line(self, text: str, *, gap: bool = False) -> LogLine:
        attempt = self.attempt
        return LogLine(
            attempt_id=attempt["id"],
            node_id=attempt["node_id"],
            map_index=attempt.get("map_index"),
            attempt_number=attempt["attempt_number"],
            text=text,
            gap=gap,
        )


def _server_time(response: httpx.Response) -> datetime | None:
    """The control plane's clock (the `Date` header), to judge its timestamps without ours."""
    try:
        return parsedate_to_datetime(response.headers["date"])
    except (KeyError, TypeError, ValueError):
        return None


def _below(directory: Path, relative: str) -> Path:
    """`directory/relative` for a path the control plane gave, refusing one that would leave
    `directory`."""
    parts = relative.split("/")
    if relative == ".":
        return directory
    if relative.startswith("/") or any(p in ("", ".", "..") or "\\" in p for p in parts):
        raise FleetflowError(f"refusing to write {relative!r}: not a path below {directory}")
    return directory.joinpath(*parts)


def _with_local_uris(literal: Any, local: Mapping[str, str]) -> Any:
    """`literal` with every `{"uri": …}` whose URI was downloaded naming the local copy."""
    if isinstance(literal, list):
        return [_with_local_uris(item, local) for item in literal]
    if isinstance(literal, dict):
        copied = {key: _with_local_uris(value, local) for key, value in literal.items()}
        uri = literal.get("uri")
        if isinstance(uri, str) and uri in local:
            copied["uri"] = local[uri]
        return copied
    return literal


_UPLOAD_NAME = re.compile(r"[^A-Za-z0-9._+-]")
_CHUNK = 1024 * 1024


def _upload_name(name: str) -> str:
    """A file name the uploads API accepts; the input's literal keeps the real name."""
    safe = _UPLOAD_NAME.sub("_", name)[:200]
    return safe if safe.strip(".") else "file"


def _path_part(value: str) -> str:
    return quote(value, safe="")


def _tenant_path(tenant: str) -> str:
    return f"/api/v1/admin/tenants/{_path_part(tenant)}"


def _user_path(tenant: str, user: str) -> str:
    return f"{_tenant_path(tenant)}/users/{_path_part(user)}"


def _expiry(expires_in_days: int | None, never_expires: bool) -> dict[str, int | None]:
    """A new token's lifetime as the API takes it: a number of days, null for never, left
    out for the control plane's default."""
    if never_expires:
        if expires_in_days is not None:
            raise ValueError("a token either expires in some days or never, not both")
        return {"expires_in_days": None}
    return {} if expires_in_days is None else {"expires_in_days": expires_in_days}


def _read_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


class Client:
    """Talks to one control plane: register and run workflows, follow and cancel executions,
    read their outputs back as Python values.

        client = Client()                      # URL and token from the CLI config
        result = client.run(pipeline, n=100)   # register, upload File inputs, run, wait
        result.outputs                         # e.g. a Metrics dataclass
        Client(tenant="research").quota_status()  # act in another tenant you have a role in

    Args:
        url: the control plane's base URL; default from `FLEETFLOW_API_URL` or the CLI config
            file (`fleetflow login` or `fleetflow dev up` writes it).
        token: bearer token; default from `FLEETFLOW_TOKEN` or the CLI config.
        tenant: the tenant to act in (sent as `X-Fleetflow-Tenant`); default from
            `FLEETFLOW_TENANT` or the CLI config, else the token's home tenant.
        timeout: seconds for each HTTP request.
        config: use these settings instead of the CLI config file and the environment.

    Raises:
        ClientConfigError: the CLI config file is unreadable, or the URL is not http(s).

    Every method raises `ApiError` (with the server's explanation) when the control plane
    refuses a request: `AuthenticationError` when it refuses the token (401),
    `PermissionDeniedError` when the principal may not do that (403). When no control plane
    answers, `ControlPlaneUnreachableError`.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        tenant: str | None = None,
        *,
        timeout: float = 30,
        config: CliConfig | None = None,
    ):
        if config is None:
            saved = load_cli_config(overrides=False)
            config = with_env_overrides(saved)
            self._url_source = _url_source(url)
            self._token_source = _override_source(token, "FLEETFLOW_TOKEN", saved.token)
            self._tenant_source = _override_source(tenant, "FLEETFLOW_TENANT", saved.tenant)
        else:
            self._url_source = self._token_source = self._tenant_source = "given by the caller"
        self.api_url = (url or config.api_url).rstrip("/")
        if not is_http_url(self.api_url):
            raise ClientConfigError(
                f"control plane URL {self.api_url!r} ({self._url_source}) is not an "
                "http(s):// URL, e.g. http://127.0.0.1:8080"
            )
        token = token or config.token
        self.tenant: str | None = tenant or config.tenant
        """The tenant requests act in (`X-Fleetflow-Tenant`); None: the token's home tenant."""
        if not token:
            self._token_source = None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if self.tenant:
            headers[TENANT_HEADER] = self.tenant
        self._http = httpx.Client(base_url=self.api_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _unreachable(self, exc: httpx.TransportError) -> ControlPlaneUnreachableError:
        reason = str(exc) or exc.__class__.__name__
        return ControlPlaneUnreachableError(
            f"cannot reach the control plane at {self.api_url} ({self._url_source}): "
            f"{reason}. Is it running? Start a local one with `fleetflow dev up`."
        )

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400 and not (method == "HEAD" and response.status_code == 404):
            self._raise_refusal(response)
        return response

    @contextmanager
    def _stream(self, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A GET whose body is read as it arrives; refusals raise as for `_request`."""
        try:
            with self._http.stream("GET", path, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
                    self._raise_refusal(response)
                yield response
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def _raise_refusal(self, response: httpx.Response) -> NoReturn:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            detail = str(body.get("detail") or response.reason_phrase)
            errors = body.get("errors")
        else:
            detail, errors = response.text or response.reason_phrase, None
        if response.status_code == 401:
            message = self._refused_token_message(detail)
            raise AuthenticationError(401, detail, errors, message=message)
        if response.status_code == 403:
            message = self._denied_message(detail)
            raise PermissionDeniedError(403, detail, errors, message=message)
        raise ApiError(response.status_code, detail, errors)

    def _refused_token_message(self, detail: str) -> str:
        login = f"`fleetflow login {self.api_url} --token …`"
        if self._token_source is None:
            return (
                f"the control plane at {self.api_url} needs a token ({detail}); log in with "
                f"{login} or set FLEETFLOW_TOKEN"
            )
        if self._token_source == "from FLEETFLOW_TOKEN":
            fix = "set FLEETFLOW_TOKEN to a valid token (it overrides `fleetflow login`)"
        else:
            fix = f"log in with {login}"
        return (
            f"the control plane at {self.api_url} refused the token {self._token_source} "
            f"({detail}); {fix}"
        )

    def _denied_message(self, detail: str) -> str:
        """A stale FLEETFLOW_TENANT or saved tenant is a likely cause: say which was used."""
        if not self.tenant or self.tenant in detail:
            return detail
        if self._tenant_source in (None, "given by the caller"):
            return f"{detail} (acting in tenant {self.tenant})"
        return f"{detail} (acting in tenant {self.tenant}, {self._tenant_source})"

    # Code bundles -------------------------------------------------------------------------

    def has_bundle(self, digest: str) -> bool:
        return self._request("HEAD", f"/api/v1/bundles/{digest}").status_code == 200

    def upload_bundle(self, digest: str, data: bytes) -> bool:
        """Upload a bundle unless the control plane has it; True when bytes were sent."""
        if self.has_bundle(digest):
            return False
        self._request(
            "PUT",
            f"/api/v1/bundles/{digest}",
            content=data,
            headers={"Content-Type": "application/gzip"},
        )
        return True

    # File and Directory inputs --------------------------------------------------------------

    def upload_file(self, path: str | os.PathLike[str]) -> str:
        """Upload a local file (content-addressed); the URI to put in its input literal."""
        local = Path(path)
        if not local.is_file():
            raise FleetflowError(f"cannot upload {local}: not a file")
        digest = file_digest(local)
        response = self._request(
            "PUT",
            f"/api/v1/uploads/files/{digest}/{_upload_name(local.name)}",
            content=_read_chunks(local),
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(local.stat().st_size),
            },
        )
        return str(response.json()["uri"])

    def upload_directory(self, path: str | os.PathLike[str]) -> str:
        """Upload every file below a local directory; the URI of the uploaded directory.

        Raises:
            FleetflowError: not a directory, or an empty one (there is nothing to name).
        """
        local = Path(path)
        if not local.is_dir():
            raise FleetflowError(f"cannot upload {local}: not a directory")
        files = Directory(local).files()
        if not files:
            raise FleetflowError(f"cannot upload directory {local}: it holds no files")
        upload_id = directory_digest(local)
        uri = ""
        for file in files:
            relative = quote(file.relative_to(local).as_posix())
            response = self._request(
                "PUT",
                f"/api/v1/uploads/dirs/{upload_id}/{relative}",
                content=_read_chunks(file),
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(file.stat().st_size),
                },
            )
            uri = str(response.json()["uri"])
        return uri

    def upload_inputs(
        self, workflow_fn: WorkflowFunction[..., Any], literals: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Input literals with every local File and Directory uploaded and named by the URI
        the control plane gave it (executions may only read its own blobs)."""

        def upload(kind: TypeKind, blob: dict[str, Any]) -> Any:
            path = local_blob_path(str(blob["uri"]))
            if path is None:
                return blob  # already a blob of some store; the control plane checks it
            if kind is TypeKind.FILE:
                return {**blob, "uri": self.upload_file(path)}
            return {**blob, "uri": self.upload_directory(path)}

        uploaded = dict(literals)
        for variable in workflow_fn.spec.interface.inputs:
            if variable.name in uploaded and has_blobs(variable.type):
                uploaded[variable.name] = map_blob_literals(
                    uploaded[variable.name], variable.type, upload
                )
        return uploaded

    # Workflows and executions ---------------------------------------------------------------

    def register_workflow(
        self, spec: WorkflowSpec, bundle_digest: str, version: str | None = None
    ) -> dict[str, Any]:
        body = {"spec": spec.model_dump(mode="json"), "bundle_digest": bundle_digest}
        if version:
            body["version"] = version
        return self._request("POST", "/api/v1/workflows", json=body).json()

    def register(
        self,
        workflow_fn: WorkflowFunction[..., Any],
        *,
        root: str | os.PathLike[str] | None = None,
        version: str | None = None,
    ) -> dict[str, Any]:
        """Upload the workflow's code bundle (unless the control plane has it) and register
        its spec.

        Args:
            workflow_fn: a `@workflow`. Its code bundle is the directory its module is imported
                from (for a script run as `__main__`, the script's directory, the script being
                imported as a module named after the file, as `fleetflow run` does).
            root: the directory to bundle instead.
            version: a version name; default: a hash of the spec and the bundle.

        Returns:
            The registered version (`name`, `version`, `bundle_digest`, `interface`…) and
            `bundle`: its `digest`, `size_bytes` and whether it was `uploaded` now.
        """
        from fleetflow.bundle import build_bundle
        from fleetflow.loader import workflow_source

        if root is None:
            workflow_fn, bundle_root = workflow_source(workflow_fn)
        else:
            bundle_root = Path(root)
        digest, data = build_bundle(bundle_root)
        uploaded = self.upload_bundle(digest, data)
        registered = self.register_workflow(workflow_fn.spec, digest, version)
        registered["bundle"] = {"digest": digest, "size_bytes": len(data), "uploaded": uploaded}
        return registered

    def list_workflows(
        self, *, name: str | None = None, latest_only: bool = False, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Registered workflow versions (`name`, `version`, `bundle_digest`, `created_at`,
        `interface`), by name, newest version first; with `latest_only`, only the newest
        version of each workflow."""
        params: dict[str, Any] = {"limit": limit}
        if name is not None:
            params["name"] = name
        if latest_only:
            params["latest_only"] = "true"
        return self._request("GET", "/api/v1/workflows", params=params).json()

    def get_workflow(self, name: str, version: str | None = None) -> dict[str, Any]:
        """One version of a registered workflow (default: the newest), as `list_workflows`
        shows it plus its whole compiled `spec` (tasks with their resources, nodes)."""
        params = {} if version is None else {"version": version}
        path = f"/api/v1/workflows/{_path_part(name)}"
        return self._request("GET", path, params=params).json()

    def workflow_versions(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        """The registered versions of workflow `name`, newest first."""
        path = f"/api/v1/workflows/{_path_part(name)}/versions"
        return self._request("GET", path, params={"limit": limit}).json()

    def create_execution(
        self,
        workflow: str,
        inputs: dict[str, Any],
        version: str | None = None,
        *,
        priority: int = 0,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Start an execution of a registered workflow on JSON-literal inputs.

        `priority` (-1000..1000) orders it among its tenant's waiting work: higher first.

        With an `idempotency_key` (e.g. a UUID; sent as `Idempotency-Key`) the request is safe
        to repeat: the control plane answers a repeat with the execution the first one created.
        So when the answer is lost (the connection drops), the request is sent again, up to
        `_CREATE_TRIES` times in all, and never starts a second execution.
        """
        body: dict[str, Any] = {"workflow": workflow, "inputs": inputs}
        if version:
            body["version"] = version
        if priority:
            body["priority"] = priority
        if idempotency_key is None:
            return self._request("POST", "/api/v1/executions", json=body).json()
        headers = {IDEMPOTENCY_HEADER: idempotency_key}
        for attempt in range(1, _CREATE_TRIES + 1):
            try:
                return self._request(
                    "POST", "/api/v1/executions", json=body, headers=headers
                ).json()
            except ControlPlaneUnreachableError:
                if attempt == _CREATE_TRIES:
                    raise
                time.sleep(0.5 * attempt)  # back off before the retry, not a synchronisation
        raise AssertionError("unreachable")

    def launch(
        self,
        workflow_fn: WorkflowFunction[..., Any],
        inputs: Mapping[str, Any],
        *,
        version: str | None = None,
        name: str | None = None,
        priority: int = 0,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Start an execution of a registered workflow on Python input values: checked and
        converted with the workflow's types, File/Directory inputs uploaded.

        Each call creates one execution even when its request has to be resent: it sends an
        `Idempotency-Key` (`idempotency_key`, or a fresh UUID).

        Args:
            workflow_fn: the workflow the inputs are typed by.
            inputs: input name -> Python value; inputs left out take their defaults.
            version: the registered version to run; default: the latest.
            name: the registered name, when it differs from `workflow_fn`'s (a `__main__`
                script, see `register`).
            priority: among the tenant's waiting tasks, higher starts first (-1000..1000).

        Raises:
            WorkflowInputError, LiteralValidationError: the inputs do not fit the workflow.
        """
        literals = self.upload_inputs(workflow_fn, workflow_fn.inputs_to_literals(inputs))
        return self.create_execution(
            name or workflow_fn.spec.name,
            literals,
            version=version,
            priority=priority,
            idempotency_key=idempotency_key or uuid.uuid4().hex,
        )

    def run(
        self,
        workflow_fn: WorkflowFunction[..., Any],
        *,
        wait: bool = True,
        timeout: float | None = None,
        **inputs: Any,
    ) -> Any:
        """Register the workflow, upload its File/Directory inputs, run it on the platform.

        Args:
            workflow_fn: a `@workflow`.
            wait: wait for the execution to finish.
            timeout: with `wait`, give up after this many seconds (the execution goes on).
            **inputs: the workflow's inputs as Python values, as for a local call (a workflow
                input named `wait` or `timeout` cannot be passed this way: use `register` and
                `launch`).

        Returns:
            With `wait`, an `ExecutionResult` (status, typed `outputs`, error); without, the
            API's execution (a dict with its `id`).

        Raises:
            ExecutionTimeoutError: still running after `timeout` seconds.
        """
        registered = self.register(workflow_fn)
        execution = self.launch(
            workflow_fn, inputs, version=registered["version"], name=registered["name"]
        )
        if not wait:
            return execution
        final = self.wait_for_execution(execution["id"], timeout=timeout)
        return self._result(final, workflow_fn)

    def _result(
        self, execution: dict[str, Any], workflow_fn: WorkflowFunction[..., Any]
    ) -> ExecutionResult:
        outputs = None
        if execution["status"] == "SUCCEEDED":
            outputs = workflow_fn.outputs_to_python(execution["outputs"] or {})
        return ExecutionResult(
            id=execution["id"],
            status=execution["status"],
            outputs=outputs,
            error=execution.get("error"),
            execution=execution,
        )

    def get_execution(self, execution_id: str) -> dict[str, Any]:
        """An execution: status, inputs, outputs (JSON literals) or error, task attempts."""
        return self._request("GET", f"/api/v1/executions/{_path_part(execution_id)}").json()

    def execution_logs(
        self,
        execution_id: str,
        *,
        node: str | None = None,
        attempt: int | None = None,
        attempt_ids: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """What each task attempt printed (its last MiB), oldest attempt first: dicts with
        `attempt_id`, `node_id`, `map_index`, `attempt_number`, `status`, `cluster` and `log`
        (None when nothing was stored). `node`, `attempt` (a number) and `attempt_ids` narrow
        which attempts."""
        params: dict[str, Any] = {}
        if node is not None:
            params["node"] = node
        if attempt is not None:
            params["attempt"] = attempt
        path = f"/api/v1/executions/{_path_part(execution_id)}/logs"
        if attempt_ids is None:
            body = self._request("GET", path, params=params).json()
            return list(body["attempts"])
        wanted = list(dict.fromkeys(attempt_ids))
        attempts: list[dict[str, Any]] = []
        for start in range(0, len(wanted), _LOGS_PER_REQUEST):
            batch = {**params, "attempt_id": wanted[start : start + _LOGS_PER_REQUEST]}
            attempts += self._request("GET", path, params=batch).json()["attempts"]
        return attempts

    def follow_logs(
        self,
        execution_id: str,
        *,
        node: str | None = None,
        attempt: int | None = None,
        poll_interval: float = 1.0,
        final_log_grace: float = 3.0,
    ) -> Iterator[LogLine]:
        """Every line the execution's task attempts print, as they print it, across retries
        and map elements, until the execution has ended and each attempt's last output was read.

        This polls: the control plane holds each attempt's output as its agent last copied
        it (every few seconds while it runs, once more when it ends; its last MiB), so every
        `poll_interval` seconds this reads the copies of the attempts that may still add
        output and yields the lines added since the previous read (a `gap` line where output
        was lost between two reads). Lines of different attempts arrive in the order they are
        read, attempt by attempt. The final copy is stored moments after an attempt ends, so an
        attempt seen ending is read again until `final_log_grace` seconds have passed.

        Args:
            execution_id: the execution.
            node: only this node's attempts.
            attempt: only attempts with this number (1: first tries).
            poll_interval: seconds between reads.
            final_log_grace: how long an ended attempt's output is still read.
        """
        cursors: dict[str, _LogCursor] = {}
        path = f"/api/v1/executions/{_path_part(execution_id)}"
        while True:
            response = self._request("GET", path)
            execution = response.json()
            server_now = _server_time(response)
            now = time.monotonic()
            execution_over = execution["status"] in TERMINAL_EXECUTION_STATES
            reading: list[tuple[_LogCursor, bool]] = []
            for entry in execution.get("attempts", []):
                if entry.get("cache_hit") or (node is not None and entry["node_id"] != node):
                    continue
                if attempt is not None and entry["attempt_number"] != attempt:
                    continue
                cursor = cursors.setdefault(entry["id"], _LogCursor(entry))
                cursor.attempt = entry
                ended = entry["status"] in _TERMINAL_ATTEMPT_STATES or execution_over
                if cursor.done or (entry["status"] in _NOT_STARTED_ATTEMPT_STATES and not ended):
                    continue
                if ended and cursor.ended_at is None:
                    cursor.ended_at = now
                    finished = parse_time(entry.get("finished_at"))
                    if server_now and finished:  # long over: its final output is stored
                        if (server_now - finished).total_seconds() > final_log_grace + 1:
                            cursor.ended_at = now - final_log_grace
                final = cursor.ended_at is not None and now - cursor.ended_at >= final_log_grace
                reading.append((cursor, final))
            if reading:
                ids = [cursor.attempt["id"] for cursor, _ in reading]
                logs = {
                    a["attempt_id"]: a.get("log")
                    for a in self.execution_logs(execution_id, attempt_ids=ids)
                }
                for cursor, final in reading:
                    yield from cursor.lines(logs.get(cursor.attempt["id"]), final=final)
                    cursor.done = final
            if execution_over and all(cursor.done for cursor in cursors.values()):
                return
            time.sleep(poll_interval)

    def list_executions(self, limit: int = 50, status: str | None = None) -> list[dict[str, Any]]:
        """Recent executions, newest first."""
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        body = self._request("GET", "/api/v1/executions", params=params).json()
        return body["items"] if isinstance(body, dict) else body

    def _succeeded(self, execution_id: str) -> dict[str, Any]:
        execution = self.get_execution(execution_id)
        if execution["status"] != "SUCCEEDED":
            error = execution.get("error") or {}
            why = f": {error['message']}" if error.get("message") else ""
            raise ExecutionNotSucceededError(
                f"execution {execution_id} is {execution['status']}{why}; it has no outputs"
            )
        return execution

    def outputs(
        self,
        execution_id: str,
        workflow_fn: WorkflowFunction[..., Any],
        *,
        download_to: str | os.PathLike[str] | None = None,
    ) -> Any:
        """The outputs of a succeeded execution as `workflow_fn`'s declared return type.

        Args:
            execution_id: the execution.
            workflow_fn: the workflow it ran, whose return type the outputs take.
            download_to: a local directory to download the `File` and `Directory` values into
                first (as `download_outputs`), so that they are readable on this machine
                whatever the blob store.

        Raises:
            ExecutionNotSucceededError: the execution failed, was cancelled or is still going.
        """
        if download_to is not None:
            downloaded = self.download_outputs(execution_id, download_to)
            return workflow_fn.outputs_to_python(downloaded.outputs)
        execution = self._succeeded(execution_id)
        return workflow_fn.outputs_to_python(execution["outputs"] or {})

    def get_output(self, execution_id: str, name: str) -> dict[str, Any]:
        """One output of a succeeded execution: `type`, `value` (its JSON literal) and
        `blobs`, each `File` or `Directory` in it (`kind`, `at`, `uri`, `path`, and `files`:
        the paths `download_output_file` takes, relative to a directory of the output's own).
        """
        path = f"/api/v1/executions/{_path_part(execution_id)}/outputs/{_path_part(name)}"
        return self._request("GET", path).json()

    def download_output_file(
        self, execution_id: str, name: str, path: str, dest: str | os.PathLike[str]
    ) -> Path:
        """Stream one file of output `name` (a path `get_output` lists) to the local `dest`,
        which appears complete or not at all; returns `dest`."""
        target = Path(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        url = (
            f"/api/v1/executions/{_path_part(execution_id)}/outputs/{_path_part(name)}"
            f"/files/{quote(path)}"
        )
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
        try:
            with self._stream(url) as response, partial.open("wb") as out:
                for chunk in response.iter_bytes(_CHUNK):
                    out.write(chunk)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return target

    def download_outputs(
        self,
        execution_id: str,
        directory: str | os.PathLike[str],
        *,
        names: Iterable[str] | None = None,
    ) -> DownloadedOutputs:
        """Download the `File` and `Directory` values in a succeeded execution's outputs,
        through the control plane (with this client's rights), below `directory/<output>/`.

        Where each lands: a `File` output `model` at `model/<its file name>`, a `Directory`
        output `data` at `data/`, element 2 of a `list[File]` output at `files/2/<name>`,
        field `text` of a dataclass output at `report/text/<name>`.

        Args:
            execution_id: the execution.
            directory: where to write (created if needed); existing files are replaced.
            names: only these outputs; default: all.

        Returns:
            The directory, the files written, and the outputs naming the local copies.

        Raises:
            ExecutionNotSucceededError: the execution has not succeeded.
        """
        execution = self._succeeded(execution_id)
        outputs: dict[str, Any] = execution.get("outputs") or {}
        chosen = list(outputs) if names is None else list(names)
        unknown = [name for name in chosen if name not in outputs]
        if unknown:
            raise FleetflowError(
                f"execution {execution_id} has no output {unknown[0]!r} "
                f"(its outputs: {', '.join(outputs) or 'none'})"
            )
        root = Path(directory)
        written: list[Path] = []
        local: dict[str, str] = {}
        for name in chosen:
            for blob in self.get_output(execution_id, name)["blobs"]:
                base = _below(root, name)
                for relative in blob["files"]:
                    target = _below(base, relative)
                    written.append(self.download_output_file(execution_id, name, relative, target))
                where = _below(base, blob["path"])
                if blob["kind"] == "directory":
                    where.mkdir(parents=True, exist_ok=True)  # an empty directory has no files
                local.setdefault(blob["uri"], where.resolve().as_uri())
        return DownloadedOutputs(
            directory=root, files=written, outputs=_with_local_uris(outputs, local)
        )

    def cancel(self, execution_id: str) -> dict[str, Any]:
        """Ask the control plane to cancel an execution; its running attempts are stopped.

        Idempotent. Returns the execution as it is right after the request (the cancellation
        itself completes moments later: `wait_for_execution` sees it CANCELLED).
        """
        path = f"/api/v1/executions/{_path_part(execution_id)}/cancel"
        return self._request("POST", path).json()

    cancel_execution = cancel

    def wait_for_execution(
        self,
        execution_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 0.5,
        on_change: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the execution is terminal; `on_change` sees each new snapshot.

        Raises:
            ExecutionTimeoutError: still not terminal after `timeout` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last_key: object = None
        while True:
            execution = self.get_execution(execution_id)
            key = (execution["status"], tuple(a["status"] for a in execution.get("attempts", [])))
            if on_change is not None and key != last_key:
                on_change(execution)
            last_key = key
            if execution["status"] in TERMINAL_EXECUTION_STATES:
                return execution
            if deadline is not None and time.monotonic() > deadline:
                raise ExecutionTimeoutError(
                    f"execution {execution_id} still {execution['status']} after {timeout:g}s"
                )
            time.sleep(poll_interval)

    # Clusters (admin) -----------------------------------------------------------------------

    def create_cluster(self, name: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Create a cluster; the answer's `agent_token` is shown this once and never again.

        Returns:
            `cluster` (as `get_cluster` returns it) and `agent_token`, for its agent's
            `FLEETFLOW_AGENT_TOKEN`.
        """
        body = {"name": name, "labels": dict(labels or {})}
        return self._request("POST", "/api/v1/admin/clusters", json=body).json()

    def list_clusters(self) -> list[dict[str, Any]]:
        """Every cluster, by name: status (online/degraded/offline), agent version, last
        heartbeat, capacity and active attempts."""
        return self._request("GET", "/api/v1/clusters").json()

    def get_cluster(self, name: str) -> dict[str, Any]:
        """One cluster, as `list_clusters` shows it."""
        return self._request("GET", f"/api/v1/clusters/{_path_part(name)}").json()

    def rotate_cluster_token(self, name: str) -> dict[str, Any]:
        """Give a cluster a new agent token, returned this once (`agent_token`); the old token
        stops working at once, so its agent must be restarted with the new one."""
        path = f"/api/v1/admin/clusters/{_path_part(name)}/rotate-token"
        return self._request("POST", path).json()

    # Previews -------------------------------------------------------------------------------

    def preview_execution(
        self, workflow: str, inputs: dict[str, Any], version: str | None = None
    ) -> dict[str, Any]:
        """What `create_execution` would do now, without creating anything: the inputs are
        validated the same way; for each task, the clusters it fits on, the one it would be
        placed on (and GPU type), and why the others are excluded."""
        body: dict[str, Any] = {"workflow": workflow, "inputs": inputs}
        if version:
            body["version"] = version
        return self._request("POST", "/api/v1/executions/preview", json=body).json()

    # Identity -------------------------------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        """Who the token belongs to, as the control plane sees it.

        Returns:
            `principal` (its name), `kind` (`user` or `service`), `tenant` (its home tenant),
            `acting_tenant` (the tenant this client's requests act in) and `roles`, each
            `{"role", "tenant"}` (tenant `*`: every tenant).
        """
        return self._request("GET", "/api/v1/whoami").json()

    # Tenants, users, tokens and roles (admin) -----------------------------------------------

    def create_tenant(self, name: str) -> dict[str, Any]:
        """Create a tenant (platform admins); `name` and `created_at`."""
        return self._request("POST", "/api/v1/admin/tenants", json={"name": name}).json()

    def list_tenants(self) -> list[dict[str, Any]]:
        """Every tenant (`name`, `created_at`)."""
        return self._request("GET", "/api/v1/admin/tenants").json()["tenants"]

    def get_tenant(self, name: str) -> dict[str, Any]:
        """One tenant: `name`, `created_at`, `quota` (None: unlimited), the `clusters` it may
        run on and how many `users` it has."""
        return self._request("GET", f"/api/v1/admin/tenants/{_path_part(name)}").json()

    def create_user(
        self,
        tenant: str,
        name: str,
        role: str,
        *,
        kind: PrincipalKind = "user",
        expires_in_days: int | None = None,
        never_expires: bool = False,
    ) -> dict[str, Any]:
        """Create a user or service account in `tenant` with one role there, and its first
        token.

        Args:
            tenant: the user's home tenant.
            name: the user's name.
            role: one of `ROLES`.
            kind: `user` for a person, `service` for a program (CI, a scheduler).
            expires_in_days: the token's lifetime; None: the control plane's default.
            never_expires: a token that does not expire (not with `expires_in_days`).

        Returns:
            `user` (`name`, `kind`, `tenant`, `roles`, `created_at`), and `token`, `token_id`,
            `expires_at`: the token is in this answer only, the control plane keeps its hash.
        """
        body = {"name": name, "role": role, "kind": kind, **_expiry(expires_in_days, never_expires)}
        return self._request("POST", f"{_tenant_path(tenant)}/users", json=body).json()

    def list_users(self, tenant: str) -> list[dict[str, Any]]:
        """The users and service accounts of `tenant`, with their roles."""
        return self._request("GET", f"{_tenant_path(tenant)}/users").json()["users"]

    def create_token(
        self,
        tenant: str,
        user: str,
        *,
        expires_in_days: int | None = None,
        never_expires: bool = False,
    ) -> dict[str, Any]:
        """Give a user another token (its others keep working until revoked); its lifetime as
        for `create_user`.

        Returns:
            `token` (in this answer only), `token_id` (to revoke it) and `expires_at`.
        """
        path = f"{_user_path(tenant, user)}/tokens"
        body = _expiry(expires_in_days, never_expires)
        return self._request("POST", path, json=body).json()

    def list_tokens(self, tenant: str, user: str) -> list[dict[str, Any]]:
        """A user's tokens, without their secrets: `id`, `created_at`, `expires_at`,
        `revoked_at`, `last_used_at`."""
        path = f"{_user_path(tenant, user)}/tokens"
        return self._request("GET", path).json()["tokens"]

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        """Revoke a token at once (`id`, `revoked_at`); requests carrying it get a 401."""
        path = f"/api/v1/admin/tokens/{_path_part(token_id)}/revoke"
        return self._request("POST", path).json()

    def grant_role(self, principal: str, role: str, tenant: str | None = None) -> dict[str, Any]:
        """Grant `role` (one of `ROLES`) in `tenant` to a user or service account; `tenant` is
        None only for `platform-admin`. Returns the grant (`principal`, `role`, `tenant`)."""
        body = {"principal": principal, "role": role, "tenant": tenant}
        return self._request("POST", "/api/v1/admin/roles/grant", json=body).json()

    def revoke_role(self, principal: str, role: str, tenant: str | None = None) -> dict[str, Any]:
        """Take back a role `grant_role` gave; returns the revoked grant."""
        body = {"principal": principal, "role": role, "tenant": tenant}
        return self._request("POST", "/api/v1/admin/roles/revoke", json=body).json()

    # Quotas and cluster grants (admin) ------------------------------------------------------

    def set_quota(
        self,
        tenant: str,
        *,
        gpu: int | None = None,
        gpu_per_type: Mapping[str, int] | None = None,
        cpu: float | None = None,
        memory: str | int | None = None,
        max_running_executions: int | None = None,
        max_running_tasks: int | None = None,
    ) -> dict[str, Any]:
        """Replace a tenant's quota: every limit left out (None) is unlimited.

        Args:
            tenant: the tenant.
            gpu: GPUs its running tasks may hold together, of any type.
            gpu_per_type: the same per GPU type, e.g. `{"H100": 8}`.
            cpu: CPU cores.
            memory: bytes, or a quantity such as `"64Gi"`.
            max_running_executions: executions running at once.
            max_running_tasks: task attempts running at once.

        Returns:
            The quota as stored, memory as `memory_bytes`.
        """
        body = {
            "gpu": gpu,
            "gpu_per_type": dict(gpu_per_type or {}),
            "cpu": cpu,
            "memory": memory,
            "max_running_executions": max_running_executions,
            "max_running_tasks": max_running_tasks,
        }
        return self._request("PUT", f"{_tenant_path(tenant)}/quota", json=body).json()

    def get_quota(self, tenant: str) -> dict[str, Any] | None:
        """A tenant's quota as `set_quota` stored it; None (or None limits): unlimited."""
        return self._request("GET", f"{_tenant_path(tenant)}/quota").json()

    def grant_cluster(self, tenant: str, cluster: str) -> dict[str, Any]:
        """Let `tenant`'s tasks be placed on `cluster` (`*`: on every cluster)."""
        path = f"{_tenant_path(tenant)}/clusters/{_path_part(cluster)}"
        return self._request("POST", path).json()

    def revoke_cluster_grant(self, tenant: str, cluster: str) -> dict[str, Any]:
        """Take back a `grant_cluster`: `tenant`'s tasks are no longer placed on `cluster`."""
        path = f"{_tenant_path(tenant)}/clusters/{_path_part(cluster)}"
        response = self._request("DELETE", path)
        return response.json() if response.content else {"tenant": tenant, "cluster": cluster}

    def audit_log(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest administrative actions, newest first: `at`, `actor`, `action`,
        `target`, `details`."""
        body = self._request("GET", "/api/v1/admin/audit", params={"limit": limit}).json()
        return body["entries"]

    # Quota and usage of the acting tenant ---------------------------------------------------

    def quota_status(self) -> dict[str, Any]:
        """The acting tenant's quota against what it uses now.

        Returns:
            `tenant`, `limits` (as `get_quota`; None: unlimited), `usage` (`gpu`,
            `gpu_per_type`, `cpu`, `memory_bytes`, `running_executions`, `running_tasks`) and
            `waiting_for_quota` (task attempts held back by the quota).
        """
        return self._request("GET", "/api/v1/quota").json()

    def usage(
        self,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        bucket: UsageBucket = "hour",
        group_by: UsageGroupBy | None = None,
    ) -> dict[str, Any]:
        """What the acting tenant's tasks consumed, per time bucket.

        Args:
            since: start of the window (a datetime, naive meaning UTC, or ISO 8601 text);
                default: the control plane's.
            until: end of the window; default: now.
            bucket: `minute`, `hour` or `day`.
            group_by: also split each bucket by `cluster`, `gpu_type` or `workflow`.

        Returns:
            `tenant`, `bucket` and `buckets`: each `start`, `gpu_seconds`, `cpu_seconds`,
            `memory_gib_seconds` and `groups` (key -> the same three sums).
        """
        params: dict[str, Any] = {"bucket": bucket}
        if since is not None:
            params["since"] = _query_time(since)
        if until is not None:
            params["until"] = _query_time(until)
        if group_by is not None:
            params["group_by"] = group_by
        return self._request("GET", "/api/v1/usage", params=params).json()

    def top_workflows(
        self, since: datetime | str | None = None, limit: int = 10
    ) -> list[dict[str, Any]]:
        """The acting tenant's workflows that used the most GPU time since `since`: each
        `workflow`, `gpu_seconds`, `cpu_seconds` and `executions`."""
        params: dict[str, Any] = {"limit": limit}
        if since is not None:
            params["since"] = _query_time(since)
        body = self._request("GET", "/api/v1/usage/top-workflows", params=params).json()
        return body["workflows"]
