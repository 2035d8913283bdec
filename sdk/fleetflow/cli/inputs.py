"""Workflow inputs given on the command line as `--name value` flags.

The flags are read against the workflow's interface: a flag that names no input is answered
with the closest name, and a flag without a value is `true` for a bool input and a usage error
for any other (`--n --epochs 3` is a mistake, not n="true").
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fleetflow.errors import FleetflowError

if TYPE_CHECKING:
    from fleetflow.ir import LiteralType, WorkflowSpec


class InputFlagError(FleetflowError, ValueError):
    """A workflow-input flag that cannot be read: a usage error (exit code 2)."""


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """The choice closest to `word`, if one is close enough to be what was meant.

    Leading dashes do not count towards the likeness (`--epoch` is compared as `epoch`), so
    `did_you_mean("--remot", ["--remote", "--wait"])` is `"--remote"`.
    """
    by_name: dict[str, str] = {}
    for choice in choices:
        by_name.setdefault(choice.lstrip("-"), choice)
    matches = difflib.get_close_matches(word.lstrip("-"), list(by_name), n=1)
    return by_name[matches[0]] if matches else None


def split_input_flags(
    args: Sequence[str],
    spec: WorkflowSpec,
    *,
    kind: str = "workflow",
    command_options: Collection[str] = (),
) -> dict[str, str]:
    """`--n 3 --lr=0.1 --verbose` → {"n": "3", "lr": "0.1", "verbose": "true"}.

    Args:
        args: the words after FILE and WORKFLOW; `--learning-rate` names `learning_rate`.
        spec: the workflow whose inputs the flags give (`kind` "task" for a task run alone).
        command_options: the command's own options, offered too when a flag is mistyped.

    Raises:
        InputFlagError: a word that is not a flag, a flag that names no input (with the
            closest name), a value missing after a flag that is not a bool input, or an input
            given twice.
    """
    inputs = {variable.name: variable.type for variable in spec.interface.inputs}
    values: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise InputFlagError(
                f"unexpected argument {arg!r}: give workflow inputs as --name value"
            )
        flag, eq, value = arg.partition("=")
        name = flag[2:].replace("-", "_")
        if name not in inputs:
            raise InputFlagError(_unknown_input(spec, kind, flag, command_options))
        if not eq:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value = args[i + 1]
                i += 1
            elif _is_bool(inputs[name]):
                value = "true"  # `--verbose` alone switches a bool input on
            else:
                raise InputFlagError(
                    f"{flag} needs a value ({inputs[name].describe()}): {flag} VALUE"
                )
        if name in values:
            raise InputFlagError(f"input --{name} given twice")
        values[name] = value
        i += 1
    return values


def _unknown_input(spec: WorkflowSpec, kind: str, flag: str, command_options: Iterable[str]) -> str:
    names = [variable.name for variable in spec.interface.inputs]
    flags = ["--" + name.replace("_", "-") for name in names]
    suggestion = did_you_mean(flag, [*flags, *command_options])
    hint = f"; did you mean {suggestion}?" if suggestion else ""
    name = flag[2:].replace("-", "_")
    return (
        f"{kind} '{spec.name}' has no input '{name}'; "
        f"its inputs are: {', '.join(names) or 'none'}{hint}"
    )


def _is_bool(literal_type: LiteralType) -> bool:
    """A bool or an Optional[bool]: the inputs that a flag alone sets to true."""
    from fleetflow.ir import TypeKind  # loaded with the workflow already

    if literal_type.kind is TypeKind.OPTIONAL and literal_type.item is not None:
        literal_type = literal_type.item
    return literal_type.kind is TypeKind.BOOLEAN


_TEXT_KINDS = ("string", "enum", "datetime", "bytes")  # their literal is the flag's text
_BLOB_KINDS = ("file", "directory", "ndarray", "dataframe")


def literal_inputs(raw: Mapping[str, str], spec: WorkflowSpec) -> dict[str, Any]:
    """Flag texts → JSON literals of the inputs' types, for a workflow known only by its
    registered spec (`run --launch-plan`: no Python types, nothing uploaded).

    Strings, enums, datetimes and bytes are the text itself; bools true/false (1/0, yes/no);
    numbers and durations (seconds) are numbers; an Optional is `null`/`none` or its type;
    the rest is JSON. A File, Directory or array is the JSON `{"uri": ...}` of a blob the
    control plane already has: local files are uploaded by `fleetflow run FILE WORKFLOW`.

    Raises:
        InputFlagError: a value that is not of its input's type (`input 'n': expected int,
            got 'abc'`).
    """
    from fleetflow.errors import LiteralValidationError
    from fleetflow.types import validate_literal

    literals: dict[str, Any] = {}
    for name, text in raw.items():
        variable = spec.interface.input(name)
        assert variable is not None  # split_input_flags refused unknown names
        literal = _text_literal(name, text, variable.type)
        try:
            literals[name] = validate_literal(literal, variable.type, f"inputs.{name}")
        except LiteralValidationError as exc:
            raise InputFlagError(
                f"input '{name}': expected {variable.type.describe()}, got {text!r} ({exc})"
            ) from None
    return literals


def _text_literal(name: str, text: str, literal_type: LiteralType) -> Any:
    from fleetflow.workflow import FALSE_TEXTS, NONE_TEXTS, TRUE_TEXTS

    kind = literal_type.kind.value
    words = text.strip().lower()
    if kind == "optional":
        assert literal_type.item is not None
        return None if words in NONE_TEXTS else _text_literal(name, text, literal_type.item)
    if kind in _TEXT_KINDS:
        return text
    if kind == "boolean" and words in TRUE_TEXTS | FALSE_TEXTS:
        return words in TRUE_TEXTS
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        if kind in _BLOB_KINDS:
            raise InputFlagError(
                f"input '{name}' ({literal_type.describe()}): a launch plan's run uploads "
                'nothing; give the JSON {"uri": ...} of a blob on the control plane, or run '
                "the workflow from its file (fleetflow run --remote FILE WORKFLOW)"
            ) from None
        return text  # a union's bare word, a string-like value: validation says if wrong
