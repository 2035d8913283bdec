"""The CLI's configuration file: which control plane to talk to, with which token, in which tenant.

`fleetflow login URL --token …` writes it (URL, token and, with `--tenant`, the tenant to act in),
`fleetflow logout` removes the token, `fleetflow dev up` points it at the local stack. The file
holds a credential, so it is written readable by its owner only (0600).

Environment variables change one command without touching the file:

- `FLEETFLOW_CONFIG`: where the file is (default `~/.fleetflow/config.json`).
- `FLEETFLOW_API_URL`: the control plane's URL.
- `FLEETFLOW_TOKEN`: the bearer token (e.g. a service account's in CI).
- `FLEETFLOW_TENANT`: the tenant to act in, sent as the `X-Fleetflow-Tenant` header; without
  one, requests act in the token's home tenant.

An empty variable counts as unset. What a caller passes explicitly (`Client(url, token, tenant)`,
`fleetflow --tenant T …`) wins over both.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from fleetflow.errors import FleetflowError

DEFAULT_API_URL = "http://127.0.0.1:8080"

# Which environment variable overrides which field, for one command.
ENV_OVERRIDES = {
    "api_url": "FLEETFLOW_API_URL",
    "token": "FLEETFLOW_TOKEN",
    "tenant": "FLEETFLOW_TENANT",
}


class ClientConfigError(FleetflowError, ValueError):
    """The control plane URL or the CLI config file cannot be used."""


class CliConfig(BaseModel):
    """What the CLI config file holds.

    Attributes:
        api_url: the control plane's base URL.
        token: the bearer token requests carry; None sends none.
        tenant: the tenant to act in; None acts in the token's home tenant.
    """

    model_config = ConfigDict(extra="ignore")

    api_url: str = DEFAULT_API_URL
    token: str | None = None
    tenant: str | None = None


def is_http_url(url: str) -> bool:
    """Whether `url` can be a control plane's base URL: http(s) with a host."""
    import httpx  # only clients check URLs; task processes read no config

    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.host)


def config_path() -> Path:
    return Path(os.environ.get("FLEETFLOW_CONFIG", Path.home() / ".fleetflow" / "config.json"))


def load_cli_config(*, overrides: bool = True) -> CliConfig:
    """The CLI config: the file's (defaults when there is none), then, unless `overrides` is
    False, the `FLEETFLOW_API_URL`, `FLEETFLOW_TOKEN` and `FLEETFLOW_TENANT` variables.

    Raises:
        ClientConfigError: the file exists but cannot be read or parsed.
    """
    path = config_path()
    try:
        config = CliConfig.model_validate_json(path.read_text()) if path.is_file() else CliConfig()
    except (OSError, ValueError) as exc:
        reason = " ".join(str(exc).split("\n")[:2])
        raise ClientConfigError(
            f"cannot read the CLI config {path}: {reason}; fix or delete it "
            "(`fleetflow login` or `fleetflow dev up` writes a new one)"
        ) from None
    return with_env_overrides(config) if overrides else config


def with_env_overrides(config: CliConfig) -> CliConfig:
    """`config` with the fields the `FLEETFLOW_*` variables set replaced."""
    update = {field: os.environ[env] for field, env in ENV_OVERRIDES.items() if os.environ.get(env)}
    return config.model_copy(update=update) if update else config


def save_cli_config(config: CliConfig) -> Path:
    """Replace the config file atomically; it is created readable by its owner only, since it
    may hold a token (an older, laxer file is replaced, not rewritten in place)."""
    path = config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)  # O_EXCL below: never write into a file someone else made
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(config.model_dump_json(indent=2))
    tmp.replace(path)
    return path
