"""The CLI's configuration file: which control plane to talk to, with which token.

Written by `fleetflow dev up` (and later `fleetflow login`); `FLEETFLOW_CONFIG` moves it and
`FLEETFLOW_API_URL` overrides the URL for one command.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

DEFAULT_API_URL = "http://127.0.0.1:8080"


class CliConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")

    api_url: str = DEFAULT_API_URL
    token: str | None = None


def config_path() -> Path:
    return Path(os.environ.get("FLEETFLOW_CONFIG", Path.home() / ".fleetflow" / "config.json"))


def load_cli_config() -> CliConfig:
    path = config_path()
    config = CliConfig.model_validate_json(path.read_text()) if path.is_file() else CliConfig()
    if url := os.environ.get("FLEETFLOW_API_URL"):
        config = config.model_copy(update={"api_url": url})
    return config


def save_cli_config(config: CliConfig) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(config.model_dump_json(indent=2))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path
