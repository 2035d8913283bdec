"""The conditions of a spec's conditionals: whether one holds (`evaluate`, on the operands'
JSON literals) and whether a spec's conditions are sound (`check_conditions`: operands exist,
comparisons are typed, guarded outputs are consumed only where they exist, nothing waits on
itself).

The condition models themselves (`ir.Comparison`, `ir.AllOf`...) are part of the spec, in `ir`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from fleetflow.ir import (
    AllOf,
    AnyOf,
    Binding,
    Comparison,
    Condition,
    InputBinding,
    LiteralBinding,
    LiteralType,
    NodeOutputBinding,
    Not,
    SelectBinding,
    TypeKind,
    WorkflowSpec,
    leaf_bindings,
)
from fleetflow.spec_checks import node_cycle

#: The operand types a comparison accepts; ordering (`<` ...) only on numbers and strings.
COMPARABLE_KINDS = frozenset(
    {TypeKind.INTEGER, TypeKind.FLOAT, TypeKind.STRING, TypeKind.BOOLEAN, TypeKind.ENUM}
)
ORDERED_KINDS = frozenset({TypeKind.INTEGER, TypeKind.FLOAT, TypeKind.STRING})


def evaluate(condition: Condition, resolve: Callable[[Binding], Any]) -> bool:
    """Whether `condition` holds, reading operands through `resolve` (a binding -> its JSON
    literal) only as far as needed: `and` stops at the first false term, `or` at the first true
    one, so a term may read what exists only when the terms before it hold."""
    match condition:
        case Comparison():
            left, right = resolve(condition.left), resolve(condition.right)
            return bool(_COMPARE[condition.op](left, right))
        case AllOf():
            return all(evaluate(term, resolve) for term in condition.conditions)
        case AnyOf():
            return any(evaluate(term, resolve) for term in condition.conditions)
        case Not():
            return not evaluate(condition.condition, resolve)
    raise AssertionError(condition)  # pragma: no cover


_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def literal_kind(value: Any) -> TypeKind | None:
    """The type kind of a constant operand; None for null. Raises ValueError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool):
        return TypeKind.BOOLEAN
    if isinstance(value, int):
        return TypeKind.INTEGER
    if isinstance(value, float):
        return TypeKind.FLOAT
    if isinstance(value, str):
        return TypeKind.STRING
    raise ValueError(
        f"a constant in a condition must be a number, a string, a bool or null, "
        f"got {type(value).__name__}"
    )


def comparable(op: str, left: LiteralType | None, right: LiteralType | None) -> str | None:
    """None when `left <op> right` can be evaluated; else why not. A None type is the
    constant null (only `==`/`!=` against an Optional)."""
    if left is None and right is None:
        return "compares null with null"
    if left is None or right is None:
        other = left or right
        assert other is not None
        if op not in ("==", "!=") or other.kind is not TypeKind.OPTIONAL:
            return "only an Optional can be compared with None, and only with == or !="
        return None
    if left.kind is TypeKind.OPTIONAL and left.item is not None and op in ("==", "!="):
        left = left.item
    if right.kind is TypeKind.OPTIONAL and right.item is not None and op in ("==", "!="):
        right = right.item
    for side in (left, right):
        if side.kind not in COMPARABLE_KINDS:
            return f"cannot compare a {side.describe()} (only int, float, str, bool and enums)"
    numbers = {TypeKind.INTEGER, TypeKind.FLOAT}
    same = left.kind == right.kind or {left.kind, right.kind} <= numbers
    if left.kind is TypeKind.ENUM and right.kind is TypeKind.STRING:
        same = True
    if right.kind is TypeKind.ENUM and left.kind is TypeKind.STRING:
        same = True
    if not same:
        return f"cannot compare {left.describe()} with {right.describe()}"
    if op not in ("==", "!=") and left.kind not in ORDERED_KINDS:
        return f"`{op}` does not order {left.describe()} values (use == or !=)"
    return None


def check_conditions(spec: WorkflowSpec) -> None:
    """What the platform relies on in a spec with conditionals; ValueError naming what is
    wrong. Every operand exists and the comparisons are typed; a select binding chooses
    among outputs of guarded nodes; only guarded nodes consume a guarded node's output
    directly; ids are unique."""
    nodes = {node.id: node for node in spec.nodes}
    ids = [node.id for node in spec.nodes] + [failure.id for failure in spec.failures]
    if len(set(ids)) != len(ids):
        raise ValueError("node and failure ids must be unique")

    def type_of(binding: Binding, where: str) -> LiteralType | None:
        if isinstance(binding, InputBinding):
            variable = spec.interface.input(binding.input)
            if variable is None:
                raise ValueError(f"{where}: the workflow has no input '{binding.input}'")
            return variable.type
        if isinstance(binding, NodeOutputBinding):
            node = nodes.get(binding.node_id)
            task = spec.tasks.get(node.task) if node is not None else None
            if node is None or task is None:
                raise ValueError(f"{where}: there is no node '{binding.node_id}'")
            variable = task.interface.output(binding.output)
            if variable is None:
                raise ValueError(
                    f"{where}: node '{binding.node_id}' has no output '{binding.output}'"
                )
            if node.map is not None:
                return LiteralType(kind=TypeKind.LIST, item=variable.type)
            return variable.type
        if isinstance(binding, LiteralBinding):
            kind = literal_kind(binding.value)
            return None if kind is None else LiteralType(kind=kind)
        raise ValueError(f"{where}: a select binding cannot be compared")

    def check(condition: Condition, where: str, depth: int = 0) -> None:
        if depth > 64:
            raise ValueError(f"{where}: conditions nested too deep")
        match condition:
            case Comparison():
                left = type_of(condition.left, where)
                right = type_of(condition.right, where)
                if isinstance(condition.left, LiteralBinding) and isinstance(
                    condition.right, LiteralBinding
                ):
                    # A sub-workflow's condition on an input its call binds to a constant
                    # (typed when both were compiled): equality with null, else comparable.
                    if left is None or right is None:
                        both = "== or !="
                        ok = condition.op in ("==", "!=")
                        problem = None if ok else f"only {both} compare a constant with null"
                    else:
                        problem = comparable(condition.op, left, right)
                else:
                    problem = comparable(condition.op, left, right)
                if problem:
                    raise ValueError(f"{where}: {problem}")
            case AllOf() | AnyOf():
                for term in condition.conditions:
                    check(term, where, depth + 1)
            case Not():
                check(condition.condition, where, depth + 1)

    def consumed(bindings: list[Binding], where: str, guarded: bool) -> None:
        for binding in (leaf for b in bindings for leaf in leaf_bindings(b)):
            if isinstance(binding, NodeOutputBinding):
                type_of(binding, where)
                if not guarded and nodes[binding.node_id].when is not None:
                    raise ValueError(
                        f"{where} consumes node '{binding.node_id}', which runs only in a "
                        "branch of a conditional, outside that branch"
                    )
            elif isinstance(binding, SelectBinding):
                for option in binding.options:
                    type_of(option, where)
                    if nodes[option.node_id].when is None:
                        raise ValueError(
                            f"{where}: a select binding chooses among guarded nodes' outputs, "
                            f"'{option.node_id}' is not guarded"
                        )

    for node in spec.nodes:
        where = f"node '{node.id}'"
        if node.when is not None:
            check(node.when, where)
        consumed(list(node.inputs.values()), where, node.when is not None)
    for failure in spec.failures:
        check(failure.when, f"failure '{failure.id}'")
    consumed(list(spec.outputs.values()), "the workflow's outputs", False)
    # A condition on its own node's output (or a later one's) would wait forever. (A failure
    # is upstream of nothing, so only nodes can wait on each other.)
    cycle = node_cycle(spec)
    if cycle:
        raise ValueError(f"nodes wait on each other: {' -> '.join(cycle)}")
