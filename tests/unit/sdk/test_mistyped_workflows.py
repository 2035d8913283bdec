"""A catalogue of mis-typed workflows: each fails at import with an error that says what to fix.

Every case is the source of a small module, the `PRELUDE` (types and well-typed tasks) followed
by the case's own code, written to a real file and imported, exactly as an engineer's pipeline
module would be. The line the error must blame ends with `# <-`. For each case the test checks:

- the error class, exactly, and that it is a `FleetflowError` and a `TypeError`/`ValueError`;
- the message names the workflow (`workflow '<module>.wf'`), the `file:line` of the marked line,
  the task (`task '<module>.<task>'`), the parameter (`parameter '<name>'`), and the expected and
  actual types; the error carries the same as attributes (`.workflow`, `.location`, `.task`,
  `.parameter`, `.expected`, `.actual`);
- any further fragments the case lists (a hint, the list of known parameters...).

`docs/sdk.md`'s error catalogue quotes these messages; `python <this file>` prints them all.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from fleetflow import (
    FleetflowError,
    PromiseAttributeError,
    TaskDefinitionError,
    WorkflowCompileError,
)
from fleetflow.errors import DefinitionError
from fleetflow.interface import _SUPPORTED as SUPPORTED

# Shared by every case: the types and the correctly typed tasks the mis-typed workflows call.
PRELUDE = """\
import datetime as dt
import enum
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

import pydantic

from fleetflow import Directory, File, conditional, map_task, task, workflow


@dataclass
class Points:
    xs: list[float]


@dataclass
class Labels:
    xs: list[float]  # the same fields as Points: still another type


class Color(enum.StrEnum):
    RED = "red"
    GREEN = "green"


class Size(enum.StrEnum):
    SMALL = "small"
    LARGE = "large"


class TrainConfig(pydantic.BaseModel):
    lr: float
    epochs: int


class EvalConfig(pydantic.BaseModel):
    lr: float
    epochs: int


class Trained(NamedTuple):
    model: str
    loss: float


@task
def make_int() -> int:
    return 1


@task
def make_bool() -> bool:
    return True


@task
def make_float() -> float:
    return 1.5


@task
def make_ints() -> list[int]:
    return [1, 2]


@task
def make_strs() -> list[str]:
    return ["a", "b"]


@task
def make_maybe_ints() -> list[Optional[int]]:
    return [1, None]


@task
def make_scores() -> dict[str, float]:
    return {"a": 0.5}


@task
def make_maybe() -> Optional[int]:
    return None


@task
def make_points() -> Points:
    return Points(xs=[1.0])


@task
def make_train_config() -> TrainConfig:
    return TrainConfig(lr=0.1, epochs=3)


@task
def make_color() -> Color:
    return Color.RED


@task
def make_time() -> dt.datetime:
    return dt.datetime(2024, 5, 1)


@task
def make_bytes() -> bytes:
    return b"raw"


@task
def make_file() -> File:
    return File(__file__)


@task
def train() -> Trained:
    return Trained(model="m", loss=0.1)


@task
def takes_str(text: str) -> str:
    return text


@task
def takes_int(n: int) -> int:
    return n


@task
def takes_strs(texts: list[str]) -> int:
    return len(texts)


@task
def takes_counts(counts: dict[str, int]) -> int:
    return len(counts)


@task
def takes_labels(labels: Labels) -> int:
    return len(labels.xs)


@task
def takes_eval_config(config: EvalConfig) -> float:
    return config.lr


@task
def takes_size(size: Size) -> str:
    return size.value


@task
def takes_delay(delay: dt.timedelta) -> float:
    return delay.total_seconds()


@task
def takes_directory(data: Directory) -> int:
    return len(data.files())


@task
def takes_float(lr: float, steps: int = 10) -> float:
    return lr * steps


"""


@dataclass(frozen=True)
class Case:
    """One mis-typed workflow and what its error must say.

    `task`, `parameter`: the short names the message (and the error's attributes) must carry;
    None where they do not apply. `expected`/`actual`: the error's attributes; the message must
    show both types (for a promise, `actual` reads `promise of <type>` and the message `<type>`).
    `workflow=False` for a task whose own definition is wrong: there is no workflow to name yet.
    """

    id: str
    what: str
    source: str
    error: type[DefinitionError]
    task: str | None
    parameter: str | None
    expected: str | None
    actual: str | None
    says: tuple[str, ...] = ()
    workflow: bool = True


_NO_BRANCHING = "to branch on a value, use `conditional("
_IN_A_TASK = "the value only exists when the workflow runs: do this inside a task"


def promise_misuse(case_id: str, what: str, line: str, says: str, hint: str) -> Case:
    """A case where the body does something with a `list[int]` promise that needs its value."""
    return Case(
        id=case_id,
        what=what,
        source=f"""
        @workflow
        def wf() -> None:
            numbers = make_ints()
            {line}  # <-
        """,
        error=WorkflowCompileError,
        task="make_ints",
        parameter=None,
        expected=None,
        actual="promise of list[int]",
        says=(says, "output of node 'n0-make_ints'", hint),
    )


CASES: list[Case] = [
    # ------------------------------------------------------------ a promise of the wrong type
    Case(
        id="int-into-str",
        what="an int output bound to a str parameter",
        source="""
        @workflow
        def wf() -> str:
            number = make_int()
            return takes_str(text=number)  # <-
        """,
        error=WorkflowCompileError,
        task="takes_str",
        parameter="text",
        expected="str",
        actual="int",
        says=("expects str, got int (output of node 'n0-make_int'",),
    ),
    Case(
        id="list-int-into-list-str",
        what="list[int] into list[str]: element types must match",
        source="""
        @workflow
        def wf() -> int:
            return takes_strs(texts=make_ints())  # <-
        """,
        error=WorkflowCompileError,
        task="takes_strs",
        parameter="texts",
        expected="list[str]",
        actual="list[int]",
    ),
    Case(
        id="dict-float-into-dict-int",
        what="dict[str, float] into dict[str, int]: a float never narrows to an int, at any depth",
        source="""
        @workflow
        def wf() -> int:
            return takes_counts(counts=make_scores())  # <-
        """,
        error=WorkflowCompileError,
        task="takes_counts",
        parameter="counts",
        expected="dict[str, int]",
        actual="dict[str, float]",
    ),
    Case(
        id="float-into-int",
        what="a float output into an int parameter",
        source="""
        @workflow
        def wf() -> int:
            return takes_int(n=make_float())  # <-
        """,
        error=WorkflowCompileError,
        task="takes_int",
        parameter="n",
        expected="int",
        actual="float",
    ),
    Case(
        id="bool-into-int",
        what="a bool output into an int parameter: bool is not an int here",
        source="""
        @workflow
        def wf() -> int:
            return takes_int(n=make_bool())  # <-
        """,
        error=WorkflowCompileError,
        task="takes_int",
        parameter="n",
        expected="int",
        actual="bool",
    ),
    Case(
        id="dataclass-same-fields",
        what="dataclass Points into dataclass Labels with the same fields: structs match by name",
        source="""
        @workflow
        def wf() -> int:
            points = make_points()
            return takes_labels(labels=points)  # <-
        """,
        error=WorkflowCompileError,
        task="takes_labels",
        parameter="labels",
        expected="Labels",
        actual="Points",
    ),
    Case(
        id="dataclass-redefined",
        what="a dataclass defined twice under one name with different fields",
        source="""
        @task
        def takes_points(points: Points) -> int:
            return len(points.xs)


        @dataclass
        class Points:  # noqa: F811
            xs: list[float]
            ys: list[float]


        @task
        def make_new_points() -> Points:
            return Points(xs=[], ys=[])


        @workflow
        def wf() -> int:
            return takes_points(points=make_new_points())  # <-
        """,
        error=WorkflowCompileError,
        task="takes_points",
        parameter="points",
        expected="Points",
        actual="Points",
        says=("two different definitions of", "import the type from one module"),
    ),
    Case(
        id="optional-into-required",
        what="Optional[int] into int: the None must be handled first",
        source="""
        @workflow
        def wf() -> int:
            return takes_int(n=make_maybe())  # <-
        """,
        error=WorkflowCompileError,
        task="takes_int",
        parameter="n",
        expected="int",
        actual="Optional[int]",
        says=("hint: the value may be None", "declare the receiving type Optional[int]"),
    ),
    Case(
        id="list-of-optional-into-list",
        what="list[Optional[int]] into list[int]",
        source="""
        @task
        def total(numbers: list[int]) -> int:
            return sum(numbers)


        @workflow
        def wf() -> int:
            return total(numbers=make_maybe_ints())  # <-
        """,
        error=WorkflowCompileError,
        task="total",
        parameter="numbers",
        expected="list[int]",
        actual="list[Optional[int]]",
        says=("hint: in the list items: the value may be None",),
    ),
    Case(
        id="pydantic-model-mismatch",
        what="pydantic model TrainConfig into EvalConfig (same fields)",
        source="""
        @workflow
        def wf() -> float:
            return takes_eval_config(config=make_train_config())  # <-
        """,
        error=WorkflowCompileError,
        task="takes_eval_config",
        parameter="config",
        expected="EvalConfig",
        actual="TrainConfig",
    ),
    Case(
        id="enum-mismatch",
        what="enum Color into enum Size",
        source="""
        @workflow
        def wf() -> str:
            return takes_size(size=make_color())  # <-
        """,
        error=WorkflowCompileError,
        task="takes_size",
        parameter="size",
        expected="Size",
        actual="Color",
    ),
    Case(
        id="enum-into-str",
        what="a str enum into a str parameter: an enum is not a str here",
        source="""
        @workflow
        def wf() -> str:
            return takes_str(text=make_color())  # <-
        """,
        error=WorkflowCompileError,
        task="takes_str",
        parameter="text",
        expected="str",
        actual="Color",
    ),
    Case(
        id="datetime-into-timedelta",
        what="a datetime into a timedelta parameter",
        source="""
        @workflow
        def wf() -> float:
            return takes_delay(delay=make_time())  # <-
        """,
        error=WorkflowCompileError,
        task="takes_delay",
        parameter="delay",
        expected="timedelta",
        actual="datetime",
    ),
    Case(
        id="bytes-into-str",
        what="bytes into a str parameter",
        source="""
        @workflow
        def wf() -> str:
            return takes_str(text=make_bytes())  # <-
        """,
        error=WorkflowCompileError,
        task="takes_str",
        parameter="text",
        expected="str",
        actual="bytes",
    ),
    Case(
        id="file-into-directory",
        what="a File into a Directory parameter",
        source="""
        @workflow
        def wf() -> int:
            return takes_directory(data=make_file())  # <-
        """,
        error=WorkflowCompileError,
        task="takes_directory",
        parameter="data",
        expected="Directory",
        actual="File",
    ),
    Case(
        id="workflow-input-wrong-type",
        what="a workflow input of the wrong type passed to a task",
        source="""
        @workflow
        def wf(count: int = 3) -> str:
            return takes_str(text=count)  # <-
        """,
        error=WorkflowCompileError,
        task="takes_str",
        parameter="text",
        expected="str",
        actual="int",
        says=("(workflow input 'count')",),
    ),
    Case(
        id="optional-workflow-input",
        what="an Optional workflow input into a required parameter",
        source="""
        @workflow
        def wf(limit: Optional[int] = None) -> int:
            return takes_int(n=limit)  # <-
        """,
        error=WorkflowCompileError,
        task="takes_int",
        parameter="n",
        expected="int",
        actual="Optional[int]",
        says=("(workflow input 'limit')", "hint: the value may be None"),
    ),
    Case(
        id="list-into-element",
        what="a list[int] into an int parameter: one call takes one value",
        source="""
        @workflow
        def wf() -> int:
            return takes_int(n=make_ints())  # <-
        """,
        error=WorkflowCompileError,
        task="takes_int",
        parameter="n",
        expected="int",
        actual="list[int]",
        says=("hint: to run the task once per element of the list[int], use `map_task(",),
    ),
    # ------------------------------------------------------------ NamedTuple outputs
    Case(
        id="namedtuple-unknown-field",
        what="reading an output a NamedTuple return type does not declare",
        source="""
        @workflow
        def wf() -> float:
            result = train()
            return takes_float(lr=result.accuracy)  # <-
        """,
        error=PromiseAttributeError,
        task="train",
        parameter=None,
        expected=None,
        actual="Trained",
        says=("Trained has no output 'accuracy'", "hint: its outputs are: model, loss"),
    ),
    Case(
        id="namedtuple-whole-into-parameter",
        what="all the outputs of a NamedTuple task bound to one parameter",
        source="""
        @workflow
        def wf() -> float:
            return takes_float(lr=train())  # <-
        """,
        error=WorkflowCompileError,
        task="takes_float",
        parameter="lr",
        expected="float",
        actual="Trained",
        says=("got all the outputs of node 'n0-train'", "pass one output, e.g. `res.model`"),
    ),
    Case(
        id="namedtuple-return-wrong-names",
        what="a workflow returning a NamedTuple whose outputs are named differently",
        source="""
        class Result(NamedTuple):
            model: str
            error: float


        @workflow
        def wf() -> Result:
            return train()  # <-
        """,
        error=WorkflowCompileError,
        task=None,
        parameter=None,
        expected="Result(model, error)",
        actual="Trained(model, loss)",
        says=("outputs are matched by name", "return Result(model=..., error=...)"),
    ),
    # ------------------------------------------------------------ the shape of a call
    Case(
        id="unknown-parameter",
        what="a keyword the task does not declare",
        source="""
        @workflow
        def wf() -> float:
            return takes_float(lr=0.1, step=3)  # <-
        """,
        error=WorkflowCompileError,
        task="takes_float",
        parameter="step",
        expected=None,
        actual=None,
        says=("has no parameter 'step' (got int 3)", "its parameters are: lr, steps"),
    ),
    Case(
        id="missing-parameter",
        what="a required parameter not given",
        source="""
        @workflow
        def wf() -> float:
            return takes_float(steps=3)  # <-
        """,
        error=WorkflowCompileError,
        task="takes_float",
        parameter="lr",
        expected="float",
        actual="nothing",
        says=("is missing required parameter 'lr'",),
    ),
    Case(
        id="positional-argument",
        what="a task called with a positional argument",
        source="""
        @workflow
        def wf() -> float:
            return takes_float(0.1)  # <-
        """,
        error=WorkflowCompileError,
        task="takes_float",
        parameter="lr",
        expected="keyword arguments",
        actual="positional arguments",
        says=("1 positional argument(s)", "hint: write takes_float(lr=...)"),
    ),
    # ------------------------------------------------------------ sub-workflows
    Case(
        id="subworkflow-wrong-type",
        what="a sub-workflow's input bound to a value of the wrong type",
        source="""
        @workflow
        def inner(text: str, n: int = 2) -> str:
            return takes_str(text=text)


        @workflow
        def wf() -> str:
            return inner(text=make_int())  # <-
        """,
        error=WorkflowCompileError,
        task=None,
        parameter="text",
        expected="str",
        actual="int",
        says=("parameter 'text' of sub-workflow", ".inner'", "(output of node 'n0-make_int'"),
    ),
    Case(
        id="subworkflow-missing-input",
        what="a sub-workflow called without a required input",
        source="""
        @workflow
        def inner(text: str, n: int = 2) -> str:
            return takes_str(text=text)


        @workflow
        def wf() -> str:
            return inner(n=3)  # <-
        """,
        error=WorkflowCompileError,
        task=None,
        parameter="text",
        expected="str",
        actual="nothing",
        says=("is missing required parameter 'text'",),
    ),
    Case(
        id="subworkflow-unknown-input",
        what="a sub-workflow called with an input it does not have",
        source="""
        @workflow
        def inner(text: str, n: int = 2) -> str:
            return takes_str(text=text)


        @workflow
        def wf() -> str:
            return inner(text="a", steps=3)  # <-
        """,
        error=WorkflowCompileError,
        task=None,
        parameter="steps",
        expected=None,
        actual=None,
        says=("has no parameter 'steps'", "its parameters are: text, n"),
    ),
    Case(
        id="subworkflow-positional",
        what="a sub-workflow called with a positional argument",
        source="""
        @workflow
        def inner(text: str, n: int = 2) -> str:
            return takes_str(text=text)


        @workflow
        def wf() -> str:
            return inner("a")  # <-
        """,
        error=WorkflowCompileError,
        task=None,
        parameter="text",
        expected="keyword arguments",
        actual="positional arguments",
        says=("call workflows with keyword arguments", "hint: write inner(text=...)"),
    ),
    Case(
        id="subworkflow-output-type",
        what="a sub-workflow's output bound to a parameter of another type",
        source="""
        @workflow
        def inner() -> int:
            return make_int()


        @workflow
        def wf() -> str:
            return takes_str(text=inner())  # <-
        """,
        error=WorkflowCompileError,
        task="takes_str",
        parameter="text",
        expected="str",
        actual="int",
        says=("(output of sub-workflow call 'n0-inner'",),
    ),
    Case(
        id="map-of-subworkflow",
        what="map_task of a workflow",
        source="""
        @workflow
        def inner(n: int) -> int:
            return takes_int(n=n)


        @workflow
        def wf() -> list[int]:
            return map_task(inner)(n=make_ints())  # <-
        """,
        error=WorkflowCompileError,
        task=None,
        parameter=None,
        expected="a @task",
        actual="a workflow",
        says=("map_task takes a @task, got a workflow", "mapping a sub-workflow is not supported"),
    ),
    # ------------------------------------------------------------ map_task
    Case(
        id="map-without-list",
        what="map_task with no list argument to map over",
        source="""
        @workflow
        def wf() -> list[int]:
            return map_task(takes_int)(n=make_int())  # <-
        """,
        error=WorkflowCompileError,
        task="takes_int",
        parameter=None,
        expected="a list argument",
        actual="no list argument",
        says=("has no argument to map over", "(its parameters: n: int)", "takes_int(...)"),
    ),
    Case(
        id="map-element-mismatch",
        what="map_task over a list whose elements are not the parameter's type",
        source="""
        @workflow
        def wf() -> list[int]:
            return map_task(takes_int)(n=make_strs())  # <-
        """,
        error=WorkflowCompileError,
        task="takes_int",
        parameter="n",
        expected="int, or list[int] to map over",
        actual="list[str]",
        says=("(output of node 'n0-make_strs'",),
    ),
    Case(
        id="map-constant-element",
        what="map_task over a constant list with an element of the wrong type",
        source="""
        @workflow
        def wf() -> list[int]:
            return map_task(takes_int)(n=[1, "two"])  # <-
        """,
        error=WorkflowCompileError,
        task="takes_int",
        parameter="n",
        expected="int, or list[int] to map over",
        actual="list",
        says=("at [1]: expected int, got str 'two'",),
    ),
    Case(
        id="map-positional",
        what="map_task called with a positional argument",
        source="""
        @workflow
        def wf() -> list[int]:
            return map_task(takes_int)(make_ints())  # <-
        """,
        error=WorkflowCompileError,
        task="takes_int",
        parameter="n",
        expected="keyword arguments",
        actual="positional arguments",
        says=("map_task of task", "hint: write map_task(takes_int)(n=...)"),
    ),
    Case(
        id="map-not-a-task",
        what="map_task of a plain function",
        source="""
        def double(n: int) -> int:
            return 2 * n


        @workflow
        def wf() -> list[int]:
            return map_task(double)(n=make_ints())  # <-
        """,
        error=WorkflowCompileError,
        task=None,
        parameter=None,
        expected="a @task",
        actual="function",
        says=("map_task takes a @task", "hint: decorate the function with @task"),
    ),
    Case(
        id="map-output-into-element",
        what="the list a map_task returns bound to a parameter that takes one element",
        source="""
        @workflow
        def wf() -> int:
            doubled = map_task(takes_int)(n=make_ints())
            return takes_int(n=doubled)  # <-
        """,
        error=WorkflowCompileError,
        task="takes_int",
        parameter="n",
        expected="int",
        actual="list[int]",
        says=("(output of map node 'n1-takes_int'",),
    ),
    Case(
        id="partial-map-into-list",
        what="a map_task with a min_success_ratio yields list[Optional[T]]: its failed elements "
        "are None, which a list[T] parameter does not accept",
        source="""
        @task
        def total(numbers: list[int]) -> int:
            return sum(numbers)


        @workflow
        def wf() -> int:
            doubled = map_task(takes_int, min_success_ratio=0.9)(n=make_ints())
            return total(numbers=doubled)  # <-
        """,
        error=WorkflowCompileError,
        task="total",
        parameter="numbers",
        expected="list[int]",
        actual="list[Optional[int]]",
        says=(
            "min_success_ratio=0.9: a failed element is None",
            "hint: in the list items: the value may be None",
        ),
    ),
    Case(
        id="map-ratio-out-of-range",
        what="a min_success_ratio that is not a number in (0, 1]",
        source="""
        @workflow
        def wf() -> list[int]:
            return map_task(takes_int, min_success_ratio=80)(n=make_ints())  # <-
        """,
        error=WorkflowCompileError,
        task="takes_int",
        parameter=None,
        expected="a number in (0, 1]",
        actual="80",
        says=("the fraction of elements that must succeed", "hint: min_success_ratio=0.8"),
    ),
    # ------------------------------------------------------------ constants
    Case(
        id="constant-wrong-type",
        what="a constant of the wrong type",
        source="""
        @workflow
        def wf() -> float:
            return takes_float(lr="fast")  # <-
        """,
        error=WorkflowCompileError,
        task="takes_float",
        parameter="lr",
        expected="float",
        actual="str",
        says=("got constant str 'fast'",),
    ),
    Case(
        id="constant-none",
        what="None for a parameter that is not Optional",
        source="""
        @workflow
        def wf() -> int:
            return takes_int(n=None)  # <-
        """,
        error=WorkflowCompileError,
        task="takes_int",
        parameter="n",
        expected="int",
        actual="NoneType",
        says=("got constant NoneType None",),
    ),
    Case(
        id="constant-wrong-enum",
        what="a member of another enum as a constant",
        source="""
        @workflow
        def wf() -> str:
            return takes_size(size=Color.RED)  # <-
        """,
        error=WorkflowCompileError,
        task="takes_size",
        parameter="size",
        expected="Size",
        actual="Color",
    ),
    Case(
        id="constant-list-element",
        what="a constant list with one element of the wrong type",
        source="""
        @workflow
        def wf() -> int:
            return takes_strs(texts=["a", 2])  # <-
        """,
        error=WorkflowCompileError,
        task="takes_strs",
        parameter="texts",
        expected="list[str]",
        actual="list",
        says=("at [1]: expected str, got int 2",),
    ),
    # ------------------------------------------------------------ lists and dicts of promises
    Case(
        id="list-item-promise",
        what="a list built from promises with one item of the wrong type",
        source="""
        @workflow
        def wf() -> int:
            return takes_strs(texts=["a", make_int()])  # <-
        """,
        error=WorkflowCompileError,
        task="takes_strs",
        parameter="texts",
        expected="str",
        actual="int",
        says=("expects list[str]; its item [1] expects str, got int (output of node",),
    ),
    Case(
        id="list-item-constant",
        what="a list built from promises with a constant item of the wrong type",
        source="""
        @workflow
        def wf() -> int:
            return takes_strs(texts=[takes_str(text="a"), 2])  # <-
        """,
        error=WorkflowCompileError,
        task="takes_strs",
        parameter="texts",
        expected="str",
        actual="int",
        says=("its item [1] expects str, got constant int 2",),
    ),
    Case(
        id="dict-item-promise",
        what="a dict built from promises with one value of the wrong type",
        source="""
        @workflow
        def wf() -> int:
            return takes_counts(counts={"a": make_int(), "b": make_float()})  # <-
        """,
        error=WorkflowCompileError,
        task="takes_counts",
        parameter="counts",
        expected="int",
        actual="float",
        says=("expects dict[str, int]; its item ['b'] expects int, got float",),
    ),
    Case(
        id="returned-list-item",
        what="a returned list built from promises with one item of the wrong type",
        source="""
        @workflow
        def wf() -> list[str]:
            return [takes_str(text="a"), make_int()]  # <-
        """,
        error=WorkflowCompileError,
        task=None,
        parameter=None,
        expected="str",
        actual="int",
        says=("return value expects list[str]; its item [1] expects str, got int",),
    ),
    Case(
        id="promise-inside-dataclass",
        what="a promise inside a dataclass constant: only lists and dicts are built in the body",
        source="""
        @workflow
        def wf() -> int:
            return takes_labels(labels=Labels(xs=[make_float()]))  # <-
        """,
        error=WorkflowCompileError,
        task="takes_labels",
        parameter="labels",
        expected="Labels",
        actual="Labels",
        says=("got a Labels with a promise inside", "build the Labels inside a task"),
    ),
    # ------------------------------------------------------------ map_task of functools.partial
    Case(
        id="partial-not-a-task",
        what="map_task of a functools.partial of a plain function",
        source="""
        import functools


        def scale(n: int, k: int) -> int:
            return n * k


        @workflow
        def wf() -> list[int]:
            return map_task(functools.partial(scale, k=2))(n=make_ints())  # <-
        """,
        error=WorkflowCompileError,
        task=None,
        parameter=None,
        expected="a @task",
        actual="function",
        says=("a functools.partial of <function scale", "hint: decorate the function with @task"),
    ),
    Case(
        id="partial-positional",
        what="map_task of a functools.partial with a positional argument",
        source="""
        import functools


        @workflow
        def wf() -> list[float]:
            return map_task(functools.partial(takes_float, 0.1))(steps=make_ints())  # <-
        """,
        error=WorkflowCompileError,
        task="takes_float",
        parameter="lr",
        expected="keyword arguments",
        actual="positional arguments",
        says=(
            "binds 1 positional argument(s)",
            "hint: write functools.partial(takes_float, lr=...)",
        ),
    ),
    Case(
        id="partial-bound-twice",
        what="a parameter bound by functools.partial and again in the map_task call",
        source="""
        import functools


        @workflow
        def wf() -> list[float]:
            scaled = map_task(functools.partial(takes_float, lr=0.1))
            return scaled(lr=make_float(), steps=make_ints())  # <-
        """,
        error=WorkflowCompileError,
        task="takes_float",
        parameter="lr",
        expected=None,
        actual=None,
        says=("is bound twice: by functools.partial and in the call",),
    ),
    Case(
        id="partial-binds-everything",
        what="a functools.partial that binds every parameter: nothing is left to map over",
        source="""
        import functools


        @workflow
        def wf() -> list[float]:
            return map_task(functools.partial(takes_float, lr=0.1, steps=3))()  # <-
        """,
        error=WorkflowCompileError,
        task="takes_float",
        parameter=None,
        expected="a list argument",
        actual="no list argument",
        says=("binds every parameter of task", "nothing left to map over"),
    ),
    Case(
        id="partial-bound-list",
        what="a list bound by functools.partial to a parameter that takes one element",
        source="""
        import functools


        @workflow
        def wf() -> list[float]:
            return map_task(functools.partial(takes_float, steps=make_ints()))(lr=[0.1])  # <-
        """,
        error=WorkflowCompileError,
        task="takes_float",
        parameter="steps",
        expected="int",
        actual="list[int]",
        says=("(bound by functools.partial) expects int", "passed whole to every element"),
    ),
    # ------------------------------------------------------------ Python on a promise
    promise_misuse("if", "a promise in `if`", "if numbers: pass", "no truth value", _NO_BRANCHING),
    promise_misuse(
        "for", "a promise in `for`", "for n in numbers: pass", "cannot iterate", "map_task"
    ),
    promise_misuse("bool", "bool() of a promise", "bool(numbers)", "no truth value", "map_task"),
    promise_misuse("len", "len() of a promise", "len(numbers)", "len() of a promise", "map_task"),
    promise_misuse(
        "comparison", "a promise in a comparison", "numbers < [3]", "compare a promise (<)", ""
    ),
    promise_misuse(
        "equality", "a promise compared with ==", "numbers == [3]", "compare a promise (==)", ""
    ),
    promise_misuse("in", "`in` on a promise", "3 in numbers", "`in` on a promise", ""),
    promise_misuse(
        "in-a-set",
        "a promise looked up in a set (by hash, so it would quietly be False)",
        "numbers in {1, 2}",
        "a promise cannot be hashed",
        _NO_BRANCHING,
    ),
    promise_misuse(
        "arithmetic", "arithmetic on a promise", "numbers + [3]", "apply `+`", _IN_A_TASK
    ),
    # ------------------------------------------------------------ conditionals
    Case(
        id="if-on-a-comparison",
        what="a comparison of promises in a Python `if`",
        source="""
        @workflow
        def wf() -> None:
            if make_int() > 3:  # <-
                pass
        """,
        error=WorkflowCompileError,
        task="make_int",
        parameter=None,
        expected=None,
        actual="condition on promises",
        says=("no truth value", "conditional(", ".if_(condition)"),
    ),
    Case(
        id="and-of-comparisons",
        what="`and` between two conditions (instead of `&`)",
        source="""
        @workflow
        def wf(n: int) -> int:
            return (
                conditional("c")
                .if_(n > 3 and n < 10)  # <-
                .then(takes_int(n=n))
                .else_()
                .then(takes_int(n=0))
            )
        """,
        error=WorkflowCompileError,
        task=None,
        parameter=None,
        expected=None,
        actual="condition on promises",
        says=("no truth value", "combine conditions with `&` and `|`"),
    ),
    Case(
        id="compare-str-with-int",
        what="a str promise compared with an int",
        source="""
        @workflow
        def wf() -> None:
            _ = takes_str(text="a") < 3  # <-
        """,
        error=WorkflowCompileError,
        task="takes_str",
        parameter=None,
        expected=None,
        actual="promise of str",
        says=("cannot compare (<) with constant 3", "cannot compare str with int"),
    ),
    Case(
        id="is-true-of-int",
        what="`is_true()` of a promise that is not a bool",
        source="""
        @workflow
        def wf() -> None:
            _ = make_int().is_true()  # <-
        """,
        error=WorkflowCompileError,
        task="make_int",
        parameter=None,
        expected=None,
        actual="promise of int",
        says=("is_true() needs a promise of bool",),
    ),
    Case(
        id="then-missing",
        what="`.elif_` right after `.if_`, without its `.then`",
        source="""
        @workflow
        def wf(n: int) -> None:
            conditional("c").if_(n > 3).elif_(n < 0)  # <-
        """,
        error=WorkflowCompileError,
        task=None,
        parameter=None,
        expected=None,
        actual=None,
        says=("before the `.then(...)` (or `.fail(...)`) of its case 1", "conditional 'c'"),
    ),
    Case(
        id="elif-after-else",
        what="`.elif_` after `.else_()`",
        source="""
        @workflow
        def wf(n: int) -> None:
            conditional("c").if_(n > 3).then(takes_int(n=n)).else_().elif_(n < 0)  # <-
        """,
        error=WorkflowCompileError,
        task=None,
        parameter=None,
        expected=None,
        actual=None,
        says=("`.elif_` of conditional 'c'", "after its `.else_()`"),
    ),
    Case(
        id="conditional-not-finished",
        what="a conditional without its `.else_()`",
        source="""
        @workflow
        def wf(n: int) -> None:
            conditional("c").if_(n > 3).then(takes_int(n=n))  # <-
        """,
        error=WorkflowCompileError,
        task=None,
        parameter=None,
        expected=None,
        actual=None,
        says=("conditional 'c'", "is not finished", ".else_().then(...)"),
    ),
    Case(
        id="branch-output-outside-its-branch",
        what="the output of a branch's task used outside the branch",
        source="""
        @workflow
        def wf(n: int) -> int:
            case = conditional("c").if_(n > 3)
            inside = takes_int(n=n)
            case.then(inside).else_().then(takes_int(n=0))
            return takes_int(n=inside)  # <-
        """,
        error=WorkflowCompileError,
        task="takes_int",
        parameter="n",
        expected=None,
        actual=None,
        says=("exists only in the if_ branch (case 1) of conditional 'c'", "outside that branch"),
    ),
    Case(
        id="branches-of-different-types",
        what="branches that return different types",
        source="""
        @workflow
        def wf(n: int) -> None:
            conditional("c").if_(n > 3).then(takes_int(n=n)).else_().then(takes_str(text="a"))  # <-
        """,
        error=WorkflowCompileError,
        task=None,
        parameter=None,
        expected=None,
        actual=None,
        says=("return different types (case 1: int, case 2: str)",),
    ),
    promise_misuse("f-string", "a promise in an f-string", 'f"{numbers}"', "format", _IN_A_TASK),
    promise_misuse("index", "indexing a promise", "numbers[0]", "cannot index", _IN_A_TASK),
    Case(
        id="attribute-of-scalar",
        what="attribute access on a promise that is not a struct",
        source="""
        @workflow
        def wf() -> int:
            return make_int().real  # <-
        """,
        error=PromiseAttributeError,
        task="make_int",
        parameter=None,
        expected=None,
        actual="promise of int",
        says=("a promise has no attribute 'real'", _IN_A_TASK),
    ),
    Case(
        id="field-of-struct",
        what="reading a dataclass field of a promise in the body",
        source="""
        @workflow
        def wf() -> int:
            points = make_points()
            return takes_strs(texts=points.xs)  # <-
        """,
        error=PromiseAttributeError,
        task="make_points",
        parameter=None,
        expected=None,
        actual="promise of Points",
        says=("cannot read field 'xs'", "pass the whole Points to a task and read `.xs` there"),
    ),
    # ------------------------------------------------------------ the workflow's return value
    Case(
        id="return-wrong-type",
        what="a workflow returning a promise of another type than it declares",
        source="""
        @workflow
        def wf() -> str:
            number = make_int()
            return number  # <-
        """,
        error=WorkflowCompileError,
        task=None,
        parameter=None,
        expected="str",
        actual="int",
        says=("return value expects str, got int (output of node 'n0-make_int'",),
    ),
    Case(
        id="return-promise-declared-none",
        what="a workflow declared `-> None` that returns a promise",
        source="""
        @workflow
        def wf() -> None:
            return make_int()  # <-
        """,
        error=WorkflowCompileError,
        task=None,
        parameter=None,
        expected="None",
        actual="int",
        says=("declares `-> None` but returns int (output of node 'n0-make_int'",),
    ),
    Case(
        id="return-nothing-declared-int",
        what="a workflow declared `-> int` that returns nothing",
        source="""
        @workflow
        def wf() -> int:  # <-
            make_int()
        """,
        error=WorkflowCompileError,
        task=None,
        parameter=None,
        expected="int",
        actual="None",
        says=("declares `-> int` but returns nothing (None)",),
    ),
    # ------------------------------------------------------------ signatures
    Case(
        id="task-parameter-unannotated",
        what="a task parameter without an annotation",
        source="""
        @task
        def scale(x, factor: float) -> float:  # <-
            return x * factor
        """,
        error=TaskDefinitionError,
        task="scale",
        parameter="x",
        expected="an annotation",
        actual="none",
        says=("parameter 'x' has no type annotation", "`x: int`"),
        workflow=False,
    ),
    Case(
        id="task-return-unannotated",
        what="a task without a return annotation",
        source="""
        @task
        def scale(x: float, factor: float):  # <-
            return x * factor
        """,
        error=TaskDefinitionError,
        task="scale",
        parameter=None,
        expected="an annotation",
        actual="none",
        says=("the return value has no type annotation", "`-> None` if it returns nothing"),
        workflow=False,
    ),
    Case(
        id="workflow-input-unannotated",
        what="a workflow input without an annotation",
        source="""
        @workflow
        def wf(n) -> int:  # <-
            return takes_int(n=n)
        """,
        error=WorkflowCompileError,
        task=None,
        parameter="n",
        expected="an annotation",
        actual="none",
        says=("parameter 'n' has no type annotation",),
    ),
    Case(
        id="unsupported-set",
        what="a set of lists",
        source="""
        @task
        def unique(groups: set[list[str]]) -> int:  # <-
            return len(groups)
        """,
        error=TaskDefinitionError,
        task="unique",
        parameter="groups",
        expected=SUPPORTED,
        actual="set[list[str]]",
        says=("set items must be scalars", "use list[T]"),
        workflow=False,
    ),
    Case(
        id="unsupported-tuple",
        what="a tuple parameter",
        source="""
        @task
        def area(shape: tuple[int, int]) -> int:  # <-
            return shape[0] * shape[1]
        """,
        error=TaskDefinitionError,
        task="area",
        parameter="shape",
        expected=SUPPORTED,
        actual="tuple[int, int]",
        says=("return a NamedTuple (one output per field)", "for a sequence use list[T]"),
        workflow=False,
    ),
    Case(
        id="unsupported-any",
        what="an Any parameter",
        source="""
        @task
        def anything(value: Any) -> int:  # <-
            return 1
        """,
        error=TaskDefinitionError,
        task="anything",
        parameter="value",
        expected=SUPPORTED,
        actual="Any",
        says=("declare the concrete type",),
        workflow=False,
    ),
    Case(
        id="unsupported-union-variant",
        what="a union with a variant of an unsupported type",
        source="""
        @task
        def parse(value: int | dt.date) -> int:  # <-
            return 0
        """,
        error=TaskDefinitionError,
        task="parse",
        parameter="value",
        expected=SUPPORTED,
        actual="int | date",
        says=("date is not supported; use datetime",),
        workflow=False,
    ),
    Case(
        id="union-ambiguous-variants",
        what="a union of two types that read alike",
        source="""
        class Other:
            @dataclass
            class Points:
                ys: list[float]


        @task
        def plot(points: Points | Other.Points) -> int:  # <-
            return 0
        """,
        error=TaskDefinitionError,
        task="plot",
        parameter="points",
        expected=SUPPORTED,
        actual="Points | Points",
        says=("is ambiguous: two variants read Points", "rename one"),
        workflow=False,
    ),
    Case(
        id="plain-value-into-ambiguous-union",
        what="Points into Points | Labels: the plain value does not say which",
        source="""
        @task
        def draw(shape: Points | Labels) -> int:
            return 0


        @workflow
        def wf() -> int:
            return draw(shape=make_points())  # <-
        """,
        error=WorkflowCompileError,
        task="draw",
        parameter="shape",
        expected="Labels | Points",
        actual="Points",
        says=("does not say which variant of Labels | Points", "return type Labels | Points"),
    ),
    Case(
        id="union-into-variant",
        what="int | str into int: each variant must be handled",
        source="""
        @task
        def either() -> int | str:
            return 1


        @workflow
        def wf() -> int:
            return takes_int(n=either())  # <-
        """,
        error=WorkflowCompileError,
        task="takes_int",
        parameter="n",
        expected="int",
        actual="int | str",
        says=("the value may be any of int | str",),
    ),
    Case(
        id="unsupported-dict-key",
        what="a dict whose keys are not str, int or an enum",
        source="""
        @task
        def lookup(table: dict[float, str]) -> int:  # <-
            return len(table)
        """,
        error=TaskDefinitionError,
        task="lookup",
        parameter="table",
        expected=SUPPORTED,
        actual="dict[float, str]",
        says=("dict keys must be str, int or an enum of str values",),
        workflow=False,
    ),
    Case(
        id="unsupported-int-enum",
        what="an enum with non-string values",
        source="""
        class Level(enum.Enum):
            LOW = 1
            HIGH = 2


        @task
        def level() -> Level:  # <-
            return Level.LOW
        """,
        error=TaskDefinitionError,
        task="level",
        parameter=None,
        expected=SUPPORTED,
        actual="Level",
        says=("the return type has unsupported type Level", "non-string values (LOW=1"),
        workflow=False,
    ),
    Case(
        id="unsupported-workflow-input",
        what="a workflow input of an unsupported type",
        source="""
        @workflow
        def wf(shape: tuple[int, int] = (1, 2)) -> int:  # <-
            return make_int()
        """,
        error=WorkflowCompileError,
        task=None,
        parameter="shape",
        expected=SUPPORTED,
        actual="tuple[int, int]",
    ),
    Case(
        id="task-default-wrong-type",
        what="a task default that is not of the parameter's type",
        source="""
        @task
        def fit(lr: float = "high") -> float:  # <-
            return lr
        """,
        error=TaskDefinitionError,
        task="fit",
        parameter="lr",
        expected="float",
        actual="str",
        says=("default 'high' of parameter 'lr' is not a valid float",),
        workflow=False,
    ),
    Case(
        id="workflow-default-wrong-type",
        what="a workflow default that is not of the input's type",
        source="""
        @workflow
        def wf(n: int = 1.5) -> int:  # <-
            return takes_int(n=n)
        """,
        error=WorkflowCompileError,
        task=None,
        parameter="n",
        expected="int",
        actual="float",
        says=("default 1.5 of parameter 'n' is not a valid int",),
    ),
    Case(
        id="map-of-dynamic-task",
        what="`map_task` of a `@dynamic` task",
        source="""
        from fleetflow import dynamic


        @dynamic
        def fan(x: int) -> int:
            return takes_int(n=x)


        @workflow
        def wf(xs: list[int]) -> list[int]:
            return map_task(fan)(x=xs)  # <-
        """,
        error=WorkflowCompileError,
        task="fan",
        parameter=None,
        expected=None,
        actual=None,
        says=("map_task of dynamic task", "loop over the list inside the dynamic task's body"),
    ),
    Case(
        id="reference-workflow-wrong-type",
        what="a `@reference_workflow` stub called with an argument of the wrong type",
        source="""
        from fleetflow import reference_workflow


        @reference_workflow(name="team.train", version="v3")
        def train(x: int, lr: float) -> float: ...


        @workflow
        def wf(name: str) -> float:
            return train(x=name, lr=0.1)  # <-
        """,
        error=WorkflowCompileError,
        task="train",
        parameter="x",
        expected="int",
        actual="str",
    ),
    Case(
        id="reference-workflow-missing-argument",
        what="a `@reference_workflow` stub called without one of its inputs",
        source="""
        from fleetflow import reference_workflow


        @reference_workflow(name="team.train", version="v3")
        def train(x: int, lr: float) -> float: ...


        @workflow
        def wf(x: int) -> float:
            return train(x=x)  # <-
        """,
        error=WorkflowCompileError,
        task="train",
        parameter="lr",
        expected="float",
        actual="nothing",
    ),
    Case(
        id="map-of-reference-workflow",
        what="`map_task` of a `@reference_workflow` stub",
        source="""
        from fleetflow import reference_workflow


        @reference_workflow(name="team.train", version="v3")
        def train(x: int) -> float: ...


        @workflow
        def wf(xs: list[int]) -> list[float]:
            return map_task(train)(x=xs)  # <-
        """,
        error=WorkflowCompileError,
        task="train",
        parameter=None,
        expected=None,
        actual=None,
        says=("(a reference workflow) is not supported", "map a task over the list inside"),
    ),
]


# --------------------------------------------------------------------------- running a case


@dataclass(frozen=True)
class Compiled:
    module: str
    path: Path
    line: int
    error: BaseException | None


def marked_line(text: str) -> int:
    lines = [i for i, line in enumerate(text.splitlines(), start=1) if line.endswith("# <-")]
    assert len(lines) == 1, f"exactly one line must end with `# <-`, found {lines}"
    return lines[0]


def import_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as a real import does; dataclasses and pydantic look there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


def compile_case(case: Case, directory: Path) -> Compiled:
    """Write the case's module and import it; the error the import raised, if any."""
    module = "mistyped_" + case.id.replace("-", "_")
    path = directory / f"{module}.py"
    text = PRELUDE + textwrap.dedent(case.source).lstrip("\n")
    path.write_text(text)
    try:
        import_module(module, path)
    except Exception as exc:
        return Compiled(module, path, marked_line(text), exc)
    return Compiled(module, path, marked_line(text), None)


# `expected`/`actual` values that describe what was wanted rather than name a type: the message
# says them in its own words (the supported list in full after "supported are").
_NOT_TYPES = (
    SUPPORTED,
    "an annotation",
    "none",
    "positional arguments",
    "a list argument",
    "no list argument",
)


def test_the_catalogue_is_complete() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    assert len(CASES) >= 30


def test_the_prelude_alone_compiles(tmp_path: Path) -> None:
    path = tmp_path / "mistyped_prelude.py"
    path.write_text(PRELUDE)
    import_module("mistyped_prelude", path)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_mistyped_workflow_fails_at_import(case: Case, tmp_path: Path) -> None:
    compiled = compile_case(case, tmp_path)
    error = compiled.error
    assert error is not None, f"{case.what}: compiled without an error"
    assert type(error) is case.error, f"{type(error).__name__}: {error}"
    assert isinstance(error, FleetflowError)
    assert isinstance(error, TypeError | ValueError)
    assert isinstance(error, DefinitionError)
    message = str(error)

    location = f"{compiled.path}:{compiled.line}"
    assert error.location == location, message
    assert f" at {location}: " in message, message

    workflow_name = f"{compiled.module}.wf" if case.workflow else None
    assert error.workflow == workflow_name, message
    if workflow_name is not None:
        assert message.startswith(f"workflow '{workflow_name}' at "), message

    task_name = f"{compiled.module}.{case.task}" if case.task else None
    assert error.task == task_name, message
    if task_name is not None:
        assert f"task '{task_name}'" in message, message

    assert error.parameter == case.parameter, message
    if case.parameter is not None:
        assert f"parameter '{case.parameter}'" in message, message

    assert (error.expected, error.actual) == (case.expected, case.actual), message
    for shown in (case.expected, case.actual):
        if shown is not None and shown not in _NOT_TYPES:
            assert shown.removeprefix("promise of ") in message, (shown, message)

    for fragment in case.says:
        assert fragment in message, (fragment, message)


# --------------------------------------------------------------------------- what is allowed


def test_int_widens_to_float_at_any_depth(tmp_path: Path) -> None:
    """`is_assignable` lets an int flow into a float wherever it sits: top level, list items,
    dict values, optional. Each literal is converted (`float(1) == 1.0`) when the task gets it,
    so the task sees floats. The reverse (float into int) never compiles: see the catalogue."""
    path = tmp_path / "mistyped_widening.py"
    path.write_text(
        PRELUDE
        + textwrap.dedent(
            """
            @task
            def make_counts() -> dict[str, int]:
                return {"a": 1}


            @task
            def mean(values: dict[str, float], extra: Optional[float], lr: float) -> float:
                assert all(type(v) is float for v in values.values())
                return sum(values.values()) + (extra or 0.0) + lr


            @workflow
            def wf() -> float:
                return mean(values=make_counts(), extra=make_int(), lr=make_int())
            """
        )
    )
    module = import_module("mistyped_widening", path)
    assert module.wf() == 3.0


DOCS = Path(__file__).resolve().parents[3] / "docs" / "sdk.md"
CATALOGUE_START = "<!-- error catalogue: generated by tests/unit/sdk/test_mistyped_workflows.py -->"
CATALOGUE_END = "<!-- end of error catalogue -->"


def catalogue_markdown(directory: Path) -> str:
    """The catalogue as docs/sdk.md shows it: per case, the offending line and the error.

    The module is shown as `pipeline` (file `pipeline.py`); line numbers are the real ones.
    """
    parts = []
    for case in CASES:
        compiled = compile_case(case, directory)
        assert compiled.error is not None, case.id
        line = compiled.path.read_text().splitlines()[compiled.line - 1]
        message = (
            str(compiled.error)
            .replace(str(compiled.path), "pipeline.py")
            .replace(compiled.module, "pipeline")
        )
        message = re.sub(r" at 0x[0-9a-f]+>", " at 0x...>", message)  # a function's repr
        block = [
            line.removesuffix("# <-").strip(),
            "",
            *f"{type(compiled.error).__name__}: {message}".splitlines(),
        ]
        body = "\n".join(f"  {text}" if text else "" for text in block)
        parts.append(f"- `{case.id}`: {case.what}\n\n  ```text\n{body}\n  ```\n")
    return "\n".join(parts)


def docs_with_catalogue(docs: str, catalogue: str) -> str:
    before, start, rest = docs.partition(CATALOGUE_START)
    _, end, after = rest.partition(CATALOGUE_END)
    assert start and end, f"docs/sdk.md must hold {CATALOGUE_START!r} ... {CATALOGUE_END!r}"
    return f"{before}{start}\n\n{catalogue}\n{end}{after}"


def test_the_docs_show_the_current_catalogue(tmp_path: Path) -> None:
    docs = DOCS.read_text()
    assert docs == docs_with_catalogue(docs, catalogue_markdown(tmp_path)), (
        "docs/sdk.md's error catalogue is out of date: "
        "python tests/unit/sdk/test_mistyped_workflows.py --write-docs"
    )


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        catalogue = catalogue_markdown(Path(scratch))
    if sys.argv[1:] == ["--write-docs"]:
        DOCS.write_text(docs_with_catalogue(DOCS.read_text(), catalogue))
    else:
        print(catalogue)
