"""Workflow inputs given on the command line as `--name value` flags."""

from __future__ import annotations

from fleetflow.errors import FleetflowError


class InputFlagError(FleetflowError, ValueError):
    """A workflow-input flag that cannot be read."""


def split_input_flags(args: list[str]) -> dict[str, str]:
    """`--n 3 --lr=0.1 --flag` → {"n": "3", "lr": "0.1", "flag": "true"}; names may use `-`."""
    values: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or arg == "--":
            raise InputFlagError(
                f"unexpected argument {arg!r}: give workflow inputs as --name value"
            )
        name, eq, value = arg[2:].partition("=")
        name = name.replace("-", "_")
        if not eq:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value = args[i + 1]
                i += 1
            else:
                value = "true"
        if name in values:
            raise InputFlagError(f"input --{name} given twice")
        values[name] = value
        i += 1
    return values
