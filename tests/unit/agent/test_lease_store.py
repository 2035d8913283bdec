"""The agent's lease files: where report secrets live on disk, with what modes, and for how long."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from data_plane_agent.lease_store import LeaseStore, names_a_lease_file

SECRET = "ffl_a-lease-secret-for-these-tests-7c1e"


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_a_lease_is_one_private_file_a_new_store_loads(tmp_path: Path) -> None:
    old_umask = os.umask(0)  # the modes come from the code, not from a lucky umask
    try:
        store = LeaseStore(tmp_path / "leases")
        store.save("at-0a1b", 7, SecretStr(SECRET))
    finally:
        os.umask(old_umask)
    assert _mode(tmp_path / "leases") == 0o700
    assert [p.name for p in (tmp_path / "leases").iterdir()] == ["at-0a1b.json"]
    assert _mode(tmp_path / "leases" / "at-0a1b.json") == 0o600
    loaded = LeaseStore(tmp_path / "leases").load()
    assert list(loaded) == ["at-0a1b"]
    token, secret = loaded["at-0a1b"]
    assert (token, secret.get_secret_value()) == (7, SECRET)


def test_a_new_lease_replaces_the_earlier_and_delete_removes_it(tmp_path: Path) -> None:
    store = LeaseStore(tmp_path / "leases")
    store.save("at-0a1b", 7, SecretStr("ffl_first"))
    store.save("at-0a1b", 8, SecretStr(SECRET))
    token, secret = store.load()["at-0a1b"]
    assert (token, secret.get_secret_value()) == (8, SECRET)
    store.delete("at-0a1b")
    store.delete("at-0a1b")  # already gone: fine
    assert list((tmp_path / "leases").iterdir()) == []


@pytest.mark.parametrize(
    "attempt_id", ["", "att-ok", "at-", "at-0A1B", "at-../x", "../at-0a1b", "at-0a1b/..", "at-0a\n"]
)
def test_only_an_id_of_the_control_planes_form_names_a_file(
    tmp_path: Path, attempt_id: str
) -> None:
    store = LeaseStore(tmp_path / "leases")
    assert not names_a_lease_file(attempt_id)
    with pytest.raises(ValueError, match="cannot name a lease file"):
        store.save(attempt_id, 1, SecretStr(SECRET))
    store.delete(attempt_id)
    assert list(tmp_path.rglob("*")) == [tmp_path / "leases"]
    assert names_a_lease_file("at-" + "0123456789abcdef" * 2)


def test_a_too_open_directory_is_narrowed(tmp_path: Path) -> None:
    (tmp_path / "leases").mkdir(mode=0o755)
    os.chmod(tmp_path / "leases", 0o755)
    LeaseStore(tmp_path / "leases")
    assert _mode(tmp_path / "leases") == 0o700


def test_leftovers_and_damaged_files_are_dropped_without_logging_contents(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = LeaseStore(tmp_path / "leases")
    store.save("at-0a1b", 7, SecretStr(SECRET))
    directory = tmp_path / "leases"
    (directory / ".at-0c.1234.tmp").write_text(json.dumps({"report_secret": SECRET}))
    (directory / "at-0d.json").write_text('{"report_secret": "' + SECRET)  # cut short
    (directory / "at-0e.json").write_text(
        json.dumps({"attempt_id": "at-0f", "fencing_token": 1, "report_secret": SECRET})
    )
    (directory / "notes.txt").write_text("not a lease")

    loaded = LeaseStore(directory).load()

    assert list(loaded) == ["at-0a1b"]
    assert sorted(p.name for p in directory.iterdir()) == ["at-0a1b.json", "notes.txt"]
    assert "unreadable" in caplog.text and "not a lease file" in caplog.text
    assert SECRET[4:] not in caplog.text
