"""Tenant secrets at rest: encrypted under the first key, readable under any, rotated to the
newest; the rows hold no plaintext; the keys come from the settings, a generated key file on
SQLite, and nowhere on PostgreSQL (the control plane refuses to start)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.repositories import secrets as secrets_repo
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.secrets_crypto import (
    SecretBox,
    SecretDecryptError,
    SecretsConfigError,
    generate_key,
    key_id,
)
from control_plane.settings import SecretsSettings

VALUE = "wandb-api-key-0123456789abcdef"


def test_a_value_round_trips_and_another_key_cannot_read_it() -> None:
    box = SecretBox([generate_key()])
    ciphertext = box.encrypt(VALUE)
    assert VALUE not in ciphertext
    assert box.decrypt(ciphertext) == VALUE
    with pytest.raises(SecretDecryptError, match="FLEETFLOW_SECRETS_KEYS"):
        SecretBox([generate_key()]).decrypt(ciphertext)


def test_rotation_encrypts_under_the_first_key_and_old_rows_stay_readable_meanwhile() -> None:
    old, new = generate_key(), generate_key()
    under_old = SecretBox([old]).encrypt(VALUE)
    both = SecretBox([new, old])
    assert both.primary_key_id == key_id(new)
    assert both.decrypt(under_old) == VALUE  # before rotating: the old key still decrypts
    rotated = both.rotate(under_old)
    assert SecretBox([new]).decrypt(rotated) == VALUE  # after: the old key may go
    with pytest.raises(SecretDecryptError):
        SecretBox([old]).decrypt(rotated)


def test_a_malformed_key_names_its_position() -> None:
    with pytest.raises(SecretsConfigError, match="#2 is not a Fernet key"):
        SecretBox([generate_key(), "not-a-key"])


def test_the_database_holds_no_plaintext_and_rotation_moves_every_row(
    session_factory: sessionmaker[Session],
) -> None:
    old, new = generate_key(), generate_key()
    with session_factory() as session:
        tenant = get_or_create_tenant(session, "acme")
        secrets_repo.put_secret(session, SecretBox([old]), tenant.id, "wandb", value=VALUE)
        secrets_repo.put_secret(
            session,
            SecretBox([old]),
            tenant.id,
            "registry",
            kubernetes_secret="registry-creds",
            kubernetes_key="token",
        )
        session.commit()
        dumped = " ".join(
            str(column) for row in session.execute(text("SELECT * FROM secrets")) for column in row
        )
        assert VALUE not in dumped
        assert key_id(old) in dumped

        box = SecretBox([new, old])
        assert secrets_repo.rotate_all(session, box) == 1  # the reference has no value
        assert secrets_repo.rotate_all(session, box) == 0  # idempotent
        session.commit()
        found = secrets_repo.secrets_for_task(
            session,
            SecretBox([new]),
            tenant.id,
            ["wandb", "registry"],
            ["FLEETFLOW_SECRET_WANDB", "FLEETFLOW_SECRET_REGISTRY"],
        )
    assert [(s.name, s.value, s.kubernetes_secret) for s in found] == [
        ("wandb", VALUE, ""),
        ("registry", None, "registry-creds"),
    ]
    assert VALUE not in repr(found)


def test_a_task_gets_only_its_own_tenants_secrets(
    session_factory: sessionmaker[Session],
) -> None:
    box = SecretBox([generate_key()])
    with session_factory() as session:
        acme = get_or_create_tenant(session, "acme")
        other = get_or_create_tenant(session, "other")
        secrets_repo.put_secret(session, box, acme.id, "wandb", value=VALUE)
        session.commit()
        with pytest.raises(secrets_repo.MissingSecretsError, match="'wandb'"):
            secrets_repo.secrets_for_task(
                session, box, other.id, ["wandb"], ["FLEETFLOW_SECRET_WANDB"]
            )


def test_sqlite_generates_a_private_key_file_beside_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fleetflow.db'}"
    first = SecretsSettings().box(url)
    key_file = tmp_path / "secrets-keys"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = SecretsSettings().box(url)  # the same key at the next start
    assert again.decrypt(first.encrypt(VALUE)) == VALUE


def test_postgresql_without_a_key_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEETFLOW_SECRETS_KEYS", raising=False)
    monkeypatch.delenv("FLEETFLOW_SECRETS_KEY_FILE", raising=False)
    with pytest.raises(SecretsConfigError, match="FLEETFLOW_SECRETS_KEYS"):
        SecretsSettings().box("postgresql+psycopg://u@db/fleetflow")


def test_keys_come_from_the_environment_first_one_encrypting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    new, old = generate_key(), generate_key()
    monkeypatch.setenv("FLEETFLOW_SECRETS_KEYS", f"{new}, {old}")
    box = SecretsSettings().box("postgresql+psycopg://u@db/fleetflow")
    assert box.primary_key_id == key_id(new)
    assert box.decrypt(SecretBox([old]).encrypt(VALUE)) == VALUE
