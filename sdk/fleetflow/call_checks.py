"""A call's arguments against its callee's parameters, in a workflow body: the one check shared
by task calls, `map_task` calls, sub-workflow calls and a `functools.partial` given to
`map_task`.

Each of them takes keyword arguments only (positional ones would bind parameters by position,
which a spec cannot record), names only parameters the callee has, and binds every parameter
without a default. The errors say so in the words of the call (`CallForm`), through the `fail`
of the caller (a `WorkflowCompileError` naming the workflow and the line, or what `map_task`
raises outside a workflow).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from fleetflow import ir

#: Makes the error to raise: its message, then details (`parameter=`, `expected=`, `hint=`...).
Fail = Callable[..., Exception]


@dataclass(frozen=True)
class CallForm:
    """How the errors about one kind of call word it.

    Attributes:
        positional: what precedes "<n> positional argument(s)" (`task 'm.f' was called with`).
        keywords_why: why keyword arguments are needed (`inside a workflow, call tasks with
            keyword arguments`).
        hint_call: the call to write instead, given its keyword arguments (`f(x=..., y=...)`).
        unknown: the start of the error for a keyword the callee lacks, given that keyword
            (`task 'm.f' has no parameter 'z' (got int 3)`).
    """

    positional: str
    keywords_why: str
    hint_call: Callable[[str], str]
    unknown: Callable[[str], str]

    @classmethod
    def in_body(
        cls, callee: str, what: str, call: str, owner: str, got: Callable[[str], str]
    ) -> CallForm:
        """The form of a call in a workflow body of `callee` (`task 'm.f'`), one of the `what`
        (`tasks`) written `call` (`f`), whose parameters are `owner`'s; `got` describes the
        argument given for a keyword."""
        return cls(
            positional=f"{callee} was called with",
            keywords_why=f"inside a workflow, call {what} with keyword arguments",
            hint_call=lambda example: f"{call}({example})",
            unknown=lambda key: f"{owner} has no parameter '{key}' (got {got(key)})",
        )


def check_keyword_call(
    form: CallForm,
    names: Sequence[str],
    args: Sequence[Any],
    keywords: Collection[str],
    fail: Fail,
) -> None:
    """Refuse positional `args`, then the first of `keywords` not among the callee's parameter
    `names`, with `fail`."""
    if args:
        example = ", ".join(f"{n}=..." for n in names[: len(args)]) or "..."
        first = names[0] if names else None
        raise fail(
            f"{form.positional} {len(args)} positional argument(s)"
            + (f" (the first would bind parameter '{first}')" if first else "")
            + f"; {form.keywords_why}",
            parameter=first,
            expected="keyword arguments",
            actual="positional arguments",
            hint=f"write {form.hint_call(example)}",
        )
    unknown = [k for k in keywords if k not in names]
    if unknown:
        raise fail(
            f"{form.unknown(unknown[0])}; its parameters are: " + (", ".join(names) or "none"),
            parameter=unknown[0],
        )


def missing_parameter(callee: str, variable: ir.Variable, fail: Fail) -> Exception:
    """The error of a call of `callee` that binds nothing to `variable`, which has no default."""
    return fail(
        f"{callee} is missing required parameter '{variable.name}' "
        f"(expects {variable.type.describe()}, got nothing)",
        parameter=variable.name,
        expected=variable.type.describe(),
        actual="nothing",
    )
