"""The console's launch form (`control_plane.api.console.launch`): which control each input
type gets, and what JSON literal each field's text becomes (the API then validates it)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from control_plane.api.console import launch
from fleetflow.ir import LiteralType, TypedInterface, TypeKind, Variable


def _t(kind: TypeKind, **extra: Any) -> LiteralType:
    return LiteralType(kind=kind, **extra)


INT, FLOAT, STR, BOOL = (
    _t(k) for k in (TypeKind.INTEGER, TypeKind.FLOAT, TypeKind.STRING, TypeKind.BOOLEAN)
)
COLOUR = _t(TypeKind.ENUM, name="Colour", values=["red", "green"])
MAYBE_INT = _t(TypeKind.OPTIONAL, item=INT)
INTS = _t(TypeKind.LIST, item=INT)
TABLE = _t(TypeKind.DICT, item=FLOAT)
MAYBE_INTS = _t(TypeKind.OPTIONAL, item=INTS)


class _Viewer:
    csrf = "token-123"
    tenant = "acme"


def test_each_type_gets_its_control_and_defaults_are_filled_in() -> None:
    interface = TypedInterface(
        inputs=[
            Variable(name="n", type=INT),
            Variable(name="lr", type=FLOAT, default=0.1, has_default=True),
            Variable(name="name", type=STR),
            Variable(name="fast", type=BOOL, default=True, has_default=True),
            Variable(name="colour", type=COLOUR),
            Variable(name="seed", type=MAYBE_INT, default=None, has_default=True),
            Variable(name="xs", type=INTS),
            Variable(name="weights", type=TABLE, default={"a": 1.0}, has_default=True),
        ]
    )
    form = launch.launch_form("m.flow", "v1", interface, _Viewer())  # type: ignore[arg-type]
    assert 'name=csrf value="token-123"' in form and 'name=version value="v1"' in form
    assert '<input type=number step=1 name=in.n value="" required>' in form
    assert '<input type=number step=any name=in.lr value="0.1">' in form
    assert '<input type=text name=in.name value="" required>' in form
    fast = re.search(r"<select name=in\.fast>(.*?)</select>", form)
    assert fast and "<option selected>true</option><option>false</option>" in fast.group(1)
    colour = re.search(r"<select name=in\.colour>(.*?)</select>", form)
    assert colour and "(choose)" in colour.group(1) and "<option>green</option>" in colour.group(1)
    assert '<input type=number step=1 name=in.seed value="">' in form  # optional: not required
    assert "<textarea name=in.xs rows=3 spellcheck=false></textarea>" in form
    weights = re.search(r"<textarea name=in\.weights[^>]*>(.*?)</textarea>", form)
    assert weights and json.loads(weights.group(1).replace("&quot;", '"')) == {"a": 1.0}
    assert "<script" not in form


def test_what_was_entered_and_the_apis_errors_come_back_escaped() -> None:
    interface = TypedInterface(inputs=[Variable(name="n", type=INT)])
    form = launch.launch_form(
        "m.flow",
        "v1",
        interface,
        _Viewer(),  # type: ignore[arg-type]
        entered={"n": '"><script>'},
        errors={"n": "expected int, got str '<b>'"},
        general="quota <exceeded>",
    )
    assert '<input type=text name=in.n value="&quot;&gt;&lt;script&gt;"' in form
    assert "expected int, got str &#x27;&lt;b&gt;&#x27;" in form
    assert "quota &lt;exceeded&gt;" in form and "<script>" not in form


@pytest.mark.parametrize(
    ("kind", "text", "literal"),
    [
        (INT, "42", (True, 42)),
        (INT, " 7 ", (True, 7)),
        (INT, "many", (True, "many")),  # the API's own message refuses it
        (INT, "", (False, None)),  # left out: its default, or the API says it is missing
        (FLOAT, "1e-3", (True, 0.001)),
        (STR, "", (False, None)),
        (STR, " spaced ", (True, " spaced ")),
        (BOOL, "false", (True, False)),
        (COLOUR, "red", (True, "red")),
        (MAYBE_INT, "", (True, None)),
        (MAYBE_INT, "3", (True, 3)),
        (INTS, "[1, 2]", (True, [1, 2])),
        (TABLE, '{"a": 0.5}', (True, {"a": 0.5})),
        (MAYBE_INTS, "", (True, None)),
        (MAYBE_INTS, "[3]", (True, [3])),
    ],
)
def test_a_fields_text_becomes_the_literal_the_api_validates(
    kind: LiteralType, text: str, literal: tuple[bool, Any]
) -> None:
    assert launch._literal(text, kind) == literal


def test_json_that_does_not_parse_is_said_so() -> None:
    with pytest.raises(json.JSONDecodeError):
        launch._literal("[1, 2", INTS)


def test_an_api_errors_field_names_its_input() -> None:
    names = ["n", "n_max", "cfg"]
    assert launch._input_of("inputs.n", names) == "n"
    assert launch._input_of("inputs.n_max", names) == "n_max"
    assert launch._input_of("inputs.cfg.lr", names) == "cfg"
    assert launch._input_of("inputs.cfg[2]", names) == "cfg"
    assert launch._input_of("version", names) is None
    assert launch._input_of("inputs.other", names) is None
