"""Blobs changed after upload are refused before use (issue 13, finding 3).

Whoever can write the blob store (a hostile task on a shared local store, a leaked credential)
could overwrite another tenant's code bundle, so that tenant's next run executes the
attacker's code, or swap a file another task reads as input. Bundles and files are stored
under their sha256, so the task runtime checks what it downloaded against that digest and
refuses a mismatch, before unpacking or importing anything.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fleetflow.bundle import build_bundle
from fleetflow.storage import LocalBlobStore, relative_key
from tests.unit.sdk.test_files import TYPED_BUNDLE, run_task


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def test_an_overwritten_code_bundle_is_refused_and_none_of_its_code_runs(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    digest, genuine = build_bundle(TYPED_BUNDLE)
    uri = store.put(f"tenants/victim/bundles/{digest}.tar.gz", genuine)
    # The attacker's project: importing it would leave a marker.
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "typed_tasks.py").write_text(
        f"open({str(marker)!r}, 'w').write('pwned')\ndef describe(**_): return 'evil'\n"
    )
    _, forged = build_bundle(evil)
    store.put(f"tenants/victim/bundles/{digest}.tar.gz", forged)  # overwritten in place

    run = run_task(store, tmp_path, "n0", "describe", {}, bundle_uri=uri)
    assert run.returncode != 0
    assert "was changed after upload; refusing to run it" in run.result["message"]
    assert not marker.exists()
    assert not run.workdir.exists() or not any(run.workdir.iterdir())  # nothing unpacked

    store.put(f"tenants/victim/bundles/{digest}.tar.gz", genuine)  # the genuine one runs
    assert (
        run_task(store, tmp_path, "n1", "write_report", {"text": "x"}, bundle_uri=uri).returncode
        == 0
    )


def test_a_bundle_not_named_by_its_digest_is_refused(store: LocalBlobStore, tmp_path: Path) -> None:
    _, data = build_bundle(TYPED_BUNDLE)
    uri = store.put("tenants/victim/bundles/latest.tar.gz", data)
    run = run_task(store, tmp_path, "n0", "write_report", {"text": "x"}, bundle_uri=uri)
    assert run.returncode != 0
    assert "is not named by its sha256" in run.result["message"]


def test_a_swapped_input_file_is_refused_before_the_task_reads_it(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    written = run_task(store, tmp_path, "n0", "write_report", {"text": "accuracy: 0.93"})
    assert written.returncode == 0, written.stderr
    report = written.outputs["o0"]
    assert hashlib.sha256(b"accuracy: 0.93").hexdigest() in report["uri"]
    store.put(relative_key(report["uri"], store.root_uri), b"accuracy: 0.01")  # swapped

    read = run_task(store, tmp_path, "n1", "read_report", {"report": report})
    assert read.returncode != 0
    message = read.result["message"]
    assert "it was changed after upload; refusing to use it" in message, message
    assert read.outputs is None  # the task never ran
    assert not list(read.workdir.rglob("report.txt"))  # the swapped copy is not left behind
