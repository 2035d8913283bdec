"""Workflow inputs given on the command line as `--name value` flags.

The flags are read against the workflow's interface: a flag that names no input is answered
with the closest name, and a flag without a value is `true` for a bool input and a usage error
for any other (`--n --epochs 3` is a mistake, not n="true").
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from fleetflow.errors import FleetflowError

if TYPE_CHECKING:
    from fleetflow.ir import LiteralType
    from fleetflow.workflow import WorkflowFunction


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
    wf: WorkflowFunction[..., Any],
    *,
    command_options: Collection[str] = (),
) -> dict[str, str]:
    """`--n 3 --lr=0.1 --verbose` → {"n": "3", "lr": "0.1", "verbose": "true"}.

    Args:
        args: the words after FILE and WORKFLOW; `--learning-rate` names `learning_rate`.
        wf: the workflow whose inputs the flags give.
        command_options: the command's own options, offered too when a flag is mistyped.

    Raises:
        InputFlagError: a word that is not a flag, a flag that names no input (with the
            closest name), a value missing after a flag that is not a bool input, or an input
            given twice.
    """
    inputs = {variable.name: variable.type for variable in wf.spec.interface.inputs}
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
            raise InputFlagError(_unknown_input(wf, flag, command_options))
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


def _unknown_input(
    wf: WorkflowFunction[..., Any], flag: str, command_options: Iterable[str]
) -> str:
    names = [variable.name for variable in wf.spec.interface.inputs]
    flags = ["--" + name.replace("_", "-") for name in names]
    suggestion = did_you_mean(flag, [*flags, *command_options])
    hint = f"; did you mean {suggestion}?" if suggestion else ""
    name = flag[2:].replace("-", "_")
    kind = getattr(wf, "kind", "workflow")  # "task" for a task run alone
    return (
        f"{kind} '{wf.spec.name}' has no input '{name}'; "
        f"its inputs are: {', '.join(names) or 'none'}{hint}"
    )


def _is_bool(literal_type: LiteralType) -> bool:
    """A bool or an Optional[bool]: the inputs that a flag alone sets to true."""
    from fleetflow.ir import TypeKind  # loaded with the workflow already

    if literal_type.kind is TypeKind.OPTIONAL and literal_type.item is not None:
        literal_type = literal_type.item
    return literal_type.kind is TypeKind.BOOLEAN
