"""Tenant secrets at rest: Fernet encryption under a list of keys (the first encrypts, all
decrypt), so keys rotate without downtime: prepend a new key, restart, re-encrypt the rows.

Keys come from `FLEETFLOW_SECRETS_KEYS` (`control_plane.settings.SecretsSettings`) or a key
file; the embedded SQLite stack (`fleetflow dev up`, tests) generates its key file on first
start, a control plane on PostgreSQL refuses to start without a key.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from fleetflow.errors import FleetflowError


class SecretsConfigError(FleetflowError):
    """The secrets keys are missing or malformed: the message says which setting to fix."""


class SecretDecryptError(ValueError):
    """A stored secret was encrypted under a key this control plane no longer has."""


def key_id(key: str) -> str:
    """A short, public name of a key (a hash prefix): which key encrypted a row."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class SecretBox:
    """Encrypts under the first key, decrypts under any of them."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise SecretsConfigError("no secrets key: set FLEETFLOW_SECRETS_KEYS")
        fernets = []
        for index, key in enumerate(keys):
            try:
                fernets.append(Fernet(key.strip()))
            except (ValueError, TypeError):
                raise SecretsConfigError(
                    f"secrets key #{index + 1} is not a Fernet key (32 url-safe base64-encoded "
                    "bytes; make one with `fleetflow admin secrets generate-key`)"
                ) from None
        self._keys = [key.strip() for key in keys]
        self._fernet = MultiFernet(fernets)

    @property
    def primary_key_id(self) -> str:
        """The id of the key new rows are encrypted under."""
        return key_id(self._keys[0])

    def encrypt(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode()
        except InvalidToken:
            raise SecretDecryptError(
                "the secret was encrypted under a key that is not in FLEETFLOW_SECRETS_KEYS"
            ) from None

    def rotate(self, ciphertext: str) -> str:
        """`ciphertext` encrypted again under the first key."""
        try:
            return self._fernet.rotate(ciphertext.encode("ascii")).decode("ascii")
        except InvalidToken:
            raise SecretDecryptError(
                "the secret was encrypted under a key that is not in FLEETFLOW_SECRETS_KEYS"
            ) from None


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


def read_key_file(path: Path) -> list[str]:
    """The keys of a key file: one a line, the first encrypts; blank lines and `#` comments
    are skipped."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise SecretsConfigError(f"cannot read the secrets key file {path}: {exc}") from None
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ensure_key_file(path: Path) -> list[str]:
    """The keys of `path`, after writing a new one there (0600) when the file is missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        content = (
            "# Fleetflow secrets keys: the first encrypts, all decrypt (docs/admin.md)\n"
            f"{generate_key()}\n"
        )
        # Written aside and linked into place: two processes starting at once (the API and a
        # worker) both read the one key that won.
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(content)
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    return read_key_file(path)
