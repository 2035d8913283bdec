"""What a spec's schema cannot say about its bindings, checked before the control plane takes it.

The compiler only writes bindings that name what exists and fit where they are bound, but a spec
sent to the REST API may have been written by anyone. `binding_problems` finds each binding that
names a workflow input, node, task or node output the spec lacks, and each list or dict binding
(what a list or dict of promises in a workflow body compiles to) that does not fit the type it
is bound to, item by item, so that registration refuses the spec with a reason instead of an
execution failing on it later.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetflow import ir
from fleetflow.errors import LiteralValidationError
from fleetflow.types import is_assignable, validate_literal


@dataclass(frozen=True)
class BindingProblem:
    """`field`: where in the spec (`nodes[2].inputs.xs.items[1]`); `message`: what is wrong."""

    field: str
    message: str


def _list_of(item: ir.LiteralType) -> ir.LiteralType:
    return ir.LiteralType(kind=ir.TypeKind.LIST, item=item)


class _Checker:
    def __init__(self, spec: ir.WorkflowSpec) -> None:
        self.spec = spec
        self.nodes = {node.id: node for node in spec.nodes}
        self.problems: list[BindingProblem] = []

    def report(self, field: str, message: str) -> None:
        self.problems.append(BindingProblem(field, message))

    def source_type(self, binding: ir.LeafBinding, field: str) -> ir.LiteralType | None:
        """The type of what an input or node output binding names; None (and a problem)
        when the spec lacks it; None for a literal, which has no type of its own."""
        if isinstance(binding, ir.InputBinding):
            variable = self.spec.interface.input(binding.input)
            if variable is None:
                self.report(field, f"the workflow has no input '{binding.input}'")
                return None
            return variable.type
        if isinstance(binding, ir.NodeOutputBinding):
            node = self.nodes.get(binding.node_id)
            task = self.spec.tasks.get(node.task) if node is not None else None
            if node is None or task is None:
                self.report(field, f"the spec has no node '{binding.node_id}'")
                return None
            output = task.interface.output(binding.output)
            if output is None:
                self.report(
                    field, f"node '{node.id}' (task '{task.name}') has no output '{binding.output}'"
                )
                return None
            return node.map.output_type(output.type) if node.map is not None else output.type
        return None

    def check(self, binding: ir.Binding, target: ir.LiteralType | None, field: str) -> None:
        """Check `binding`'s references; type-check it against `target` when it is a list or
        dict binding, or an item of one (None: the target is unknown, references only)."""
        if not isinstance(binding, ir.ListBinding | ir.DictBinding):
            self.check_leaf(binding, None, field)
            return
        self.check_collection(binding, target, field)

    def check_leaf(
        self, binding: ir.LeafBinding, target: ir.LiteralType | None, field: str
    ) -> None:
        source = self.source_type(binding, field)
        if target is None:
            return
        if isinstance(binding, ir.LiteralBinding):
            try:
                validate_literal(binding.value, target, field)
            except LiteralValidationError as exc:
                self.report(exc.path or field, exc.reason)
        elif source is not None and not is_assignable(source, target):
            self.report(
                field, f"expected {target.describe()}, got {source.describe()} ({_named(binding)})"
            )

    def check_collection(
        self, binding: ir.ListBinding | ir.DictBinding, target: ir.LiteralType | None, field: str
    ) -> None:
        if target is not None and target.kind is ir.TypeKind.OPTIONAL:
            target = target.item
        item_type: ir.LiteralType | None = None
        if target is not None:
            wanted = ir.TypeKind.LIST if isinstance(binding, ir.ListBinding) else ir.TypeKind.DICT
            if target.kind is not wanted:
                self.report(field, f"expected {target.describe()}, got a {binding.kind} binding")
            else:
                item_type = target.item
        if isinstance(binding, ir.DictBinding) and item_type is not None and target is not None:
            self.check_keys(binding, target, field)
        items = (
            [(f"{field}.items[{index}]", item) for index, item in enumerate(binding.items)]
            if isinstance(binding, ir.ListBinding)
            else [(f"{field}.items.{key}", item) for key, item in binding.items.items()]
        )
        for item_field, item in items:
            if isinstance(item, ir.ListBinding | ir.DictBinding):
                self.check_collection(item, item_type, item_field)
            else:
                self.check_leaf(item, item_type, item_field)

    def check_keys(self, binding: ir.DictBinding, target: ir.LiteralType, field: str) -> None:
        # The keys alone: a dict of the target's key type whose values are all None.
        keys_only = ir.LiteralType(
            kind=ir.TypeKind.DICT,
            key=target.key,
            item=ir.LiteralType(
                kind=ir.TypeKind.OPTIONAL, item=ir.LiteralType(kind=ir.TypeKind.INTEGER)
            ),
        )
        try:
            validate_literal(dict.fromkeys(binding.items), keys_only, f"{field}.items")
        except LiteralValidationError as exc:
            self.report(exc.path or field, exc.reason)


def _named(binding: ir.LeafBinding) -> str:
    if isinstance(binding, ir.InputBinding):
        return f"workflow input '{binding.input}'"
    assert isinstance(binding, ir.NodeOutputBinding)
    return f"output '{binding.output}' of node '{binding.node_id}'"


def node_cycle(spec: ir.WorkflowSpec) -> list[str]:
    """Node ids around one cycle of the graph (the first repeated at the end), if any: such a
    workflow could never run its nodes. References to missing nodes are left out."""
    upstream = {node.id: node.upstream for node in spec.nodes}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in upstream:
        if state.get(root):
            continue
        path: list[str] = [root]
        pending = [iter(upstream[root])]
        state[root] = 1
        while pending:
            following = next(pending[-1], None)
            if following is None:
                state[path.pop()] = 2
                pending.pop()
            elif following in upstream and state.get(following) == 1:
                return [*path[path.index(following) :], following]
            elif following in upstream and not state.get(following):
                state[following] = 1
                path.append(following)
                pending.append(iter(upstream[following]))
    return []


def binding_problems(spec: ir.WorkflowSpec) -> list[BindingProblem]:
    """Every binding of `spec` (nodes' inputs and the workflow's outputs) that names a workflow
    input, a node, a task or a node output the spec does not have, nodes that consume each
    other in a cycle, and every list or dict binding whose kind or items do not fit the type
    it is bound to (for a mapped input, a list of the parameter's type). Empty for a spec the
    compiler wrote."""
    checker = _Checker(spec)
    for index, node in enumerate(spec.nodes):
        task = spec.tasks.get(node.task)
        if task is None:
            checker.report(
                f"nodes[{index}].task", f"node '{node.id}' runs task '{node.task}', not in tasks"
            )
        over = node.map.over if node.map is not None else []
        for name, binding in node.inputs.items():
            field = f"nodes[{index}].inputs.{name}"
            target = None
            if task is not None:
                variable = task.interface.input(name)
                if variable is None:
                    checker.report(field, f"task '{task.name}' has no input '{name}'")
                else:
                    target = _list_of(variable.type) if name in over else variable.type
            checker.check(binding, target, field)
    cycle = node_cycle(spec)
    if cycle:
        checker.report("nodes", f"the nodes consume each other in a cycle: {' -> '.join(cycle)}")
    for name, binding in spec.outputs.items():
        field = f"outputs.{name}"
        output = spec.interface.output(name)
        if output is None:
            checker.report(field, f"the workflow's interface has no output '{name}'")
        checker.check(binding, output.type if output else None, field)
    return checker.problems
