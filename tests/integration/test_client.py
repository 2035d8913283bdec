"""`fleetflow.Client` and `fleetflow run --remote` against a real stack: typed outputs equal to
a local run's, File/Directory inputs uploaded, --no-wait, register, cancel, clear errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fleetflow import Directory, File
from fleetflow.client import ApiError, ExecutionNotSucceededError, ExecutionResult
from fleetflow.loader import load_workflow
from tests.integration.stack import FLEETFLOW, Stack

pytestmark = pytest.mark.integration

WORKFLOWS = Path(__file__).parent / "workflows" / "sdk_features.py"


def workflow(name: str) -> Any:
    wf, _ = load_workflow(WORKFLOWS, name)
    return wf


def wait_for_file(path: Path, stack: Stack, timeout: float = 60) -> str:
    return str(stack.wait_for(lambda: path.exists() and path.read_text(), f"{path}", timeout))


def last_json(stdout: str) -> Any:
    return json.loads(stdout.strip().splitlines()[-1])


def test_run_gives_typed_outputs_identical_to_a_local_run(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the local run writes its report file here
    report = workflow("report")
    local = report(n=5, offset=1)
    with stack.client() as client:
        result = client.run(report, n=5, offset=1, timeout=120)
        assert isinstance(result, ExecutionResult)
        assert result.status == "SUCCEEDED", f"{result.error}\n{stack.logs()}"
        remote = result.outputs
        assert type(remote) is type(local) and type(remote.stats) is type(local.stats)
        assert remote.stats == local.stats and remote.squares == local.squares == [1, 2, 5, 10, 17]
        assert isinstance(remote.text, File) and remote.text.path != local.text.path
        assert remote.text.path.read_text() == local.text.path.read_text()
        # One attempt per map element, in element order in the outputs.
        elements = sorted(a.map_index for a in result.execution.attempts if a.map_index is not None)
        assert elements == [0, 1, 2, 3, 4]
        assert client.outputs(result.id, report) == remote


def test_file_and_directory_inputs_are_uploaded(stack: Stack, tmp_path: Path) -> None:
    data = tmp_path / "my data (v2).txt"  # a name the uploads API would not take as is
    data.write_text("one two three\nfour\n")
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("aaa")
    (folder / "sub" / "b.bin").write_bytes(b"\0" * 5)
    with stack.client() as client:
        words = client.run(workflow("word_count"), data=File(data), timeout=120)
        assert words.status == "SUCCEEDED", f"{words.error}\n{stack.logs()}"
        assert words.outputs == 4
        sent = words.execution.inputs["data"]
        assert sent["name"] == data.name
        assert sent["uri"].startswith(f"{stack.blob_root}/tenants/default/uploads/files/")

        sizes = client.run(workflow("folder_sizes"), folder=Directory(folder), timeout=120)
        assert sizes.status == "SUCCEEDED", f"{sizes.error}\n{stack.logs()}"
        assert sizes.outputs == {"a.txt": 3, "sub/b.bin": 5}
        assert sizes.execution.inputs["folder"]["uri"].startswith(
            f"{stack.blob_root}/tenants/default/uploads/dirs/"
        )


def test_a_task_that_edits_its_inputs_in_place_gives_the_local_result_remotely(
    stack: Stack, tmp_path: Path
) -> None:
    """Issue 16's silent wrong result: a received Directory and File changed in place and
    returned; the next task must see the edits remotely as it does locally."""

    def inputs(where: Path) -> dict[str, Any]:
        (where / "folder").mkdir(parents=True)
        (where / "folder" / "a.txt").write_text("original")
        (where / "note.txt").write_text("a note")
        return {"folder": Directory(where / "folder"), "note": File(where / "note.txt")}

    wf = workflow("edited_in_place")
    local = wf(**inputs(tmp_path / "local"))
    with stack.client() as client:
        remote = client.run(wf, timeout=120, **inputs(tmp_path / "remote"))
    assert remote.status == "SUCCEEDED", f"{remote.error}\n{stack.logs()}"
    assert (
        remote.outputs
        == local
        == {
            "a.txt": "edited",
            "added.txt": "new",
            "note": "a note and more",
        }
    )


def test_sets_int_and_enum_keyed_dicts_literals_and_tuples_run_remotely_as_locally(
    stack: Stack,
) -> None:
    wf = workflow("newer_types")
    inputs = {"tags": {"b", "a"}, "weights": {1: 0.5, -3: 2.0}, "stage": "eval"}
    local = wf(**inputs)
    with stack.client() as client:
        remote = client.run(wf, timeout=120, **inputs)
    assert remote.status == "SUCCEEDED", f"{remote.error}\n{stack.logs()}"
    assert remote.outputs == local
    upper, counts = remote.outputs
    assert upper == frozenset({"A", "B"}) and type(upper) is frozenset
    assert {key.value: n for key, n in counts.items()} == {"red": 2, "green": 4}
    assert remote.execution.inputs["weights"] == {"1": 0.5, "-3": 2.0}


def test_run_without_waiting_then_cancel(exchange_dir: Path, stack: Stack, tmp_path: Path) -> None:
    marker = exchange_dir / "pid.txt"
    with stack.client() as client:
        execution = client.run(workflow("sleepy"), wait=False, seconds=300.0, marker=str(marker))
        assert execution.status in ("QUEUED", "RUNNING")
        wait_for_file(marker, stack)
        client.cancel(execution.id)
        final = client.wait_for_execution(execution.id, timeout=60)
        assert final.status == "CANCELLED"
        assert final.attempts[0].status == "CANCELLED"
        with pytest.raises(ExecutionNotSucceededError, match="is CANCELLED; it has no outputs"):
            client.outputs(execution.id, workflow("sleepy"))
        assert client.cancel(execution.id).status == "CANCELLED"  # idempotent


def test_failures_and_refusals_are_explained(stack: Stack) -> None:
    failing = workflow("failing")
    with stack.client() as client:
        result = client.run(failing, n=3, timeout=120)
        assert result.status == "FAILED" and result.outputs is None
        assert result.error is not None and "ValueError: cannot handle 3" in result.error["message"]
        with pytest.raises(
            ExecutionNotSucceededError, match="is FAILED: ValueError: cannot handle"
        ):
            client.outputs(result.id, failing)
        with pytest.raises(ApiError, match="execution ex-doesnotexist not found") as info:
            client.executions.get("ex-doesnotexist")
        assert info.value.status_code == 404
        with pytest.raises(ApiError, match="not found"):
            client.cancel("ex-doesnotexist")
        listed = client.executions.list(limit=200)
        assert result.id in {e.id for e in listed}


def test_cli_remote_run_uploads_a_file_and_prints_json_outputs(
    stack: Stack, tmp_path: Path
) -> None:
    data = tmp_path / "words.txt"
    data.write_text("a b c d e\n")
    run = stack.cli("run", "--remote", str(WORKFLOWS), "word_count", "--data", str(data))
    assert run.returncode == 0, run.stdout + run.stderr + stack.logs()
    assert last_json(run.stdout) == {"o0": 5}
    assert re.search(r"n0-count_words \(attempt 1\) SUCCEEDED on local", run.stdout), run.stdout


def test_cli_remote_map_outputs_match_a_local_run(stack: Stack, tmp_path: Path) -> None:
    args = (str(WORKFLOWS), "report", "--n", "3", "--title", "t")
    remote = stack.cli("run", "--remote", *args)
    assert remote.returncode == 0, remote.stdout + remote.stderr + stack.logs()
    assert re.search(r"n1-square\[2\] \(attempt 1\) SUCCEEDED on local", remote.stdout)
    local = subprocess.run(
        [FLEETFLOW, "run", *args],
        env={**os.environ, **stack.env},
        cwd=tmp_path,  # the local run writes its text file into the working directory
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert local.returncode == 0, local.stderr
    remote_outputs, local_outputs = last_json(remote.stdout), last_json(local.stdout)
    assert (
        remote_outputs["stats"] == local_outputs["stats"] == {"count": 3, "total": 5, "mean": 5 / 3}
    )
    assert remote_outputs["squares"] == local_outputs["squares"] == [0, 1, 4]
    assert remote_outputs["text"]["name"] == local_outputs["text"]["name"] == "t.txt"


def test_cli_no_wait_prints_the_execution_id(stack: Stack) -> None:
    run = stack.cli("run", "--remote", "--no-wait", str(WORKFLOWS), "report", "--n", "2")
    assert run.returncode == 0, run.stdout + run.stderr
    execution_id = run.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"ex-[0-9a-f]+", execution_id), run.stdout
    with stack.client() as client:
        final = client.wait_for_execution(execution_id, timeout=120)
    assert final.status == "SUCCEEDED", stack.logs()
    shown = stack.cli("executions", "get", execution_id)
    assert shown.returncode == 0, shown.stderr
    assert last_json(shown.stdout)["squares"] == [0, 1]


def test_cli_register_then_cancel(exchange_dir: Path, stack: Stack, tmp_path: Path) -> None:
    registered = stack.cli("register", str(WORKFLOWS), "sleepy")
    assert registered.returncode == 0, registered.stderr
    assert re.search(r"registered sdk_features\.sleepy version \S+", registered.stdout)

    marker = exchange_dir / "pid.txt"
    run = stack.cli(
        "run", "--remote", "--no-wait", str(WORKFLOWS), "sleepy",
        "--seconds", "300", "--marker", str(marker),
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    execution_id = run.stdout.strip().splitlines()[-1]
    wait_for_file(marker, stack)
    cancelled = stack.cli("executions", "cancel", execution_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert execution_id in cancelled.stdout
    with stack.client() as client:
        assert client.wait_for_execution(execution_id, timeout=60).status == "CANCELLED"
    again = stack.cli("executions", "cancel", execution_id)
    assert again.returncode == 0 and "CANCELLED" in again.stdout
    missing = stack.cli("executions", "cancel", "ex-doesnotexist")
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: execution ex-doesnotexist not found")
