"""The task runtime, run as a real `python -m fleetflow.runtime` process on a local blob store."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fleetflow.bundle import build_bundle
from fleetflow.storage import LocalBlobStore, read_uri

STAND_IN_BUNDLE = Path(__file__).resolve().parents[2] / "fixtures" / "stand_in_bundle"


@dataclass
class RuntimeRun:
    returncode: int
    stdout: str
    stderr: str
    result: dict[str, Any]
    outputs: Any
    workdir: Path


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def run_runtime(
    store: LocalBlobStore, tmp_path: Path, function: str, inputs: dict[str, Any]
) -> RuntimeRun:
    digest, data = build_bundle(STAND_IN_BUNDLE)
    bundle_uri = store.put(f"bundles/{digest}.tar.gz", data)
    inputs_uri = store.put("executions/e1/n1/inputs.json", json.dumps(inputs).encode())
    outputs_uri = store.uri("executions/e1/n1/outputs.json")
    result_file = tmp_path / "attempt" / "result.json"
    workdir = tmp_path / "attempt" / "code"
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
            "stand_in_tasks",
            "--function",
            function,
            "--result-file",
            str(result_file),
            "--workdir",
            str(workdir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    outputs = json.loads(read_uri(outputs_uri)) if store.exists(outputs_uri) else None
    return RuntimeRun(
        returncode=proc.returncode,
        stdout=proc.stdout,
        stderr=proc.stderr,
        result=json.loads(result_file.read_text()),
        outputs=outputs,
        workdir=workdir,
    )


def test_runs_the_task_and_writes_its_output(store: LocalBlobStore, tmp_path: Path) -> None:
    run = run_runtime(store, tmp_path, "add", {"a": 2, "b": 3})

    assert run.returncode == 0, run.stderr
    assert run.result == {"status": "SUCCEEDED"}
    assert run.outputs == {"o0": 5}
    assert "adding 2 and 3" in run.stdout
    assert "running stand_in_tasks.add" in run.stderr
    assert (run.workdir / "stand_in_tasks.py").is_file()


def test_structured_values_and_defaults(store: LocalBlobStore, tmp_path: Path) -> None:
    run = run_runtime(store, tmp_path, "summarise", {"values": [1, 2.5, 5.5]})

    assert run.returncode == 0, run.stderr
    assert run.outputs == {"o0": {"mean": 3.0, "count": 3}}


def test_task_without_output_and_project_relative_files(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    run = run_runtime(store, tmp_path, "log_only", {"message": "hi"})
    assert (run.returncode, run.outputs) == (0, {}), run.stderr

    run = run_runtime(store, tmp_path, "read_data_file", {})
    assert (run.returncode, run.outputs) == (0, {"o0": "hello from the bundle"}), run.stderr


def test_task_exception_is_reported_with_its_traceback(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    run = run_runtime(store, tmp_path, "explode", {"reason": "loss is NaN"})

    assert run.returncode == 1
    assert run.result["status"] == "FAILED"
    assert run.result["message"] == "ValueError: loss is NaN"
    assert "in explode" in run.result["traceback"]
    assert "raise ValueError(reason)" in run.result["traceback"]
    assert run.outputs is None
    assert "ValueError: loss is NaN" in run.stderr


@pytest.mark.parametrize(
    ("function", "inputs", "message"),
    [
        ("add", {"a": "two", "b": 3}, "LiteralValidationError: inputs.a: "),
        ("add", {"a": 2}, "FleetflowError: missing task input(s): b"),
        ("add", {"a": 2, "b": 3, "c": 4}, "FleetflowError: unknown task input(s): c"),
        ("nope", {}, "FleetflowError: module 'stand_in_tasks' has no attribute 'nope'"),
        ("not_a_task", {}, "FleetflowError: stand_in_tasks.not_a_task is not a @fleetflow.task"),
    ],
    ids=["bad-type", "missing-input", "unknown-input", "no-such-function", "not-a-task"],
)
def test_bad_invocations_fail_with_a_clear_message(
    store: LocalBlobStore, tmp_path: Path, function: str, inputs: dict[str, Any], message: str
) -> None:
    run = run_runtime(store, tmp_path, function, inputs)

    assert run.returncode == 1
    assert run.result["status"] == "FAILED"
    assert run.result["message"].startswith(message)
    # No user code ran: the traceback holds only the error itself, no frames of ours.
    assert run.result["message"].split(": ", 1)[1] in run.result["traceback"]


_TASK_MODULE = """
from fleetflow import task, workflow

compiled = []


@task
def double(x: int) -> int:
    return 2 * x


@workflow
def pipeline(x: int) -> int:
    compiled.append("pipeline")
    return double(x=x)


@workflow
def miswired(x: int) -> int:
    compiled.append("miswired")
    return double(y=x)


@task
def unannotated(x):
    return x
"""


def test_the_runtime_imports_a_task_module_without_defining_what_it_does_not_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runtime needs one task of the module: its other tasks and its workflows are
    checked and compiled only when used, so a mistake elsewhere in the bundle fails where it
    is used, not the task's attempt."""
    from fleetflow.errors import TaskDefinitionError, WorkflowCompileError
    from fleetflow.runtime import load_task

    (tmp_path / "lazy_wf_tasks.py").write_text(_TASK_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "lazy_wf_tasks", raising=False)

    double = load_task("lazy_wf_tasks", "double")

    module = sys.modules["lazy_wf_tasks"]
    assert double.fn(x=3) == 6
    # What the runtime asks of it needs no spec (building one is its costliest pydantic).
    assert (double.name, double.dynamic, double.input_types) == (
        "lazy_wf_tasks.double",
        False,
        {"x": int},
    )
    assert "spec" not in vars(double)
    assert module.compiled == []
    assert module.pipeline.spec.name == "lazy_wf_tasks.pipeline"
    assert module.pipeline.input_types == {"x": int}
    assert module.compiled == ["pipeline"]
    assert module.pipeline.spec is module.pipeline.spec  # compiled once
    with pytest.raises(WorkflowCompileError, match="y"):
        _ = module.miswired.spec
    assert double.spec.name == "lazy_wf_tasks.double"
    with pytest.raises(TaskDefinitionError, match="x"):
        _ = module.unannotated.input_types
    del sys.modules["lazy_wf_tasks"]


def test_importing_a_workflow_module_elsewhere_compiles_it_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside the runtime a wiring mistake still fails the import."""
    import importlib

    from fleetflow.errors import WorkflowCompileError

    (tmp_path / "eager_wf_tasks.py").write_text(_TASK_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(WorkflowCompileError, match="y"):
        importlib.import_module("eager_wf_tasks")
    sys.modules.pop("eager_wf_tasks", None)
