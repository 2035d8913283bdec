"""Wiring mistakes fail at decoration time with a message that says who, where and what.

Each offending line carries a `# <- tag` comment; `location_of(tag)` finds its `file:line`, so
the tests check the exact line the error blames.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fleetflow import (
    DefinitionError,
    FleetflowError,
    PromiseAttributeError,
    TaskDefinitionError,
    WorkflowCompileError,
    task,
    workflow,
)

HERE = Path(__file__)
MODULE = __name__


def location_of(tag: str) -> str:
    lines = HERE.read_text().splitlines()
    matches = [i for i, line in enumerate(lines, start=1) if line.rstrip().endswith(f"# <- {tag}")]
    assert len(matches) == 1, f"tag {tag!r} must mark exactly one line, found {matches}"
    return f"{HERE}:{matches[0]}"


def assert_message(error: BaseException, *, tag: str, contains: list[str]) -> str:
    message = str(error)
    assert location_of(tag) in message, message
    for part in contains:
        assert part in message, f"{part!r} not in {message!r}"
    return message


@dataclass
class Points:
    xs: list[float]


@dataclass
class Labels:
    xs: list[float]  # same fields as Points, different type


@task
def make_int() -> int:
    return 1


@task
def make_ints() -> list[int]:
    return [1, 2]


@task
def make_points() -> Points:
    return Points(xs=[1.0])


@task
def takes_str(text: str) -> str:
    return text


@task
def takes_strs(texts: list[str]) -> int:
    return len(texts)


@task
def takes_labels(labels: Labels) -> int:
    return len(labels.xs)


@task
def takes_float(lr: float, steps: int = 10) -> float:
    return lr * steps


# ---------------------------------------------------------------- bindings inside the body


def test_promise_of_wrong_scalar_type() -> None:
    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def int_into_str() -> str:
            number = make_int()
            return takes_str(text=number)  # <- int-into-str

    assert_message(
        info.value,
        tag="int-into-str",
        contains=[
            f"workflow '{MODULE}.int_into_str'",
            f"task '{MODULE}.takes_str'",
            "parameter 'text'",
            "expects str, got int",
            "output of node 'n0-make_int'",
        ],
    )
    assert isinstance(info.value, TypeError) and isinstance(info.value, FleetflowError)
    error = info.value
    assert (error.workflow, error.task, error.parameter) == (
        f"{MODULE}.int_into_str",
        f"{MODULE}.takes_str",
        "text",
    )
    assert (error.expected, error.actual) == ("str", "int")


def test_promise_of_wrong_list_type() -> None:
    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def ints_into_strs() -> int:
            return takes_strs(texts=make_ints())  # <- ints-into-strs

    assert_message(
        info.value,
        tag="ints-into-strs",
        contains=[
            f"workflow '{MODULE}.ints_into_strs'",
            f"task '{MODULE}.takes_strs'",
            "parameter 'texts'",
            "expects list[str], got list[int]",
        ],
    )


def test_dataclass_with_same_fields_but_other_name_does_not_bind() -> None:
    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def points_into_labels() -> int:
            points = make_points()
            return takes_labels(labels=points)  # <- points-into-labels

    assert_message(
        info.value,
        tag="points-into-labels",
        contains=[
            f"workflow '{MODULE}.points_into_labels'",
            f"task '{MODULE}.takes_labels'",
            "parameter 'labels'",
            "expects Labels, got Points",
        ],
    )


def test_workflow_input_of_wrong_type() -> None:
    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def input_mismatch(count: int) -> str:
            return takes_str(text=count)  # <- input-mismatch

    assert_message(
        info.value,
        tag="input-mismatch",
        contains=["expects str, got int", "workflow input 'count'", "parameter 'text'"],
    )


def test_int_promise_into_float_is_allowed() -> None:
    @workflow
    def widening() -> float:
        return takes_float(lr=make_int())

    assert widening() == 10.0


def test_constant_of_wrong_type() -> None:
    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def bad_constant() -> float:
            return takes_float(lr="fast")  # <- bad-constant

    assert_message(
        info.value,
        tag="bad-constant",
        contains=[
            f"workflow '{MODULE}.bad_constant'",
            f"task '{MODULE}.takes_float'",
            "parameter 'lr'",
            "expects float, got constant str 'fast'",
        ],
    )
    assert (info.value.expected, info.value.actual) == ("float", "str")


def test_constant_list_with_a_wrong_element() -> None:
    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def bad_element() -> int:
            return takes_strs(texts=["a", 2])  # <- bad-element

    assert_message(
        info.value,
        tag="bad-element",
        contains=[
            f"workflow '{MODULE}.bad_element'",
            "parameter 'texts'",
            "expects list[str], got constant list ['a', 2]",
            "at [1]: expected str, got int 2",
        ],
    )


def test_constants_are_converted_with_the_parameter_type() -> None:
    @workflow
    def constants() -> float:
        return takes_float(lr=1, steps=3)

    node = constants.spec.nodes[0]
    assert node.inputs["lr"].model_dump() == {"kind": "literal", "value": 1.0}
    assert node.inputs["steps"].model_dump() == {"kind": "literal", "value": 3}
    assert constants() == 3.0


def test_unknown_parameter() -> None:
    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def unknown_param() -> float:
            return takes_float(lr=0.1, step=3)  # <- unknown-param

    assert_message(
        info.value,
        tag="unknown-param",
        contains=[
            f"workflow '{MODULE}.unknown_param'",
            f"task '{MODULE}.takes_float' has no parameter 'step'",
            "got int 3",
            "its parameters are: lr, steps",
        ],
    )
    assert info.value.parameter == "step"


def test_missing_required_parameter() -> None:
    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def missing_param() -> float:
            return takes_float(steps=3)  # <- missing-param

    assert_message(
        info.value,
        tag="missing-param",
        contains=[
            f"workflow '{MODULE}.missing_param'",
            f"task '{MODULE}.takes_float' is missing required parameter 'lr'",
            "expects float, got nothing",
        ],
    )


def test_positional_arguments() -> None:
    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def positional() -> float:
            return takes_float(0.1)  # <- positional

    message = assert_message(
        info.value,
        tag="positional",
        contains=[
            f"workflow '{MODULE}.positional'",
            f"task '{MODULE}.takes_float'",
            "parameter 'lr'",
            "keyword arguments",
            "takes_float(lr=...)",
        ],
    )
    assert "positional argument" in message


def test_a_promise_of_the_wrong_type_inside_a_list_is_named_by_its_index() -> None:
    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def nested_promise() -> int:
            return takes_strs(texts=[takes_str(text="a"), make_int()])  # <- nested-promise

    assert_message(
        info.value,
        tag="nested-promise",
        contains=[
            "parameter 'texts'",
            "expects list[str]; its item [1] expects str, got int (output of node 'n1-make_int'",
        ],
    )
    assert info.value.parameter == "texts"
    assert (info.value.expected, info.value.actual) == ("str", "int")


def test_a_promise_inside_a_set_is_refused() -> None:
    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def promise_in_a_set() -> int:
            return takes_strs(texts=(takes_str(text="a"), {"b": make_int()}))  # <- in-a-set

    assert_message(
        info.value,
        tag="in-a-set",
        contains=[
            "parameter 'texts'",
            "its item [1] expects str, got a dict with a promise inside",
        ],
    )


_leaked: list[Any] = []


@workflow
def leaks_a_promise() -> int:
    number = make_int()
    _leaked.append(number)
    return number


def test_promise_from_another_workflow() -> None:
    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def uses_leaked() -> float:
            return takes_float(lr=_leaked[0])  # <- leaked

    assert_message(
        info.value,
        tag="leaked",
        contains=[f"workflow '{MODULE}.uses_leaked'", "cannot cross workflows", "parameter 'lr'"],
    )


def test_two_different_tasks_with_one_name() -> None:
    def first() -> Any:
        @task
        def duplicate(x: int) -> int:
            return x

        return duplicate

    def second() -> Any:
        @task
        def duplicate(x: str) -> int:
            return len(x)

        return duplicate

    one, other = first(), second()
    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def clash() -> int:
            one(x=1)
            return other(x="a")  # <- clash

    assert_message(info.value, tag="clash", contains=["two different tasks", "duplicate"])


# ---------------------------------------------------------------- promises in Python control flow


def branch(value: Any) -> None:
    if value:  # <- branch
        pass


def loop(value: Any) -> None:
    for _ in value:  # <- loop
        pass


def unpack(value: Any) -> None:
    first, second = value  # <- unpack


def length(value: Any) -> None:
    len(value)  # <- length


def equals(value: Any) -> None:
    _ = value == 2  # <- equals


def less(value: Any) -> None:
    _ = value < 2  # <- less


def contains(value: Any) -> None:
    _ = 2 in value  # <- contains


def negate(value: Any) -> None:
    _ = not value  # <- negate


@pytest.mark.parametrize(
    ("misuse", "tag", "what"),
    [
        (branch, "branch", "truth value"),
        (negate, "negate", "truth value"),
        (loop, "loop", "iterate"),
        (unpack, "unpack", "unpack"),
        (length, "length", "len()"),
        (equals, "equals", "cannot compare (==) with constant 2: cannot compare a list[int]"),
        (less, "less", "cannot compare (<) with constant 2: cannot compare a list[int]"),
        (contains, "contains", "`in`"),
    ],
)
def test_promise_in_python_control_flow(misuse: Callable[[Any], None], tag: str, what: str) -> None:
    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def control_flow() -> None:
            misuse(make_ints())

    message = assert_message(
        info.value,
        tag=tag,
        contains=[
            f"workflow '{MODULE}.control_flow'",
            what,
            "output of node 'n0-make_ints'",
            "list[int]",
        ],
    )
    # Each hint points to the construct that does what was meant.
    if tag in ("equals", "less"):
        assert 'conditional("name").if_(condition)' in message
    else:
        assert "map_task" in message
    if tag not in ("unpack", "loop", "equals", "less"):
        assert 'use `conditional("name").if_(' in message


def add_one(value: Any) -> None:
    _ = value + 1  # <- add


def format_it(value: Any) -> None:
    _ = f"{value}"  # <- format


def index(value: Any) -> None:
    _ = value[0]  # <- index


@pytest.mark.parametrize(
    ("misuse", "tag", "what"),
    [
        (add_one, "add", "`+`"),
        (format_it, "format", "format"),
        (index, "index", "index"),
    ],
)
def test_promise_needs_a_value(misuse: Callable[[Any], None], tag: str, what: str) -> None:
    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def needs_value() -> None:
            misuse(make_ints())

    assert_message(info.value, tag=tag, contains=[what, "do this inside a task"])


def test_reading_a_dataclass_field_of_a_promise() -> None:
    probes: list[bool] = []
    with pytest.raises(PromiseAttributeError) as info:

        @workflow
        def field_access() -> int:
            points = make_points()
            probes.append(hasattr(points, "xs"))
            return takes_strs(texts=points.xs)  # <- field

    assert_message(
        info.value,
        tag="field",
        contains=[
            f"workflow '{MODULE}.field_access'",
            "cannot read field 'xs'",
            "type Points",
            "pass the whole Points to a task and read `.xs` there",
        ],
    )
    assert isinstance(info.value, AttributeError) and isinstance(info.value, WorkflowCompileError)
    assert probes == [False]  # generic `hasattr` probing stays quiet


def test_unknown_attribute_of_a_promise() -> None:
    with pytest.raises(PromiseAttributeError) as info:

        @workflow
        def attribute() -> int:
            return make_int().real  # <- attribute

    assert_message(info.value, tag="attribute", contains=["no attribute 'real'", "type int"])


def test_a_sub_workflow_call_is_checked_like_a_task_call() -> None:
    @workflow
    def inner(n: int) -> int:
        return make_int()

    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def outer() -> int:
            return inner(n="three")  # <- nested-workflow

    assert_message(
        info.value,
        tag="nested-workflow",
        contains=[
            f"workflow '{MODULE}.outer'",
            f"parameter 'n' of sub-workflow '{MODULE}.inner'",
            "expects int, got constant str 'three'",
        ],
    )


def test_other_errors_in_the_body_get_a_note() -> None:
    with pytest.raises(KeyError) as info:

        @workflow
        def broken() -> int:
            return {}["missing"]

    assert any(f"compiling workflow '{MODULE}.broken'" in n for n in info.value.__notes__)


# ---------------------------------------------------------------- the workflow's return value


def test_returned_promise_of_wrong_type() -> None:
    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def returns_wrong() -> str:
            number = make_int()
            return number  # <- return-promise

    assert_message(
        info.value,
        tag="return-promise",
        contains=[
            f"workflow '{MODULE}.returns_wrong'",
            "return value expects str, got int",
            "output of node 'n0-make_int'",
        ],
    )


def test_returned_constant_of_wrong_type() -> None:
    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def returns_constant() -> int:
            return "seven"  # <- return-constant

    assert_message(
        info.value,
        tag="return-constant",
        contains=["return value expects int, got constant str 'seven'"],
    )


def test_returns_a_value_but_declares_none() -> None:
    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def declares_none() -> None:
            return make_int()  # <- return-none

    assert_message(
        info.value,
        tag="return-none",
        contains=["declares `-> None` but returns int"],
    )
    assert (info.value.expected, info.value.actual) == ("None", "int")


def test_returns_nothing_but_declares_a_type() -> None:
    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def forgets_return() -> int:  # <- forgets-return
            make_int()

    assert_message(
        info.value,
        tag="forgets-return",
        contains=["declares `-> int` but returns nothing (None)"],
    )


# ---------------------------------------------------------------- signatures


def test_task_parameter_without_annotation() -> None:
    with pytest.raises(TaskDefinitionError) as info:

        @task(retries=1)
        def unannotated(x, y: int) -> int:  # <- task-no-annotation
            return y

    assert_message(
        info.value,
        tag="task-no-annotation",
        contains=[
            f"task '{MODULE}.unannotated'",
            "parameter 'x' has no type annotation",
            "`x: int`",
        ],
    )
    assert info.value.parameter == "x"
    assert isinstance(info.value, TypeError)


def test_task_without_return_annotation() -> None:
    with pytest.raises(TaskDefinitionError) as info:

        @task
        def no_return(x: int):  # <- task-no-return
            return x

    assert_message(
        info.value,
        tag="task-no-return",
        contains=[f"task '{MODULE}.no_return'", "return value has no type annotation", "-> None"],
    )


@pytest.mark.parametrize(
    ("annotation", "shown"),
    [
        (tuple[int, int], "tuple[int, int]"),
        (set[list[int]], "set[list[int]]"),
        (int | dt.date, "int | date"),
        (list, "list"),
        (dict[float, str], "dict[float, str]"),
    ],
)
def test_task_with_unsupported_parameter_type(annotation: Any, shown: str) -> None:
    def unsupported(value):  # <- unsupported
        return 1

    unsupported.__annotations__ = {"value": annotation, "return": int}
    with pytest.raises(TaskDefinitionError) as info:
        task(unsupported)
    assert_message(
        info.value,
        tag="unsupported",
        contains=[
            f"task '{MODULE}.unsupported'",
            f"parameter 'value' has unsupported type {shown}",
            "supported are int, float, str, bool, bytes, datetime, timedelta",
        ],
    )
    assert info.value.actual == shown


def test_task_with_unsupported_return_type() -> None:
    with pytest.raises(TaskDefinitionError) as info:

        @task
        def pairs() -> tuple[int, ...]:  # <- pairs
            return (1, 2)

    assert_message(
        info.value,
        tag="pairs",
        contains=["the return type has unsupported type tuple[int, ...]", "NamedTuple"],
    )


def test_task_default_that_does_not_match_its_type() -> None:
    with pytest.raises(TaskDefinitionError) as info:

        @task
        def bad_default(lr: float = "high") -> float:  # <- bad-default
            return lr

    assert_message(
        info.value,
        tag="bad-default",
        contains=[
            "default 'high' of parameter 'lr' is not a valid float",
            "expected float, got str",
        ],
    )


def test_task_star_parameters_and_function_kinds() -> None:
    with pytest.raises(TaskDefinitionError, match=r"parameter '\*args' is not supported"):

        @task
        def star(*args: int) -> int:
            return 0

    with pytest.raises(TaskDefinitionError, match="positional-only"):

        @task
        def positional_only(x: int, /) -> int:
            return x

    with pytest.raises(TaskDefinitionError, match="async functions are not supported"):

        @task
        async def coroutine(x: int) -> int:
            return x

    with pytest.raises(TaskDefinitionError, match="generator functions are not supported"):

        @task
        def generator(n: int) -> list[int]:
            yield n

    with pytest.raises(TaskDefinitionError, match="cannot resolve its type annotations"):

        @task
        def forward(x: NotDefinedAnywhere) -> int:  # noqa: F821
            return 1

    with pytest.raises(TaskDefinitionError, match="not a lambda"):
        task(lambda: 1)
    with pytest.raises(DefinitionError, match="decorates a function defined with `def`, got 3"):
        task(3)
    with pytest.raises(DefinitionError, match="got <task"):
        task(make_int)


def test_workflow_parameter_without_annotation() -> None:
    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def wf_unannotated(n) -> int:  # <- wf-no-annotation
            return make_int()

    assert_message(
        info.value,
        tag="wf-no-annotation",
        contains=[f"workflow '{MODULE}.wf_unannotated'", "parameter 'n' has no type annotation"],
    )
    assert info.value.parameter == "n"


def test_workflow_default_of_wrong_type() -> None:
    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def wf_bad_default(n: int = 1.5) -> int:  # <- wf-default
            return n

    assert_message(
        info.value,
        tag="wf-default",
        contains=[f"workflow '{MODULE}.wf_bad_default'", "default 1.5 of parameter 'n'"],
    )


def test_workflow_decorator_forms() -> None:
    @workflow()
    def with_parentheses(n: int = 2) -> float:
        return takes_float(lr=n, steps=n)

    assert with_parentheses() == 4.0
    with pytest.raises(DefinitionError, match="@workflow decorates a function"):
        workflow("pipeline")


@pytest.mark.parametrize("cls", [WorkflowCompileError, TaskDefinitionError, PromiseAttributeError])
def test_error_classes_are_builtin_subclasses(cls: type[Exception]) -> None:
    assert issubclass(cls, FleetflowError) and issubclass(cls, TypeError)
