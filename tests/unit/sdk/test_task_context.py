"""`fleetflow.current_context()`: the same fields in local runs (plain nodes, retries, map
elements) and in the task runtime; checkpoints between a unit's attempts; a clear error
anywhere no task attempt runs."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import tarfile
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import fleetflow
from fleetflow import current_context, map_task, task, workflow
from fleetflow.bundle import build_bundle
from fleetflow.context import DIRECTORY_ARCHIVE, Checkpoint, NoTaskContextError, TaskContext
from fleetflow.errors import WorkflowCompileError
from fleetflow.storage import LocalBlobStore, read_uri

# What the tasks below saw, by (node, map index, attempt); tasks run in threads for map nodes.
_seen: list[dict[str, Any]] = []
_seen_lock = threading.Lock()


def _record(ctx: TaskContext, **extra: Any) -> None:
    with _seen_lock:
        _seen.append(
            {
                "execution_id": ctx.execution_id,
                "node_id": ctx.node_id,
                "attempt_number": ctx.attempt_number,
                "map_index": ctx.map_index,
                "attempt_id": ctx.attempt_id,
                "task_name": ctx.task_name,
                "workdir": ctx.workdir,
                "workdir_was_empty": not any(ctx.workdir.iterdir()),
                "local": ctx.local,
                **extra,
            }
        )


@pytest.fixture(autouse=True)
def _fresh_records() -> None:
    _seen.clear()


@task
def describe(x: int) -> int:
    ctx = current_context()
    _record(ctx)
    (ctx.workdir / "scratch.txt").write_text("mine")  # the attempt's own directory
    return x


@task(retries=2)
def resume(x: int) -> int:
    """Fails until its third attempt; each attempt adds one to the checkpoint it resumes from."""
    ctx = current_context()
    previous = ctx.checkpoint.read()
    count = int(previous or b"0") + 1
    ctx.checkpoint.write(str(count).encode())
    _record(ctx, previous=previous)
    if ctx.attempt_number < 3:
        raise RuntimeError(f"attempt {ctx.attempt_number} of element {x} fails")
    return x * 100 + count


@workflow
def two_nodes(x: int) -> int:
    first = describe(x=x)
    return describe(x=first)


@workflow
def retried(x: int) -> int:
    return resume(x=x)


@workflow
def mapped(xs: list[int]) -> list[int]:
    return map_task(resume, concurrency=3)(x=xs)


def test_fields_of_plain_nodes_in_a_local_run() -> None:
    assert two_nodes(x=7) == 7
    first, second = sorted(_seen, key=lambda seen: seen["node_id"])
    assert first["execution_id"] == second["execution_id"]
    assert first["execution_id"].startswith("local-")
    assert [first["node_id"], second["node_id"]] == [node.id for node in two_nodes.spec.nodes]
    assert [first["node_id"], second["node_id"]] == ["n0-describe", "n1-describe"]
    for seen in (first, second):
        assert seen["attempt_number"] == 1
        assert seen["map_index"] is None
        assert seen["task_name"] == describe.spec.name
        assert seen["local"] is True
        assert seen["attempt_id"] == f"{seen['execution_id']}/{seen['node_id']}/1"
        assert seen["workdir_was_empty"]
        assert not seen["workdir"].exists()  # removed when the attempt ended
    assert first["workdir"] != second["workdir"]

    # Another run is another execution.
    two_nodes(x=1)
    assert len({seen["execution_id"] for seen in _seen}) == 2


def test_retries_count_attempts_and_read_the_last_checkpoint() -> None:
    assert retried(x=4) == 403
    assert [(s["attempt_number"], s["previous"]) for s in _seen] == [
        (1, None),
        (2, b"1"),
        (3, b"2"),
    ]
    assert {s["node_id"] for s in _seen} == {"n0-resume"}
    assert len({s["workdir"] for s in _seen}) == 3  # a fresh directory per attempt
    assert all(s["workdir_was_empty"] for s in _seen)


def test_map_elements_have_their_index_and_checkpoints_of_their_own() -> None:
    assert mapped(xs=[1, 2, 3]) == [103, 203, 303]
    assert len(_seen) == 9
    assert len({s["execution_id"] for s in _seen}) == 1
    assert {s["node_id"] for s in _seen} == {"n0-resume"}
    for index in range(3):
        element = sorted(
            (s for s in _seen if s["map_index"] == index), key=lambda s: s["attempt_number"]
        )
        # Each element resumes from its own checkpoint, never another element's.
        assert [(s["attempt_number"], s["previous"]) for s in element] == [
            (1, None),
            (2, b"1"),
            (3, b"2"),
        ]
        assert element[0]["attempt_id"].endswith(f"/n0-resume/{index}/1")


def test_a_map_task_called_outside_a_workflow_runs_with_a_context() -> None:
    assert map_task(describe)(x=[5, 6]) == [5, 6]
    assert sorted(s["map_index"] for s in _seen) == [0, 1]
    assert len({s["execution_id"] for s in _seen}) == 1
    assert _seen[0]["execution_id"].startswith("local-")


def test_checkpoints_do_not_outlive_the_run() -> None:
    assert retried(x=1) == 103
    # A new run starts from no checkpoint at all.
    _seen.clear()
    assert retried(x=1) == 103
    assert _seen[0]["previous"] is None


@task(retries=1)
def keep_weights(x: int) -> str:
    ctx = current_context()
    weights = ctx.workdir / "weights"
    if ctx.checkpoint.restore_directory(weights):
        return (weights / "layer" / "w.txt").read_text()
    (weights / "layer").mkdir(parents=True)
    (weights / "layer" / "w.txt").write_text(f"trained on {x}")
    ctx.checkpoint.save_directory(weights)
    raise RuntimeError("lost the machine")


@workflow
def weights(x: int) -> str:
    return keep_weights(x=x)


def test_a_directory_checkpoint_is_restored_into_the_next_attempt() -> None:
    assert weights(x=3) == "trained on 3"


@task
def writes_text(x: int) -> int:
    current_context().checkpoint.write("not bytes")  # type: ignore[arg-type]
    return x


@workflow
def wrong_checkpoint(x: int) -> int:
    return writes_text(x=x)


def test_a_checkpoint_takes_bytes_only() -> None:
    with pytest.raises(TypeError, match=r"takes bytes, got str; encode it first"):
        wrong_checkpoint(x=1)


def test_outside_a_task_is_a_clear_error() -> None:
    with pytest.raises(NoTaskContextError, match="called outside a running task"):
        current_context()
    # A task function called directly is plain Python.
    with pytest.raises(NoTaskContextError, match="called directly is plain Python"):
        describe(x=1)
    # After a run, nothing is left current.
    two_nodes(x=1)
    with pytest.raises(NoTaskContextError):
        current_context()
    assert fleetflow.current_context is current_context


def test_in_a_workflow_body_is_a_clear_error() -> None:
    with pytest.raises(NoTaskContextError, match="in the workflow body, which runs once") as caught:

        @workflow
        def asks_in_body(x: int) -> int:
            current_context()  # <- the line the error names
            return describe(x=x)

    assert not isinstance(caught.value, WorkflowCompileError)
    line = next(
        number
        for number, text in enumerate(Path(__file__).read_text().splitlines(), start=1)
        if "# <- the line the error names" in text
    )
    assert str(caught.value).startswith(
        f"workflow '{__name__}.asks_in_body' at {__file__}:{line}: "
    )


@task
def logs(x: int) -> int:
    ctx = current_context()
    ctx.logger.info("node %s attempt %d", ctx.node_id, ctx.attempt_number)
    return x


@workflow
def logging_flow(x: int) -> int:
    return logs(x=x)


def test_the_logger_is_the_tasks(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=logs.spec.name):
        logging_flow(x=1)
    assert [(r.name, r.getMessage()) for r in caplog.records if r.name == logs.spec.name] == [
        (logs.spec.name, "node n0-logs attempt 1")
    ]


# The task runtime (a cluster's attempt) ------------------------------------------------------

CONTEXT_TASKS = """
import json
from fleetflow import current_context, task
from fleetflow.context import CheckpointUnavailableError


@task
def report(x: int) -> str:
    ctx = current_context()
    ctx.logger.info("reporting from %s", ctx.node_id)
    try:
        checkpoint = "read " + repr((ctx.checkpoint.read() or b"").decode())
        ctx.checkpoint.write(f"attempt {ctx.attempt_number} was here".encode())
    except CheckpointUnavailableError as exc:
        checkpoint = str(exc)
    return json.dumps(
        {
            "execution_id": ctx.execution_id,
            "node_id": ctx.node_id,
            "attempt_id": ctx.attempt_id,
            "attempt_number": ctx.attempt_number,
            "map_index": ctx.map_index,
            "task_name": ctx.task_name,
            "workdir": str(ctx.workdir),
            "workdir_is_dir": ctx.workdir.is_dir(),
            "local": ctx.local,
            "checkpoint": checkpoint,
        }
    )
"""


def _run_runtime(tmp_path: Path, identity: list[str]) -> tuple[dict[str, Any], str]:
    code = tmp_path / "bundle"
    code.mkdir(exist_ok=True)
    (code / "context_tasks.py").write_text(textwrap.dedent(CONTEXT_TASKS))
    store = LocalBlobStore(tmp_path / "blobs")
    digest, data = build_bundle(code)
    bundle_uri = store.put(f"bundles/{digest}.tar.gz", data)
    inputs_uri = store.put("executions/e1/n0/inputs.json", json.dumps({"x": 1}).encode())
    outputs_uri = store.uri("executions/e1/n0/outputs.json")
    attempt = tmp_path / f"attempt-{len(identity)}"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fleetflow.runtime",
            "--bundle-uri",
            bundle_uri,
            "--inputs-uri",
            inputs_uri,
            "--outputs-uri",
            outputs_uri,
            "--module",
            "context_tasks",
            "--function",
            "report",
            "--result-file",
            str(attempt / "result.json"),
            "--workdir",
            str(attempt / "code"),
            *identity,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    outputs = json.loads(read_uri(outputs_uri))
    return json.loads(outputs["o0"]), proc.stderr


def test_the_runtime_gives_the_attempt_identity_it_was_told(tmp_path: Path) -> None:
    identity = [
        "--execution-id",
        "ex_123",
        "--node-id",
        "n2-report",
        "--attempt-id",
        "at_456",
        "--attempt-number",
        "3",
        "--map-index",
        "4",
    ]
    seen, stderr = _run_runtime(tmp_path, identity)
    workdir = Path(seen.pop("workdir"))
    checkpoint = seen.pop("checkpoint")
    assert seen == {
        "execution_id": "ex_123",
        "node_id": "n2-report",
        "attempt_id": "at_456",
        "attempt_number": 3,
        "map_index": 4,
        "task_name": "context_tasks.report",
        "workdir_is_dir": True,
        "local": False,
    }
    assert checkpoint.startswith("no checkpoint is kept for this attempt")
    assert not workdir.exists()  # removed when the attempt ended
    # The logger's records are in the attempt's log, as the task's own logging is.
    assert "INFO context_tasks.report: reporting from n2-report" in stderr


def test_the_runtime_reads_and_rewrites_the_staged_checkpoint(tmp_path: Path) -> None:
    kept = tmp_path / "staged-checkpoint"
    kept.mkdir()
    (kept / "checkpoint.bin").write_bytes(b"from attempt 1")
    seen, _ = _run_runtime(tmp_path, ["--attempt-number", "2", "--checkpoint-dir", str(kept)])
    assert seen["checkpoint"] == "read 'from attempt 1'"
    assert (kept / "checkpoint.bin").read_bytes() == b"attempt 2 was here"
    assert sorted(p.name for p in kept.iterdir()) == ["checkpoint.bin"]  # nothing half-written


def test_the_runtime_without_an_identity_still_gives_a_context(tmp_path: Path) -> None:
    """An agent from before the identity arguments: the fields are empty, not an error."""
    seen, _ = _run_runtime(tmp_path, [])
    assert (seen["execution_id"], seen["node_id"], seen["attempt_number"]) == ("", "", 0)
    assert seen["map_index"] is None


def test_a_kept_archive_never_extracts_outside_its_destination(tmp_path: Path) -> None:
    """A checkpoint archive a hostile earlier attempt shaped: nothing lands outside."""
    root = tmp_path / "checkpoint"
    root.mkdir()
    with tarfile.open(root / DIRECTORY_ARCHIVE, "w") as tar:
        data = b"escaped"
        member = tarfile.TarInfo("../escaped.txt")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    with pytest.raises(tarfile.TarError):
        Checkpoint(root).restore_directory(tmp_path / "restored")
    assert not (tmp_path / "escaped.txt").exists()


def test_the_runtime_copies_the_checkpoint_in_and_back_itself_where_no_agent_stages(
    tmp_path: Path,
) -> None:
    # A pod: nothing staged, each attempt a fresh filesystem; the runtime is told the unit's
    # checkpoint location and reads and writes it with the store's access.
    store = LocalBlobStore(tmp_path / "blobs")
    unit = store.uri("executions/e1/n0/checkpoint")
    first = ["--attempt-number", "1", "--checkpoint-dir", str(tmp_path / "pod-1")]
    seen, _ = _run_runtime(tmp_path, [*first, "--checkpoint-uri", unit])
    assert seen["checkpoint"] == "read ''"
    assert store.get(f"{unit}/checkpoint.bin") == b"attempt 1 was here"

    second = ["--attempt-number", "2", "--attempt-id", "a2"]
    second += ["--checkpoint-dir", str(tmp_path / "pod-2"), "--checkpoint-uri", unit]
    seen, stderr = _run_runtime(tmp_path, second)
    assert seen["checkpoint"] == "read 'attempt 1 was here'"
    assert store.get(f"{unit}/checkpoint.bin") == b"attempt 2 was here"
    assert "kept the checkpoint (checkpoint.bin)" in stderr


def test_the_runtime_refuses_a_checkpoint_location_without_a_directory(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fleetflow.runtime", "--bundle-uri", "b", "--inputs-uri", "i"]
        + ["--outputs-uri", "o", "--module", "m", "--function", "f", "--result-file", "r"]
        + ["--checkpoint-uri", "file:///c"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "--checkpoint-uri needs --checkpoint-dir" in proc.stderr


KILLED_TASKS = """
import os
import signal
from fleetflow import current_context, task
from fleetflow.context import CheckpointSaveError


@task
def killed_after_writing(steps: int) -> str:
    ctx = current_context()
    for step in range(steps):
        ctx.checkpoint.write(f"step {step}".encode())
    os.kill(os.getpid(), signal.SIGKILL)  # as a pod deleted past its grace, or OOM-killed
    return "never"


@task
def unsaved() -> str:
    try:
        current_context().checkpoint.write(b"lost")
    except CheckpointSaveError as exc:
        return str(exc)
    return "saved"
"""


def _runtime_with_checkpoint_uri(
    tmp_path: Path, function: str, inputs: dict[str, Any], unit: str
) -> subprocess.CompletedProcess[str]:
    code = tmp_path / "killed-bundle"
    code.mkdir(exist_ok=True)
    (code / "killed_tasks.py").write_text(KILLED_TASKS)
    store = LocalBlobStore(tmp_path / "blobs")
    digest, data = build_bundle(code)
    return subprocess.run(
        [sys.executable, "-m", "fleetflow.runtime"]
        + ["--bundle-uri", store.put(f"bundles/{digest}.tar.gz", data)]
        + ["--inputs-uri", store.put(f"{function}/inputs.json", json.dumps(inputs).encode())]
        + ["--outputs-uri", store.uri(f"{function}/outputs.json")]
        + ["--module", "killed_tasks", "--function", function]
        + ["--result-file", str(tmp_path / function / "result.json")]
        + ["--workdir", str(tmp_path / function / "code")]
        + ["--checkpoint-dir", str(tmp_path / function / "ckpt"), "--checkpoint-uri", unit],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


def test_a_checkpoint_is_saved_when_write_returns_where_the_runtime_keeps_it(
    tmp_path: Path,
) -> None:
    """In a pod (the runtime keeps the checkpoint, `--checkpoint-uri`), each write is uploaded
    before it returns: a process killed right after its last write leaves that write saved."""
    store = LocalBlobStore(tmp_path / "blobs")
    unit = store.uri("executions/e1/n0/checkpoint")
    proc = _runtime_with_checkpoint_uri(tmp_path, "killed_after_writing", {"steps": 3}, unit)
    assert proc.returncode == -9, proc.stderr
    assert store.get(f"{unit}/checkpoint.bin") == b"step 2"
    assert proc.stderr.count("kept the checkpoint (checkpoint.bin)") == 3


def test_a_checkpoint_that_cannot_be_saved_is_an_error_the_task_sees(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the unit's checkpoint location would be")
    proc = _runtime_with_checkpoint_uri(tmp_path, "unsaved", {}, blocked.as_uri())
    assert proc.returncode == 0, proc.stderr
    outputs = json.loads(read_uri(LocalBlobStore(tmp_path / "blobs").uri("unsaved/outputs.json")))
    assert outputs["o0"].startswith(
        "the checkpoint's checkpoint.bin was written but not saved for the next attempts"
    )


def test_the_working_directory_is_made_only_when_asked_for_and_removed_at_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fleetflow.context import attempt_context

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    common = {
        "execution_id": "ex-1",
        "node_id": "n0-a",
        "attempt_number": 1,
        "map_index": None,
        "attempt_id": "at-1",
        "task_name": "m.a",
        "local": False,
        "checkpoint": None,
    }
    with attempt_context(**common):
        assert list(tmp_path.iterdir()) == [], "a directory no task asked for was made"
    with attempt_context(**common) as ctx:
        seen: list[Path] = []
        threads = [threading.Thread(target=lambda: seen.append(ctx.workdir)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(set(seen)) == 1 and seen[0].is_dir()  # threads asking at once share one
        assert list(tmp_path.iterdir()) == [seen[0]]
    assert list(tmp_path.iterdir()) == [], "the attempt's directory outlived it"
