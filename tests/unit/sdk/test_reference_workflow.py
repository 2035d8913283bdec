"""`@reference_workflow`: a typed stub of a registered workflow. Its calls compile to nodes
whose task records the reference (name, version, the stub's interface), type-checked like any
call (the mis-typed cases are in test_mistyped_workflows.py); a local run refuses it, plainly;
the spec format refuses references where they cannot run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from fleetflow import (
    InvalidOptionError,
    ReferenceWorkflowError,
    ir,
    reference_workflow,
    task,
    workflow,
)
from tests.unit.cli_harness import Invoke, cli_invoker, user_environment


@reference_workflow(name="team.train", version="v3")
def train(x: int, lr: float = 0.1) -> float: ...


@task
def double(y: float) -> float:
    return 2 * y


@workflow
def retrain(x: int) -> float:
    return double(y=train(x=x, lr=0.5))


def test_the_node_records_the_reference_and_the_stubs_interface() -> None:
    spec = retrain.spec
    node = spec.nodes[0]
    stub = spec.tasks[node.task]
    assert node.id == "n0-train"
    assert stub.reference == ir.WorkflowReference(name="team.train", version="v3")
    assert [v.name for v in stub.interface.inputs] == ["x", "lr"]
    assert [v.type.describe() for v in stub.interface.inputs] == ["int", "float"]
    assert [v.type.describe() for v in stub.interface.outputs] == ["float"]
    assert spec.nodes[1].upstream == ["n0-train"]
    # Written only where there is a reference: other tasks keep their digests.
    assert "reference" not in spec.tasks[spec.nodes[1].task].model_dump()
    assert ir.WorkflowSpec.model_validate_json(spec.model_dump_json()) == spec


def test_a_local_run_is_refused_before_anything_runs() -> None:
    with pytest.raises(ReferenceWorkflowError) as refused:
        retrain(x=2)
    message = str(refused.value)
    assert "workflow team.train version v3" in message
    assert "runs only there" in message and "--remote" in message
    assert "node 'n0-train'" in message


def test_calling_the_stub_outside_a_workflow_is_refused() -> None:
    with pytest.raises(ReferenceWorkflowError, match="team.train version v3"):
        train(x=1)


@pytest.mark.parametrize(
    ("name", "version", "says"),
    [
        ("", "v1", "name must be a non-empty string"),
        ("team.train", " ", "version must be a non-empty string"),
        ("team.train", "v" * 129, "at most 128 characters"),
        (" team.train", "v1", "without surrounding spaces"),
    ],
)
def test_a_bad_name_or_version_is_refused(name: str, version: str, says: str) -> None:
    with pytest.raises(InvalidOptionError, match=says):
        reference_workflow(name=name, version=version)


def test_the_spec_refuses_a_map_of_a_reference() -> None:
    raw = retrain.spec.model_dump(mode="json")
    raw["nodes"][0]["map"] = {"over": ["x"]}
    with pytest.raises(ValidationError, match="runs reference workflow"):
        ir.WorkflowSpec.model_validate(raw)


def test_a_dynamic_sub_dag_may_not_call_a_reference() -> None:
    sub = retrain.spec.model_copy(update={"interface": ir.TypedInterface()})
    with pytest.raises(ValueError, match="calls reference workflow"):
        ir.check_dynamic_spec(sub, "n0-fan", "m.fan")


FLOW = """
from fleetflow import reference_workflow, workflow


@reference_workflow(name="team.train", version="v3")
def train(x: int) -> float: ...


@workflow
def retrain(x: int) -> float:
    return train(x=x)
"""


@pytest.fixture
def fleetflow(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> Iterator[Invoke]:
    (tmp_path / "ref_flow.py").write_text(FLOW)
    environment = user_environment(monkeypatch, tmp_path)
    next(environment)
    yield cli_invoker(monkeypatch, capsys)
    next(environment, None)


def test_fleetflow_run_locally_says_why_without_a_traceback(fleetflow: Invoke) -> None:
    result = fleetflow("run", "ref_flow.py", "retrain", "--x", "1")
    assert result.code != 0
    assert "references workflow team.train version v3" in result.err
    assert "Traceback" not in result.err + result.out
