"""A typed workflow compiles to the expected spec and runs locally with real values."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fleetflow import (
    LiteralValidationError,
    TaskFunction,
    WorkflowFunction,
    WorkflowInputError,
    WorkflowOutputError,
    task,
    workflow,
)
from fleetflow.ir import (
    InputBinding,
    LiteralBinding,
    NodeOutputBinding,
    TypeKind,
    WorkflowSpec,
)
from fleetflow.local import run_locally, topological_order
from fleetflow.types import to_literal, to_python

FIXTURES = Path(__file__).parent / "fixtures"


def load_fixture_module(stem: str) -> ModuleType:
    """Import `fixtures/<stem>.py` under a unique module name, registered in sys.modules.

    Registered because dataclass annotations resolve through sys.modules, and because the task
    runtime finds a task by `importlib.import_module(spec.module)`.
    """
    name = f"fleetflow_sdk_fixture_{stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, FIXTURES / f"{stem}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


@pytest.fixture(scope="module")
def ml() -> ModuleType:
    return load_fixture_module("ml_pipeline")


def test_pipeline_runs_locally_and_returns_real_values(ml: ModuleType) -> None:
    report = ml.pipeline(n=4, slope=0.5)

    assert report == ml.Report(model=ml.Model(slope=0.5, intercept=1.0), mse=0.0, n=4)
    assert isinstance(report.model, ml.Model)


def test_pipeline_uses_defaults_and_accepts_positional_inputs(ml: ModuleType) -> None:
    assert ml.pipeline() == ml.Report(model=ml.Model(slope=2.0, intercept=1.0), mse=0.0, n=5)
    assert ml.pipeline(3, 0.5).n == 3


def test_int_output_flows_into_float_parameter_and_tasks_cannot_share_mutations(
    ml: ModuleType,
) -> None:
    # `log_values` appends to its list; `total` must still see the original input.
    assert ml.sums(values=[1.0, 2.0]) == {"raw": 3.0, "scaled": 9.0}
    assert ml.sums(values=[1.0], factor=2) == {"raw": 1.0, "scaled": 2.0}


def test_workflows_returning_constants_inputs_or_nothing(ml: ModuleType) -> None:
    assert ml.constant_answer() == 42
    assert ml.constant_answer.spec.outputs == {"o0": LiteralBinding(value=42)}
    assert ml.echo(message="hi") == "hi"
    assert ml.echo.spec.outputs == {"o0": InputBinding(input="message")}
    assert ml.side_effect_only(values=[1.0]) is None
    assert ml.side_effect_only.spec.outputs == {}
    assert ml.side_effect_only.spec.interface.outputs == []


def test_pipeline_spec_shape(ml: ModuleType) -> None:
    spec = ml.pipeline.spec
    module = ml.__name__

    assert spec.name == f"{module}.pipeline"
    assert (spec.module, spec.function) == (module, "pipeline")
    assert [(v.name, v.type.kind, v.default, v.has_default) for v in spec.interface.inputs] == [
        ("n", TypeKind.INTEGER, 5, True),
        ("slope", TypeKind.FLOAT, 2.0, True),
    ]
    report_type = spec.interface.outputs[0].type
    assert spec.interface.outputs[0].name == "o0"
    assert report_type.kind is TypeKind.STRUCT
    assert report_type.name == f"{module}.Report"
    assert report_type.fields is not None and report_type.fields["model"].kind is TypeKind.STRUCT

    assert [n.id for n in spec.nodes] == ["n0-make_data", "n1-train", "n2-evaluate"]
    make, train, evaluate = spec.nodes
    assert make.task == f"{module}.make_data"
    assert make.inputs == {"n": InputBinding(input="n"), "slope": InputBinding(input="slope")}
    # omitted parameter with a default: bound to the task's default
    assert train.inputs == {
        "data": NodeOutputBinding(node_id="n0-make_data", output="o0"),
        "epochs": LiteralBinding(value=1),
    }
    assert evaluate.inputs == {
        "model": NodeOutputBinding(node_id="n1-train", output="o0"),
        "data": NodeOutputBinding(node_id="n0-make_data", output="o0"),
    }
    assert evaluate.upstream == ["n1-train", "n0-make_data"]
    assert spec.outputs == {"o0": NodeOutputBinding(node_id="n2-evaluate", output="o0")}

    assert set(spec.tasks) == {f"{module}.{t}" for t in ("make_data", "train", "evaluate")}
    train_spec = spec.tasks[f"{module}.train"]
    assert (train_spec.module, train_spec.function) == (module, "train")
    assert train_spec.resources.cpu == 2.0
    assert train_spec.resources.memory_bytes == 4 * 2**30
    assert (train_spec.resources.gpu, train_spec.resources.gpu_type) == (1, "H100")
    assert (train_spec.retries, train_spec.timeout_seconds) == (2, 5400)
    make_spec = spec.tasks[f"{module}.make_data"]
    assert (make_spec.retries, make_spec.timeout_seconds) == (1, 600)
    assert make_spec.resources.memory_bytes == 0 and make_spec.resources.gpu == 0


def test_spec_json_round_trips(ml: ModuleType) -> None:
    for wf in (ml.pipeline, ml.sums, ml.constant_answer, ml.echo, ml.side_effect_only):
        spec = wf.spec
        again = WorkflowSpec.model_validate_json(spec.model_dump_json())
        assert again == spec
        assert again.digest() == spec.digest()


def test_workflow_function_attributes(ml: ModuleType) -> None:
    wf = ml.pipeline
    assert isinstance(wf, WorkflowFunction)
    assert wf.input_types == {"n": int, "slope": float}
    assert wf.output_type is ml.Report
    assert wf.defaults == {"n": 5, "slope": 2.0}
    assert wf.tasks == {
        f"{ml.__name__}.make_data": ml.make_data,
        f"{ml.__name__}.train": ml.train,
        f"{ml.__name__}.evaluate": ml.evaluate,
    }
    assert wf.__name__ == "pipeline" and wf.fn.__name__ == "pipeline"
    assert ml.side_effect_only.output_type is None


def test_tasks_are_found_and_called_the_way_the_task_runtime_does(ml: ModuleType) -> None:
    """Import `spec.module`, take `spec.function`, convert inputs, call `.fn`, convert output."""
    spec = ml.pipeline.spec
    train_spec = spec.tasks[f"{ml.__name__}.train"]
    task_fn = getattr(importlib.import_module(train_spec.module), train_spec.function)

    assert isinstance(task_fn, TaskFunction)
    assert task_fn.spec == train_spec
    assert task_fn.input_types == {"data": ml.Dataset, "epochs": int}
    assert task_fn.output_type is ml.Model
    raw_inputs = {"data": {"xs": [0, 1], "ys": [1.0, 3.0]}, "epochs": 1}
    kwargs = {k: to_python(v, task_fn.input_types[k]) for k, v in raw_inputs.items()}
    assert to_literal(task_fn.fn(**kwargs), task_fn.output_type) == {
        "slope": 2.0,
        "intercept": 1.0,
    }


def test_task_outside_a_workflow_is_a_plain_call(ml: ModuleType) -> None:
    assert ml.make_data(3) == ml.Dataset(xs=[0.0, 1.0, 2.0], ys=[1.0, 3.0, 5.0])
    assert ml.make_data(n=2, slope=0.0).ys == [1.0, 1.0]
    assert ml.scale([1.0], 2) == [2.0]  # no conversion: a plain Python call
    with pytest.raises(ValueError, match="at least 2 points"):
        ml.make_data(n=1)


def test_task_errors_propagate_with_a_note_naming_the_node(ml: ModuleType) -> None:
    with pytest.raises(ValueError, match="need at least 2 points") as info:
        ml.pipeline(n=1)
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "n0-make_data" in notes and f"{ml.__name__}.make_data" in notes
    assert f"{ml.__name__}.pipeline" in notes


def test_local_run_rejects_a_result_that_would_not_serialise() -> None:
    @task
    def lies() -> float:
        return "not a float"

    @workflow
    def wf() -> float:
        return lies()

    wrong = r"task lies \(.*:\d+\) returned str 'not a float', expected float"
    with pytest.raises(LiteralValidationError, match=wrong) as info:
        wf()
    assert info.value.path == "n0-lies.outputs.o0"
    assert any("n0-lies" in note for note in info.value.__notes__)


def test_inputs_are_validated_by_name(ml: ModuleType) -> None:
    with pytest.raises(LiteralValidationError) as info:
        ml.pipeline(n="3")
    assert info.value.path == "inputs.n"
    assert "expected int, got str" in str(info.value)

    with pytest.raises(WorkflowInputError, match="has no input 'epochs'; its inputs are: n, slope"):
        ml.pipeline(epochs=3)
    with pytest.raises(WorkflowInputError, match="missing required input 'message' \\(str\\)"):
        ml.echo()
    with pytest.raises(WorkflowInputError, match="given twice"):
        ml.pipeline(3, n=4)
    with pytest.raises(WorkflowInputError, match="takes 2 input"):
        ml.pipeline(1, 2.0, 3)


def test_inputs_to_literals(ml: ModuleType) -> None:
    assert ml.pipeline.inputs_to_literals({"n": 3}) == {"n": 3, "slope": 2.0}
    assert ml.pipeline.inputs_to_literals({"slope": 1}) == {"n": 5, "slope": 1.0}
    assert ml.sums.inputs_to_literals({"values": (1, 2.5)}) == {"values": [1.0, 2.5], "factor": 3}
    with pytest.raises(LiteralValidationError) as info:
        ml.sums.inputs_to_literals({"values": [1.0, "x"]})
    assert info.value.path == "inputs.values[1]"
    with pytest.raises(WorkflowInputError) as missing:
        ml.sums.inputs_to_literals({})
    assert missing.value.input_name == "values"
    with pytest.raises(WorkflowInputError) as unknown:
        ml.sums.inputs_to_literals({"value": [1.0]})
    assert unknown.value.input_name == "value"


def test_outputs_to_python(ml: ModuleType) -> None:
    literal = {"model": {"slope": 1, "intercept": 0.5}, "mse": 0.25, "n": 2}
    assert ml.pipeline.outputs_to_python({"o0": literal}) == ml.Report(
        model=ml.Model(slope=1.0, intercept=0.5), mse=0.25, n=2
    )
    assert ml.side_effect_only.outputs_to_python({}) is None
    with pytest.raises(WorkflowOutputError, match="no 'o0'"):
        ml.pipeline.outputs_to_python({})
    with pytest.raises(LiteralValidationError) as info:
        ml.pipeline.outputs_to_python({"o0": {**literal, "n": "two"}})
    assert info.value.path == "outputs.o0.n"


def test_local_runner_orders_nodes_by_dependency_not_by_listing(ml: ModuleType) -> None:
    spec = ml.pipeline.spec
    shuffled = spec.model_copy(update={"nodes": list(reversed(spec.nodes))})
    assert [n.id for n in topological_order(shuffled.nodes)] == [
        "n0-make_data",
        "n1-train",
        "n2-evaluate",
    ]
    inputs = ml.pipeline.inputs_to_literals({"n": 3})
    outputs: dict[str, Any] = run_locally(shuffled, ml.pipeline.tasks, inputs)
    assert outputs["o0"]["n"] == 3 and outputs["o0"]["model"] == {"slope": 2.0, "intercept": 1.0}


def test_local_runner_refuses_cycles(ml: ModuleType) -> None:
    a, b, _ = ml.pipeline.spec.nodes
    looped_a = a.model_copy(update={"inputs": {"n": NodeOutputBinding(node_id=b.id, output="o0")}})
    with pytest.raises(ValueError, match="cycle"):
        topological_order([looped_a, b])
    with pytest.raises(ValueError, match="unknown node 'n0-make_data'"):
        topological_order([b])
