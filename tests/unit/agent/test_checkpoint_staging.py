"""The agent keeps a unit's checkpoint for its tasks: staged in from the unit's own location
before an attempt, uploaded back after it, and never a file the task could not have read or
a name a checkpoint is not made of."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from data_plane_agent.attempts import TaskAssignment
from data_plane_agent.staging import (
    CHECKPOINT_DIR,
    keep_checkpoint,
    stage_checkpoint,
)
from fleetflow.storage import LocalBlobStore


def _assignment(checkpoint_uri: str) -> TaskAssignment:
    return TaskAssignment(
        "at-2", 1, "ex-1", "n0-train", "t", "flows", "train", "b", "i", "o",
        attempt_number=2, checkpoint_uri=checkpoint_uri,
    )  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def test_the_units_checkpoint_goes_in_and_the_tasks_comes_back(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    unit = "tenants/t/executions/ex-1/n0-train/checkpoint"
    other_unit = "tenants/t/executions/ex-1/n1-eval/checkpoint"
    store.put(f"{unit}/checkpoint.bin", b"epoch 3")
    store.put(f"{unit}/unrelated.txt", b"not part of a checkpoint")
    store.put(f"{other_unit}/checkpoint.bin", b"another unit's")
    assignment = _assignment(store.uri(unit))

    staged = tmp_path / "staged"
    target = stage_checkpoint(assignment, staged)
    assert target == staged / CHECKPOINT_DIR
    assert sorted(p.name for p in target.iterdir()) == ["checkpoint.bin"]
    assert (target / "checkpoint.bin").read_bytes() == b"epoch 3"

    # The task rewrites it and leaves names that are not a checkpoint's.
    (target / "checkpoint.bin").write_bytes(b"epoch 4")
    (target / "directory.tar").write_bytes(b"tar bytes")
    (target / "extra.bin").write_bytes(b"not uploaded")
    assert keep_checkpoint(assignment, staged, owner=None) == ["checkpoint.bin", "directory.tar"]
    assert store.get(store.uri(f"{unit}/checkpoint.bin")) == b"epoch 4"
    assert store.get(store.uri(f"{unit}/directory.tar")) == b"tar bytes"
    assert not store.exists(store.uri(f"{unit}/extra.bin"))
    assert store.get(store.uri(f"{other_unit}/checkpoint.bin")) == b"another unit's"


def test_a_unit_without_a_checkpoint_yet_gets_an_empty_directory(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    assignment = _assignment(store.uri("tenants/t/executions/ex-1/n0-train/checkpoint"))
    target = stage_checkpoint(assignment, tmp_path / "staged")
    assert target is not None and list(target.iterdir()) == []
    # Nothing written: nothing uploaded, and no empty folder made for it in the store.
    assert keep_checkpoint(assignment, tmp_path / "staged", owner=None) == []
    assert not (store.root / "tenants/t/executions/ex-1/n0-train").exists()


def test_no_checkpoint_location_stages_and_keeps_nothing(tmp_path: Path) -> None:
    assignment = _assignment("")
    assert stage_checkpoint(assignment, tmp_path / "staged") is None
    assert not (tmp_path / "staged").exists()
    assert keep_checkpoint(assignment, tmp_path / "staged", owner=None) == []


def test_a_hostile_tasks_planted_link_or_foreign_file_is_refused(
    store: LocalBlobStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    unit = "tenants/t/executions/ex-1/n0-train/checkpoint"
    assignment = _assignment(store.uri(unit))
    staged = tmp_path / "staged"
    target = stage_checkpoint(assignment, staged)
    assert target is not None
    secret = tmp_path / "agent-only.key"
    secret.write_bytes(b"the agent's secret")
    secret.chmod(0o600)
    # A link to a file only the agent may read: not followed.
    (target / "checkpoint.bin").symlink_to(secret)
    # A hard link (or any file) that is not the task user's own: refused by its owner.
    os.link(secret, target / "directory.tar")
    task_uid = os.getuid() + 1  # the task ran as another user than the one owning the secret
    with caplog.at_level(logging.WARNING, logger="data_plane_agent.staging"):
        assert keep_checkpoint(assignment, staged, owner=task_uid) == []
    assert not store.exists(store.uri(f"{unit}/checkpoint.bin"))
    assert not store.exists(store.uri(f"{unit}/directory.tar"))
    refusals = [r.getMessage() for r in caplog.records]
    assert any("checkpoint checkpoint.bin not kept" in m for m in refusals), refusals
    assert any("directory.tar not kept: it is not a file the task wrote" in m for m in refusals)
