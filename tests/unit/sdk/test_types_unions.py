"""Unions (`A | B`) and `Annotated[T, ...]` in the type system: literals, reading plain
literals, assignability, and the errors for what is still refused."""

from __future__ import annotations

import datetime as dt
import enum
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import pydantic
import pytest

from fleetflow import (
    Directory,
    File,
    LiteralValidationError,
    UnsupportedTypeError,
    WorkflowInputError,
    task,
    workflow,
)
from fleetflow.files import blob_literals, has_blobs, map_blob_literals
from fleetflow.ir import LiteralType, TaskSpec, TypedInterface, TypeKind, Variable
from fleetflow.types import (
    assignability_hint,
    describe_python_type,
    is_assignable,
    literal_type_of,
    to_literal,
    to_python,
    validate_literal,
)


class Color(enum.StrEnum):
    RED = "red"
    GREEN = "green"


@dataclass
class Cat:
    name: str


@dataclass
class Dog:  # the same fields as Cat: only the recorded variant tells them apart
    name: str


@dataclass
class Bird:
    name: str
    wingspan: float


class Pet(pydantic.BaseModel):
    pet: Cat | Dog
    age: Annotated[int, pydantic.Field(ge=0)]
    tags: list[Annotated[str, "a tag"]] = []


@dataclass
class Tagged:
    value: Annotated[int | None, "metadata"]
    colors: dict[str, Annotated[Color, "m"]]


INTEGER = LiteralType(kind=TypeKind.INTEGER)
FLOAT = LiteralType(kind=TypeKind.FLOAT)
STRING = LiteralType(kind=TypeKind.STRING)


def union(*variants: LiteralType) -> LiteralType:
    return LiteralType(kind=TypeKind.UNION, variants=list(variants))


CASES: list[tuple[str, Any, Any, Any]] = [
    ("int-of-int-str", int | str, 3, {"variant": "int", "value": 3}),
    ("str-of-int-str", Union[int, str], "3", {"variant": "str", "value": "3"}),  # noqa: UP007
    ("int-of-int-float", int | float, 3, {"variant": "int", "value": 3}),
    ("float-of-int-float", int | float, 3.0, {"variant": "float", "value": 3.0}),
    ("int-of-float-int", float | int, 7, {"variant": "int", "value": 7}),
    ("bool-of-int-bool", int | bool, True, {"variant": "bool", "value": True}),
    ("same-fields", Cat | Dog, Dog("rex"), {"variant": "Dog", "value": {"name": "rex"}}),
    ("enum-of-enum-str", str | Color, Color.RED, {"variant": "Color", "value": "red"}),
    ("str-of-enum-str", str | Color, "red", {"variant": "str", "value": "red"}),
    ("list-variant", list[int] | list[str], ["a"], {"variant": "list[str]", "value": ["a"]}),
    ("optional-none", Optional[int | str], None, None),  # noqa: UP045
    ("with-none", int | str | None, "a", {"variant": "str", "value": "a"}),
    (
        "datetime-or-timedelta",
        dt.datetime | dt.timedelta,
        dt.timedelta(seconds=90),
        {"variant": "timedelta", "value": 90},
    ),
    (
        "list-of-unions",
        list[Annotated[int, "m"] | Cat],
        [1, Cat("tom")],
        [{"variant": "int", "value": 1}, {"variant": "Cat", "value": {"name": "tom"}}],
    ),
    (
        "dict-of-unions",
        dict[str, bytes | None | int],
        {"a": b"\x00", "b": None, "c": 2},
        {
            "a": {"variant": "bytes", "value": "AA=="},
            "b": None,
            "c": {"variant": "int", "value": 2},
        },
    ),
    (
        "model-with-union-and-annotated",
        Pet,
        Pet(pet=Cat("tom"), age=3, tags=["x"]),
        {"pet": {"variant": "Cat", "value": {"name": "tom"}}, "age": 3, "tags": ["x"]},
    ),
    (
        "dataclass-with-annotated-fields",
        Tagged,
        Tagged(value=None, colors={"a": Color.GREEN}),
        {"value": None, "colors": {"a": "green"}},
    ),
    ("annotated-list-items", list[Annotated[Color, "m"]], [Color.RED], ["red"]),
    ("annotated-set-items", set[Annotated[int, "m"]], {2, 1}, [1, 2]),
    ("annotated-union", Annotated[int | str, "m"], 1, {"variant": "int", "value": 1}),
]


@pytest.mark.parametrize(
    ("py_type", "value", "literal"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_round_trip(py_type: Any, value: Any, literal: Any) -> None:
    produced = to_literal(value, py_type)
    assert produced == literal
    wire = json.loads(json.dumps(produced))
    back = to_python(wire, py_type)
    assert back == value
    assert type(back) is type(value)
    if isinstance(value, list):
        assert [type(v) for v in back] == [type(v) for v in value]
    assert validate_literal(wire, literal_type_of(py_type), "inputs.x") == literal


def test_literal_variants_are_named_as_they_read() -> None:
    versions = Literal["v1.0", "v2.0"]
    assert literal_type_of(versions).describe() == "Literal['v1.0', 'v2.0']"
    literal = to_literal("v2.0", versions | int)
    assert literal == {"variant": "Literal['v1.0', 'v2.0']", "value": "v2.0"}
    assert to_python(literal, versions | int) == "v2.0"


def test_union_literal_types() -> None:
    assert literal_type_of(int | str) == union(INTEGER, STRING)
    # Variants in the order of their names: A | B and B | A are one type.
    assert literal_type_of(str | int) == literal_type_of(int | str)
    assert literal_type_of(float | int) == union(FLOAT, INTEGER)
    assert literal_type_of(int | str).describe() == "int | str"
    assert literal_type_of(Dog | Cat).describe() == "Cat | Dog"
    optional = literal_type_of(int | None | str)
    assert optional == LiteralType(kind=TypeKind.OPTIONAL, item=union(INTEGER, STRING))
    assert optional.describe() == "Optional[int | str]"
    assert literal_type_of(list[int | Cat]).describe() == "list[Cat | int]"
    assert describe_python_type(Optional[int | str]) == "Optional[int | str]"  # noqa: UP045
    # Only a union writes `variants`: every other type's JSON (and spec digests) is unchanged.
    assert "variants" not in literal_type_of(list[dict[str, Cat]]).model_dump_json()
    dumped = literal_type_of(int | str).model_dump(mode="json")
    assert [v["kind"] for v in dumped["variants"]] == ["integer", "string"]
    assert LiteralType.model_validate(dumped) == literal_type_of(int | str)


def test_a_plain_literal_of_one_variant_is_read_as_that_variant() -> None:
    """What an `A` output bound to an `A | B` parameter delivers, or a JSON input."""
    assert to_python(3, int | str) == 3
    assert to_python("3", int | str) == "3"
    assert to_python(3, int | float) == 3 and type(to_python(3, int | float)) is int
    assert to_python(3, float | str) == 3.0 and type(to_python(3, float | str)) is float
    assert to_python({"name": "b", "wingspan": 1}, Cat | Bird) == Bird("b", 1.0)
    assert to_python([{"name": "a"}, 2], list[Cat | int]) == [Cat("a"), 2]
    # The control plane normalises a plain literal to the tagged form.
    assert validate_literal(2, literal_type_of(int | str)) == {"variant": "int", "value": 2}


@pytest.mark.parametrize(
    ("literal", "py_type", "message"),
    [
        ({"name": "x"}, Cat | Dog, "cannot tell which variant of Cat | Dog the value is (it could "
         "be Cat or Dog); write it as {\"variant\": \"<one of them>\", \"value\": ...}"),
        (2.5, int | str, "cannot tell which variant of int | str the value is (it fits none"),
        ({"variant": "bytes", "value": "AA=="}, int | str, "variant 'bytes' is not one of 'int'"),
        ({"variant": "int", "value": "3"}, int | str, "expected int, got str '3'"),
        ("red", str | Color, "(it could be Color or str)"),
    ],
)  # fmt: skip
def test_union_literals_that_name_no_variant_are_refused(
    literal: Any, py_type: Any, message: str
) -> None:
    with pytest.raises(LiteralValidationError) as info:
        to_python(literal, py_type, "inputs.x")
    assert message in str(info.value) and str(info.value).startswith("inputs.x: ")
    with pytest.raises(LiteralValidationError):
        validate_literal(literal, literal_type_of(py_type), "inputs.x")


def test_union_values_of_no_variant_are_refused(tmp_path: Path) -> None:
    with pytest.raises(LiteralValidationError, match=r"^x: expected int \| str, got float 2.5"):
        to_literal(2.5, int | str, "x")
    # A value that is a variant's type but not a valid value says why.
    with pytest.raises(LiteralValidationError, match="does not exist"):
        to_literal(File(tmp_path / "missing"), File | int, "x")
    # A path may be a File or a Directory: the first variant that takes it.
    (tmp_path / "f").write_text("f")
    assert to_literal(str(tmp_path / "f"), Directory | File)["variant"] == "File"
    assert to_literal(str(tmp_path), Directory | File)["variant"] == "Directory"


@pytest.mark.parametrize(
    ("source", "target", "assignable"),
    [
        (int, int | str, True),
        (str, int | str, True),
        (int, int | float, True),  # a plain int is read as the int variant
        (float, int | float, True),
        (int, float | str, True),  # widened, as into a float
        (bool, int | str, False),
        (Cat, Cat | Dog, False),  # the same fields: a plain Cat could be read as a Dog
        (Cat, Cat | Bird, True),
        (File, File | Directory, True),
        (Directory, File | Directory, True),
        (dt.timedelta, int | dt.timedelta, False),  # whole seconds are a plain int
        (dt.timedelta, str | dt.timedelta, True),
        (str, str | Color, False),
        (dict[str, int], dict[str, int] | int, False),  # a dict's keys may be anything
        (list[int], list[int] | list[str], False),
        (int | str, int | str, True),
        (str | int, int | str, True),
        (int | str, int | str | float, True),
        (int | str, int | float, False),
        (int | str, int, False),
        (Cat | Dog, Cat | Dog | Bird, True),
        (int, Optional[int | str], True),  # noqa: UP045
        (Optional[int], Optional[int | str], True),  # noqa: UP045
        (Optional[int], int | str, False),  # noqa: UP045
        (Optional[int | str], int | str, False),  # noqa: UP045
        (list[int], list[int | str], True),
        (list[Cat], list[Cat | Dog], False),
        (dict[str, int], dict[str, float | str], True),
    ],
)
def test_assignability(source: Any, target: Any, assignable: bool) -> None:
    assert is_assignable(literal_type_of(source), literal_type_of(target)) is assignable
    if assignable and not typing_is_union(source):
        # What the compiler promises: a plain value of the source reads back as itself.
        values = {int: 3, str: "s", float: 2.5, Cat: Cat("c"), dt.timedelta: dt.timedelta(1)}
        if source in values:
            literal = json.loads(json.dumps(to_literal(values[source], source)))
            assert to_python(literal, target) == values[source]


def typing_is_union(py_type: Any) -> bool:
    return literal_type_of(py_type).kind is TypeKind.UNION


def test_assignability_hints() -> None:
    hint = assignability_hint(literal_type_of(Cat), literal_type_of(Cat | Dog))
    assert hint is not None and "declare the producing task's return type Cat | Dog" in hint
    hint = assignability_hint(literal_type_of(int | str), literal_type_of(int))
    assert hint is not None and "the value may be any of int | str" in hint


@pytest.mark.parametrize(
    ("py_type", "message"),
    [
        (int | Annotated[int, "m"], "Annotated[int, 'm'] is ambiguous: two variants read int"),
        (Cat | Annotated[Dog | Bird, "m"], "a union inside a union; write its alternatives in one"),
        (int | Annotated[str | None, "m"], "a variant may not be Optional; write Optional[A | B]"),
        (int | dt.date, "date is not supported; use datetime"),
        (int | tuple[int, int], "for a sequence use list[T], for a record a dataclass"),
    ],
)  # fmt: skip
def test_unsupported_unions_say_what_to_use(py_type: Any, message: str) -> None:
    with pytest.raises(UnsupportedTypeError) as info:
        literal_type_of(py_type)
    assert message in str(info.value)


@dataclass
class Report:
    title: str
    data: File | Directory
    extra: list[File | int]


def test_blobs_inside_unions_are_found_and_renamed(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    report = Report("r", Directory(tmp_path), [File(tmp_path / "a.txt"), 3])
    literal_type = literal_type_of(Report)
    literal = to_literal(report, Report)
    assert has_blobs(literal_type) and has_blobs(literal_type_of(int | File))
    assert not has_blobs(literal_type_of(int | str))
    found = [(path, kind) for path, kind, _ in blob_literals(literal, literal_type, "out")]
    assert found == [("out.data", TypeKind.DIRECTORY), ("out.extra[0]", TypeKind.FILE)]
    renamed = map_blob_literals(
        literal, literal_type, lambda kind, blob: {**blob, "uri": "s3://b/k"}
    )
    assert renamed["data"] == {"variant": "Directory", "value": {"uri": "s3://b/k"}}
    assert renamed["extra"][0]["value"]["uri"] == "s3://b/k"
    assert renamed["extra"][1] == {"variant": "int", "value": 3}
    # A plain literal of a variant (a File output into a File | int parameter) is found too.
    plain = to_literal(File(tmp_path / "a.txt"), File)
    union_type = literal_type_of(File | int)
    assert [kind for _, kind, _ in blob_literals(plain, union_type, "x")] == [TypeKind.FILE]
    assert map_blob_literals(plain, union_type, lambda kind, blob: "renamed") == {
        "variant": "File",
        "value": "renamed",
    }


def test_union_parameters_in_a_task_interface() -> None:
    @task
    def pick(value: int | str, pets: list[Annotated[Cat | Bird, "m"]]) -> Cat | Dog | None:
        return None

    spec: TaskSpec = pick.spec
    interface: TypedInterface = spec.interface
    assert [v.type.describe() for v in interface.inputs] == ["int | str", "list[Bird | Cat]"]
    output: Variable = interface.outputs[0]
    assert output.type.describe() == "Optional[Cat | Dog]"


@task
def show(label: int | str, maybe: Cat | int | None) -> Annotated[str, "a description"]:
    return f"{label!r} {maybe!r}"


@workflow
def labelled(label: int | str, maybe: Optional[Cat | int] = None) -> str:  # noqa: UP045
    return show(label=label, maybe=maybe)


def test_union_workflow_inputs_from_the_cli() -> None:
    """`--label three` is the str variant, `--label 7` the int one (JSON first, then a bare
    word); a tagged literal names the variant outright."""
    assert labelled.parse_cli_inputs({"label": "three"}) == {"label": "three"}
    assert labelled.parse_cli_inputs({"label": "7"}) == {"label": 7}
    assert labelled.parse_cli_inputs({"label": '{"variant": "str", "value": "7"}'}) == {
        "label": "7"
    }
    parsed = labelled.parse_cli_inputs({"label": "x", "maybe": '{"name": "tom"}'})
    assert parsed == {"label": "x", "maybe": Cat("tom")}
    assert labelled.parse_cli_inputs({"label": "x", "maybe": "none"})["maybe"] is None
    assert labelled(**parsed) == "'x' Cat(name='tom')"
    assert labelled.inputs_to_literals(parsed)["maybe"] == {
        "variant": "Cat",
        "value": {"name": "tom"},
    }
    with pytest.raises(
        WorkflowInputError,
        match="input 'maybe': expected Cat \\| int, got '2.5' .*fits none of them",
    ):
        labelled.parse_cli_inputs({"label": "x", "maybe": "2.5"})
