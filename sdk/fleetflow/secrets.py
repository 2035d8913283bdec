"""Task secrets as tasks see them: the names `@task(secrets=[...])` may use, the environment
variable each value arrives in, reading them in local runs, and hiding their values in logs.

A secret's value never travels in a spec, a bundle or an API answer: the control plane hands it
to the agent in the attempt's lease only, and the agent sets it on the task's process (or pod)
alone. See docs/sdk.md (Secrets) and docs/admin.md (Secrets).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from fleetflow.errors import FleetflowError

# A DNS label, as Kubernetes names go: what a secret may be called.
SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
ENV_PREFIX = "FLEETFLOW_SECRET_"
REDACTED = "***"
# Values shorter than this are not redacted from log lines: a one-letter "secret" would blank
# out every line it appears in.
MIN_REDACTED_LENGTH = 4


class MissingSecretError(FleetflowError):
    """A local run of a task that names a secret whose environment variable is not set."""


def secret_name_problem(name: object) -> str | None:
    """Why `name` cannot name a secret, or None when it can."""
    if not isinstance(name, str) or not SECRET_NAME.fullmatch(name):
        return (
            f"{name!r} is not a valid secret name: 1-63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit (e.g. wandb)"
        )
    return None


def env_var(name: str) -> str:
    """The environment variable the secret `name` arrives in: `wandb-key` ->
    `FLEETFLOW_SECRET_WANDB_KEY`."""
    return ENV_PREFIX + name.upper().replace("-", "_")


def check_names(names: object) -> list[str]:
    """`@task(secrets=...)` checked: a list of distinct valid names.

    Raises:
        ValueError: not a list or tuple of names, an invalid name, or one named twice.
    """
    if isinstance(names, str) or not isinstance(names, list | tuple):
        raise ValueError(f"secrets must be a list of secret names such as ['wandb'], got {names!r}")
    seen: list[str] = []
    for name in names:
        problem = secret_name_problem(name)
        if problem is not None:
            raise ValueError(problem)
        if name in seen:
            raise ValueError(f"secret {name!r} is named twice")
        seen.append(name)
    return seen


def local_values(names: Iterable[str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The values of `names` for a task run in this process: each from its environment
    variable.

    Raises:
        MissingSecretError: a variable is not set; the message names it.
    """
    environ = os.environ if environ is None else environ
    values = {}
    for name in names:
        variable = env_var(name)
        if variable not in environ:
            raise MissingSecretError(
                f"the task needs the secret {name!r}: in a local run, set the environment "
                f"variable {variable} to its value"
            )
        values[name] = environ[variable]
    return values


def redact(text: str, values: Iterable[str]) -> str:
    """`text` with every occurrence of each value (of at least `MIN_REDACTED_LENGTH`
    characters) replaced by `***`, longest first."""
    for value in sorted(
        (v for v in values if len(v) >= MIN_REDACTED_LENGTH), key=len, reverse=True
    ):
        text = text.replace(value, REDACTED)
    return text
