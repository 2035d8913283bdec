"""The alembic migrations create exactly the schema the models describe, on both backends."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from control_plane.db.migrate import alembic_config, migrations_directory, upgrade_database
from control_plane.db.models import Base
from control_plane.db.session import make_engine

REPO_ROOT = Path(__file__).resolve().parents[3]
TABLES = {"tenants", "clusters", "workflow_specs", "executions", "task_attempts"}


def _schema_diffs(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def _current_revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    assert TABLES <= _tables(database_url)
    assert _schema_diffs(database_url) == []


def test_upgrade_is_idempotent_and_reaches_head(database_url: str) -> None:
    upgrade_database(database_url)
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    assert _current_revision(database_url) == head


def test_downgrade_to_base_and_upgrade_again(database_url: str) -> None:
    command.downgrade(alembic_config(database_url), "base")
    assert _tables(database_url) & TABLES == set()
    upgrade_database(database_url)
    assert _schema_diffs(database_url) == []


def test_compare_detects_a_schema_that_drifted(tmp_path: Path) -> None:
    # Guards the comparison itself: a missing index must show up as a difference.
    url = f"sqlite:///{tmp_path / 'drift.db'}"
    upgrade_database(url)
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP INDEX ix_executions_status")
    engine.dispose()
    assert [diff[0] for diff in _schema_diffs(url)] == ["add_index"]  # type: ignore[index]


def test_sqlite_database_directory_is_created(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'dir' / 'fleetflow.db'}"
    upgrade_database(url)
    assert TABLES <= _tables(url)


def test_offline_mode_renders_sql(capsys: pytest.CaptureFixture[str]) -> None:
    command.upgrade(alembic_config("postgresql+psycopg://u@127.0.0.1/x"), "head", sql=True)
    sql = capsys.readouterr().out
    assert "CREATE TABLE tenants" in sql
    assert "CREATE INDEX ix_task_attempts_cluster_id" in sql


def test_offline_mode_renders_the_report_secret_column(capsys: pytest.CaptureFixture[str]) -> None:
    command.upgrade(alembic_config("postgresql+psycopg://u@127.0.0.1/x"), "0006:0007", sql=True)
    sql = capsys.readouterr().out
    assert "ALTER TABLE task_attempts ADD COLUMN report_secret_sha256 VARCHAR(64)" in sql


def test_attempts_leased_before_report_secrets_keep_a_null_hash(database_url: str) -> None:
    """0007: existing attempts get no hash (their reports keep the older checks); downgrading
    drops the column and keeps the rows."""
    config = alembic_config(database_url)
    command.downgrade(config, "0006")
    engine = make_engine(database_url)
    now = {"n": "2026-01-01"}
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'a', :n)"), now)
        conn.execute(
            text(
                "INSERT INTO workflow_specs (id, tenant_id, name, version, spec, bundle_digest, "
                "created_at) VALUES ('wf1', 't1', 'w', '1', '{}', 'd', :n)"
            ),
            now,
        )
        conn.execute(
            text(
                "INSERT INTO executions (id, tenant_id, workflow_spec_id, status, inputs, "
                "priority, created_at) VALUES ('ex1', 't1', 'wf1', 'RUNNING', '{}', 0, :n)"
            ),
            now,
        )
        conn.execute(
            text(
                "INSERT INTO task_attempts (id, execution_id, node_id, map_index, task_name, "
                "attempt_number, cache_hit, status, gpu, cpu, memory_bytes, fencing_token, "
                "last_report_sequence, inputs_uri, outputs_uri, created_at) VALUES ('at1', "
                "'ex1', 'n0', -1, 't', 1, false, 'LEASED', 0, 0, 0, 1, 0, 'i', 'o', :n)"
            ),
            now,
        )
    upgrade_database(database_url)
    with engine.connect() as conn:
        hashes = conn.execute(text("SELECT id, report_secret_sha256 FROM task_attempts")).all()
    assert [tuple(row) for row in hashes] == [("at1", None)]
    command.downgrade(config, "0006")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT id, status FROM task_attempts")).all() == [
            ("at1", "LEASED")
        ]
    upgrade_database(database_url)
    engine.dispose()


def test_migrations_come_from_the_source_tree_in_a_checkout() -> None:
    assert migrations_directory() == REPO_ROOT / "migrations"


def test_grants_move_to_namespaced_subjects(database_url: str) -> None:
    """0006: `g, <name>, <role>, <tenant>` becomes `g, principal:<id>, role:<role>, <tenant>`;
    a grant to a name that no longer exists is dropped; downgrading restores the old form."""
    config = alembic_config(database_url)
    command.downgrade(config, "0005")
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'alpha', :n)"),
            {"n": "2026-01-01"},
        )
        conn.execute(
            text(
                "INSERT INTO principals (id, name, kind, tenant_id, created_at) "
                "VALUES ('p-1', 'ada', 'user', 't1', :n)"
            ),
            {"n": "2026-01-01"},
        )
        for row in (
            ("p", "developer", "*", "workflows", "*"),
            ("g", "ada", "developer", "alpha", None),
            ("g", "gone", "viewer", "alpha", None),
        ):
            conn.execute(
                text("INSERT INTO casbin_rule (ptype, v0, v1, v2, v3) VALUES (:t, :a, :b, :c, :d)"),
                dict(zip("tabcd", row, strict=True)),
            )
    upgrade_database(database_url)
    query = text("SELECT ptype, v0, v1, v2 FROM casbin_rule")

    def rules() -> set[tuple[str, ...]]:
        with engine.connect() as conn:
            return {tuple(r) for r in conn.execute(query)}

    assert {("g", "principal:p-1", "role:developer", "alpha")} <= rules()
    assert ("p", "role:developer", "*", "workflows") in rules()
    assert not any("gone" in str(rule) for rule in rules())
    command.downgrade(config, "0005")
    assert {("g", "ada", "developer", "alpha"), ("p", "developer", "*", "workflows")} <= rules()
    engine.dispose()
