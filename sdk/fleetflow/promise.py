"""`Promise`: what a workflow input or a task call stands for while a workflow body compiles.

A workflow body runs once, at import time, with promises in place of values, so the compiler can
record the wiring. A promise only knows *where* a value will come from (a binding) and its type;
anything that needs the value itself (branching, iterating, arithmetic, reading a dataclass
field) cannot work and fails here, at the offending line, with an explanation rather than
silently compiling the wrong graph. A comparison (`x > 3`) is the exception: it makes a
`Condition`, which only a `conditional(...)` can branch on (its truth value is an error too).
"""

from __future__ import annotations

import os
import sys
import typing
from collections.abc import Iterator
from enum import Enum
from typing import Any, NoReturn

from fleetflow import ir, spec_conditions
from fleetflow.errors import PromiseAttributeError, WorkflowCompileError

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

_NO_BRANCHING = (
    "the workflow body runs once at compile time, before any value exists: to branch on a "
    'value, use `conditional("name").if_(x > 3).then(task_a(...)).else_().then(task_b(...))`'
    " (`from fleetflow import conditional`), or decide inside a task; to run a task once per "
    "element of a list, use `map_task(task)(param=the_list)`"
)
_CONDITION_HINT = (
    'a comparison of promises is a condition for `conditional("name").if_(condition)'
    ".then(task(...)).else_().then(...)` (`from fleetflow import conditional`); combine "
    "conditions with `&` and `|` (each comparison in parentheses), not `and`/`or`/`not`"
)
_IN_A_TASK = "the value only exists when the workflow runs: do this inside a task"


def caller_location() -> str:
    """`file:line` of the innermost frame outside the fleetflow package: the user's line."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not os.path.abspath(filename).startswith(_PACKAGE_DIR):
            return f"{filename}:{frame.f_lineno}"
        if frame.f_back is None:
            break
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


class Promise:
    """A reference to a value that will exist when the workflow runs.

    All state is in underscore slots: any public attribute name is left free so that
    `promise.some_field` can be reported as the mistake it is.
    """

    __slots__ = ("_binding", "_type", "_origin", "_workflow", "_owner", "_scope")

    def __init__(
        self,
        binding: ir.Binding,
        literal_type: ir.LiteralType,
        *,
        origin: str,
        workflow: str,
        owner: object,
        scope: tuple[int, ...] = (),
    ) -> None:
        self._binding = binding
        self._type = literal_type
        self._origin = origin  # "workflow input 'n'", "output of node 'n0-make_data'"
        self._workflow = workflow
        self._owner = owner  # the compilation that made it; promises do not cross workflows
        # The branches of conditionals it was made in (outermost first): it exists only there.
        self._scope = scope

    def __repr__(self) -> str:
        return f"<Promise {self._origin}: {self._type.describe()}>"

    def _producer(self) -> str | None:
        """The name of the task whose output this is; None for a workflow input."""
        if not isinstance(self._binding, ir.NodeOutputBinding):
            return None
        # The compilation records a node before it hands out the node's promises.
        for node in getattr(self._owner, "nodes", ()):
            if node.id == self._binding.node_id:
                return str(node.task)
        return None

    def _misuse(
        self,
        detail: str,
        hint: str,
        error: type[WorkflowCompileError] = WorkflowCompileError,
    ) -> NoReturn:
        raise error(
            f"{detail} ({self._origin}, type {self._type.describe()})",
            location=caller_location(),
            workflow=self._workflow,
            task=self._producer(),
            actual=f"promise of {self._type.describe()}",
            hint=hint,
        )

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not slots or methods.
        if name.startswith("_"):
            raise AttributeError(name)
        kind = self._type
        if kind.kind is ir.TypeKind.STRUCT and name in (kind.fields or {}):
            self._misuse(
                f"cannot read field '{name}' of a promise in the workflow body",
                f"pass the whole {kind.describe()} to a task and read `.{name}` there",
                PromiseAttributeError,
            )
        self._misuse(
            f"a promise has no attribute '{name}'",
            _IN_A_TASK,
            PromiseAttributeError,
        )

    def __bool__(self) -> bool:
        self._misuse("a promise has no truth value (if/while/and/or/not)", _NO_BRANCHING)

    def __iter__(self) -> NoReturn:
        self._misuse(
            "cannot iterate over or unpack a promise",
            "to run a task once per element, use `map_task(task)(param=the_list)`; to return "
            "several values from a task, annotate it `-> SomeNamedTuple` and unpack its call "
            "(`a, b = t(...)`)",
        )

    def __len__(self) -> int:
        self._misuse("len() of a promise is unknown until the workflow runs", _NO_BRANCHING)

    def __contains__(self, item: object) -> bool:
        self._misuse("`in` on a promise needs its value", _NO_BRANCHING)

    def __getitem__(self, key: object) -> NoReturn:
        self._misuse("cannot index a promise (`x[0]`, `x['key']`)", _IN_A_TASK)

    def __call__(self, *args: object, **kwargs: object) -> NoReturn:
        self._misuse("a promise is not callable", _IN_A_TASK)

    def __eq__(self, other: object) -> Condition:  # type: ignore[override]
        return self._compare("==", other)

    def __ne__(self, other: object) -> Condition:  # type: ignore[override]
        return self._compare("!=", other)

    def __lt__(self, other: object) -> Condition:
        return self._compare("<", other)

    def __le__(self, other: object) -> Condition:
        return self._compare("<=", other)

    def __gt__(self, other: object) -> Condition:
        return self._compare(">", other)

    def __ge__(self, other: object) -> Condition:
        return self._compare(">=", other)

    def is_true(self) -> Condition:
        """The condition that this bool promise is True when the workflow runs."""
        return self._truth(True)

    def is_false(self) -> Condition:
        """The condition that this bool promise is False when the workflow runs."""
        return self._truth(False)

    def _truth(self, value: bool) -> Condition:
        kind = self._type.kind
        if kind is ir.TypeKind.OPTIONAL and self._type.item is not None:
            kind = self._type.item.kind
        if kind is not ir.TypeKind.BOOLEAN:
            self._misuse(
                f"is_{str(value).lower()}() needs a promise of bool",
                'compare it instead, e.g. `x == 3`, `name != ""`',
            )
        return self._compare("==", value)

    def _operand(self) -> ir.InputBinding | ir.NodeOutputBinding | ir.LiteralBinding:
        binding = self._binding
        if isinstance(binding, ir.SelectBinding):
            self._misuse(
                "cannot compare the output of a conditional in the workflow body yet",
                "pass it to a task and compare its result, or branch on the values the "
                "conditional branched on",
            )
        if isinstance(binding, ir.ListBinding | ir.DictBinding):
            # A sub-workflow's output that is a list or dict built in its body.
            self._misuse("cannot compare a list or dict built in a workflow body", _IN_A_TASK)
        assert not isinstance(binding, ir.SelectBinding | ir.ListBinding | ir.DictBinding)
        return binding

    def _compare(self, op: str, other: object) -> Condition:
        left = self._operand()
        promises = [self]
        if isinstance(other, Promise):
            if other._owner is not self._owner:
                self._misuse(
                    f"cannot compare with a promise of workflow '{other._workflow}'",
                    "promises cannot cross workflows",
                )
            right: ir.InputBinding | ir.NodeOutputBinding | ir.LiteralBinding = other._operand()
            right_type: ir.LiteralType | None = other._type
            shown = f"{other._type.describe()} ({other._origin})"
            promises.append(other)
        elif isinstance(other, PromiseTuple | Condition):
            self._misuse(f"cannot compare a promise ({op}) with {other!r}", _CONDITION_HINT)
        else:
            value = other.value if isinstance(other, Enum) else other
            try:
                kind = spec_conditions.literal_kind(value)
            except ValueError as exc:
                self._misuse(f"cannot compare a promise ({op}) with {other!r}: {exc}", _IN_A_TASK)
            right = ir.LiteralBinding(value=value)
            right_type = None if kind is None else ir.LiteralType(kind=kind)
            shown = f"constant {other!r}"
            item = self._type.item if self._type.kind is ir.TypeKind.OPTIONAL else self._type
            if (
                item is not None
                and item.kind is ir.TypeKind.ENUM
                and isinstance(value, str)
                and value not in (item.values or [])
            ):
                self._misuse(
                    f"{item.describe()} has no value {value!r} (its values: "
                    f"{', '.join(item.values or [])})",
                    "compare with one of its members",
                )
        problem = spec_conditions.comparable(op, self._type, right_type)
        if problem:
            self._misuse(f"cannot compare ({op}) with {shown}: {problem}", _CONDITION_HINT)
        comparison = ir.Comparison(op=typing.cast(Any, op), left=left, right=right)
        return Condition(comparison, promises, workflow=self._workflow)

    def __hash__(self) -> int:
        # Not hashable: `mode in {"a", "b"}` would look the promise up by identity and quietly
        # be False, compiling the wrong branch instead of failing here.
        self._misuse(
            "a promise cannot be hashed (`in {...}`, a set member, a dict key)", _NO_BRANCHING
        )

    def __setitem__(self, key: object, value: object) -> NoReturn:
        self._misuse("cannot assign into a promise (`x[0] = ...`)", _IN_A_TASK)

    def __delitem__(self, key: object) -> NoReturn:
        self._misuse("cannot delete from a promise (`del x[0]`)", _IN_A_TASK)

    def __str__(self) -> str:
        self._misuse("cannot convert a promise to str (str(), f-string)", _IN_A_TASK)

    def __format__(self, format_spec: str) -> str:
        self._misuse("cannot format a promise (f-string, format())", _IN_A_TASK)

    def __int__(self) -> int:
        self._misuse("cannot convert a promise to int", _IN_A_TASK)

    def __float__(self) -> float:
        self._misuse("cannot convert a promise to float", _IN_A_TASK)

    def __index__(self) -> int:
        self._misuse("cannot use a promise as an index", _IN_A_TASK)

    def __round__(self, ndigits: int | None = None) -> NoReturn:
        self._misuse("cannot round a promise", _IN_A_TASK)

    def __trunc__(self) -> NoReturn:
        self._misuse("cannot truncate a promise (math.trunc)", _IN_A_TASK)

    def __floor__(self) -> NoReturn:
        self._misuse("cannot floor a promise (math.floor)", _IN_A_TASK)

    def __ceil__(self) -> NoReturn:
        self._misuse("cannot ceil a promise (math.ceil)", _IN_A_TASK)


def _arithmetic(symbol: str) -> Any:
    hint = _IN_A_TASK
    if symbol in ("&", "|", "~"):
        hint = (
            f"to combine conditions, `{symbol}` them with each comparison in parentheses: "
            "`(x > 1) & (y < 2)`; a bool promise is a condition as `flag.is_true()`"
        )

    def operator(self: Promise, *other: object) -> NoReturn:
        self._misuse(f"cannot apply `{symbol}` to a promise", hint)

    return operator


for _name, _symbol in {
    "add": "+",
    "sub": "-",
    "mul": "*",
    "truediv": "/",
    "floordiv": "//",
    "mod": "%",
    "pow": "**",
    "matmul": "@",
    "and": "&",
    "or": "|",
    "xor": "^",
    "lshift": "<<",
    "rshift": ">>",
}.items():
    for _form in (f"__{_name}__", f"__r{_name}__", f"__i{_name}__"):
        setattr(Promise, _form, _arithmetic(_symbol))
for _name, _symbol in {"neg": "-", "pos": "+", "abs": "abs()", "invert": "~"}.items():
    setattr(Promise, f"__{_name}__", _arithmetic(_symbol))


class PromiseTuple:
    """The outputs of a task call whose return type is a NamedTuple: one promise per field.

    It reads like the NamedTuple the task returns: `res.loss` is the promise of output `loss`,
    `model, loss = train(...)` unpacks, `res[0]` indexes; its length is known at compile time.
    Anything that needs values (`if res:`, comparisons) fails like on a promise.
    """

    __slots__ = ("_tuple_type", "_promises", "_origin")

    def __init__(self, tuple_type: type, promises: dict[str, Promise], *, origin: str) -> None:
        self._tuple_type = tuple_type  # the declared NamedTuple class
        self._promises = promises  # output name -> promise, in field order
        self._origin = origin  # "node 'n0-train', task 'pipeline.train'"

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={p!r}" for n, p in self._promises.items())
        return f"<PromiseTuple {self._tuple_type.__name__}({fields})>"

    def _first(self) -> Promise:
        return next(iter(self._promises.values()))

    def _misuse(self, detail: str, hint: str, error: type[WorkflowCompileError]) -> NoReturn:
        first = self._first()
        raise error(
            f"{detail} ({self._describe()})",
            location=caller_location(),
            workflow=first._workflow,
            task=first._producer(),
            actual=self._tuple_type.__name__,
            hint=hint,
        )

    def _describe(self) -> str:
        return f"outputs {', '.join(self._promises)} of {self._origin}"

    def __getattr__(self, name: str) -> Promise:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._promises[name]
        except KeyError:
            self._misuse(
                f"{self._tuple_type.__name__} has no output '{name}'",
                f"its outputs are: {', '.join(self._promises)}",
                PromiseAttributeError,
            )

    def __iter__(self) -> Iterator[Promise]:
        return iter(self._promises.values())

    def __len__(self) -> int:
        return len(self._promises)

    def __getitem__(self, index: int) -> Promise:
        if not isinstance(index, int):
            self._misuse(
                f"index a task's outputs by position (an int), got {index!r}",
                "or read an output by name: `res.<field>`",
                WorkflowCompileError,
            )
        return list(self._promises.values())[index]

    def __bool__(self) -> bool:
        self._misuse("task outputs have no truth value", _NO_BRANCHING, WorkflowCompileError)

    def __eq__(self, other: object) -> bool:
        self._misuse("cannot compare task outputs (==)", _NO_BRANCHING, WorkflowCompileError)

    def __hash__(self) -> int:
        # As for a promise: an identity lookup (`res in {...}`) would be quietly False.
        self._misuse(
            "task outputs cannot be hashed (`in {...}`, a set member, a dict key)",
            _NO_BRANCHING,
            WorkflowCompileError,
        )


class Condition:
    """A condition on promises (`x > 3`, `(a == "b") & flag.is_true()`): what a branch of a
    `conditional` runs under. It has no truth value in the workflow body: `if x > 3:` fails
    here, at its line, pointing to `conditional`."""

    __slots__ = ("_ir", "_promises", "_workflow")

    def __init__(self, condition: ir.Condition, promises: list[Promise], *, workflow: str) -> None:
        self._ir = condition
        self._promises = promises  # what it reads, to check they exist where it is used
        self._workflow = workflow

    def __repr__(self) -> str:
        return f"<Condition {self._ir.model_dump_json()}>"

    def _misuse(self, detail: str) -> NoReturn:
        reads = "; ".join(dict.fromkeys(p._origin for p in self._promises))
        raise WorkflowCompileError(
            f"{detail} (it reads the {reads})",
            location=caller_location(),
            workflow=self._workflow,
            task=self._promises[0]._producer(),
            actual="condition on promises",
            hint=_CONDITION_HINT,
        )

    def __bool__(self) -> bool:
        self._misuse(
            "a condition on promises has no truth value in the workflow body "
            "(if/while/and/or/not, `in`)"
        )

    def _combine(self, other: object, symbol: str) -> Condition:
        if not isinstance(other, Condition):
            self._misuse(f"`{symbol}` combines two conditions, got {other!r}")
        terms: list[ir.Condition] = []
        kind = ir.AllOf if symbol == "&" else ir.AnyOf
        for side in (self._ir, other._ir):
            terms.extend(side.conditions if isinstance(side, kind) else [side])
        return Condition(
            kind(conditions=terms), self._promises + other._promises, workflow=self._workflow
        )

    def __and__(self, other: object) -> Condition:
        return self._combine(other, "&")

    def __or__(self, other: object) -> Condition:
        return self._combine(other, "|")

    def __rand__(self, other: object) -> Condition:
        self._misuse(f"`&` combines two conditions, got {other!r}")

    def __ror__(self, other: object) -> Condition:
        self._misuse(f"`|` combines two conditions, got {other!r}")

    def __invert__(self) -> Condition:
        return Condition(ir.Not(condition=self._ir), self._promises, workflow=self._workflow)

    def __hash__(self) -> int:
        self._misuse("a condition cannot be hashed (`in {...}`, a set member, a dict key)")


def contains_promise(value: Any) -> bool:
    """Whether a constant written in a workflow body hides a promise inside a container."""
    if isinstance(value, Promise | PromiseTuple | Condition):
        return True
    if isinstance(value, list | tuple | set | frozenset):
        return any(contains_promise(item) for item in value)
    if isinstance(value, dict):
        return any(contains_promise(item) for item in value.values())
    if hasattr(type(value), "__dataclass_fields__") and not isinstance(value, type):
        return any(contains_promise(getattr(value, f)) for f in type(value).__dataclass_fields__)
    return False
