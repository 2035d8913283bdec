"""The one HTTP connection every resource of the client goes through: base URL, bearer token
and acting tenant, timeouts, retries of idempotent creations, and the mapping of refusals to
`ApiError`s whose messages say what to change. Answers are parsed into the API's own models
(`fleetflow.api_models`)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any, NoReturn, TypeVar, cast
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter

from fleetflow.client.errors import (
    ApiError,
    AuthenticationError,
    ControlPlaneUnreachableError,
    PermissionDeniedError,
)
from fleetflow.config import (
    CliConfig,
    ClientConfigError,
    config_path,
    is_http_url,
    load_cli_config,
    with_env_overrides,
)

TENANT_HEADER = "X-Fleetflow-Tenant"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# How often a request with an idempotency key whose answer was lost is sent in all.
IDEMPOTENT_TRIES = 3

Answer = TypeVar("Answer")


def path_part(value: str) -> str:
    """`value` as one segment of a URL path."""
    return quote(value, safe="")


@cache
def _adapter(answer: Any) -> TypeAdapter[Any]:
    return TypeAdapter(answer)


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


@dataclass(frozen=True)
class Connection:
    """Where requests go, as whom and in which tenant, and where each of these came from
    (the caller, the environment, the CLI config), for error messages that say what to
    change."""

    api_url: str
    token: str | None
    tenant: str | None
    url_source: str
    token_source: str | None
    tenant_source: str | None


def resolve_connection(
    url: str | None, token: str | None, tenant: str | None, config: CliConfig | None
) -> Connection:
    """`Client`'s arguments completed from `config`, else the CLI config file and the
    environment.

    Raises:
        ClientConfigError: the CLI config file is unreadable, or the URL is not http(s).
    """
    if config is None:
        saved = load_cli_config(overrides=False)
        config = with_env_overrides(saved)
        url_source = _url_source(url)
        token_source = _override_source(token, "FLEETFLOW_TOKEN", saved.token)
        tenant_source = _override_source(tenant, "FLEETFLOW_TENANT", saved.tenant)
    else:
        url_source = token_source = tenant_source = "given by the caller"
    api_url = (url or config.api_url).rstrip("/")
    if not is_http_url(api_url):
        raise ClientConfigError(
            f"control plane URL {api_url!r} ({url_source}) is not an "
            "http(s):// URL, e.g. http://127.0.0.1:8080"
        )
    token = token or config.token
    return Connection(
        api_url=api_url,
        token=token,
        tenant=tenant or config.tenant,
        url_source=url_source,
        token_source=token_source if token else None,
        tenant_source=tenant_source,
    )


class Transport:
    """Requests over one `Connection`, each given `timeout` seconds."""

    def __init__(self, connection: Connection, timeout: float):
        self.connection = connection
        self.api_url = connection.api_url
        self.tenant = connection.tenant
        token = connection.token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if self.tenant:
            headers[TENANT_HEADER] = self.tenant
        self.http = httpx.Client(base_url=self.api_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def timeout_beyond(self, seconds: float) -> httpx.Timeout:
        """This transport's timeouts, with `seconds` more to read the answer: for a request
        the server holds that long on purpose (a long poll)."""
        timeout = self.http.timeout
        read = None if timeout.read is None else timeout.read + seconds
        return httpx.Timeout(timeout.connect, read=read, write=timeout.write, pool=timeout.pool)

    def call(self, method: str, path: str, answer: type[Answer], **kwargs: Any) -> Answer:
        """`method path`, its JSON answer parsed as `answer` (a model, `list[Model]`…)."""
        response = self.request(method, path, **kwargs)
        parsed: Answer = _adapter(cast("Any", answer)).validate_json(response.content)
        return parsed

    def call_idempotent(
        self, method: str, path: str, answer: type[Answer], key: str, **kwargs: Any
    ) -> Answer:
        """`call` with an `Idempotency-Key`, sent again (`IDEMPOTENT_TRIES` in all) when no
        answer came back: the control plane answers a repeat with what the first one did."""
        headers = {IDEMPOTENCY_HEADER: key}
        for attempt in range(1, IDEMPOTENT_TRIES + 1):
            try:
                return self.call(method, path, answer, headers=headers, **kwargs)
            except ControlPlaneUnreachableError:
                if attempt == IDEMPOTENT_TRIES:
                    raise
                time.sleep(0.5 * attempt)  # back off before the retry, not a synchronisation
        raise AssertionError("unreachable")

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The raw response to `method path`; a refusal raises (but a HEAD's 404 does not)."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400 and not (method == "HEAD" and response.status_code == 404):
            self._raise_refusal(response)
        return response

    @contextmanager
    def stream(self, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A GET whose body is read as it arrives; refusals raise as for `request`."""
        try:
            with self.http.stream("GET", path, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
                    self._raise_refusal(response)
                yield response
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: httpx.TransportError) -> ControlPlaneUnreachableError:
        reason, source = str(exc) or exc.__class__.__name__, self.connection.url_source
        return ControlPlaneUnreachableError(
            f"cannot reach the control plane at {self.api_url} ({source}): "
            f"{reason}. Is it running? Start a local one with `fleetflow dev up`."
        )

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
        source = self.connection.token_source
        if source is None:
            return (
                f"the control plane at {self.api_url} needs a token ({detail}); log in with "
                f"{login} or set FLEETFLOW_TOKEN"
            )
        if source == "from FLEETFLOW_TOKEN":
            fix = "set FLEETFLOW_TOKEN to a valid token (it overrides `fleetflow login`)"
        else:
            fix = f"log in with {login}"
        return f"the control plane at {self.api_url} refused the token {source} ({detail}); {fix}"

    def _denied_message(self, detail: str) -> str:
        """A stale FLEETFLOW_TENANT or saved tenant is a likely cause: say which was used."""
        if not self.tenant or self.tenant in detail:
            return detail
        if self.connection.tenant_source in (None, "given by the caller"):
            return f"{detail} (acting in tenant {self.tenant})"
        return f"{detail} (acting in tenant {self.tenant}, {self.connection.tenant_source})"
