"""Sub-workflows: a `@workflow` called in another workflow's body, inlined into its spec.

The callee was compiled when it was decorated; calling it in a body copies its nodes and
`.fail` branches into the caller's, each id prefixed with the call's id (`n2-train/n0-prep`),
its input bindings replaced by the call's argument bindings and, when the call is made in a
branch of a conditional, every copied guard conjoined with the branch's. Its outputs become
the caller's promises of the copied bindings. The caller's spec is then an ordinary flat DAG,
so the local runner, the control plane, its Temporal workflow and the agents run it unchanged;
the `/` in the ids is what `fleetflow executions get` shows as a tree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from fleetflow import ir

#: Sub-workflows nest at most this deep (a call in a workflow called in a workflow...).
MAX_NESTING = 8
#: Longest node id (the platform's `node_id` column); nesting makes ids longer.
MAX_NODE_ID_LENGTH = 128
#: Most nodes one workflow may have once its sub-workflows are inlined (the platform's default
#: `max_workflow_nodes`).
MAX_INLINED_NODES = 10_000

SEPARATOR = "/"


class InliningError(ValueError):
    """A sub-workflow that cannot be inlined; the message says why (the compiler adds where)."""


@dataclass(frozen=True)
class Inlined:
    """The callee's nodes and failures as the caller's, and its outputs' bindings by name."""

    nodes: list[ir.Node]
    failures: list[ir.Failure]
    outputs: dict[str, ir.Binding]


def nesting(node_id: str) -> int:
    """How many sub-workflow calls a node id is inside (0 for a node of the workflow's own)."""
    return node_id.count(SEPARATOR)


def inline(
    spec: ir.WorkflowSpec,
    call_id: str,
    arguments: Mapping[str, ir.Binding],
    guard: ir.Condition | None,
) -> Inlined:
    """`spec`'s nodes, failures and outputs for a call with id `call_id`.

    Args:
        arguments: the caller's binding for every input of `spec` (defaults filled in).
        guard: the condition of the branch the call is made in; None outside conditionals.

    Raises:
        InliningError: nesting too deep, an id too long, or a condition of the callee that
            compares an input bound to a conditional's output.
    """
    depth = 1 + max((nesting(node.id) for node in spec.nodes), default=0)
    if depth > MAX_NESTING:
        raise InliningError(
            f"sub-workflows nest {depth} deep here; at most {MAX_NESTING} levels are supported"
        )
    rewrite = _Rewriter(spec.name, call_id, arguments)
    nodes: list[ir.Node] = []
    for node in spec.nodes:
        when = _conjoin(guard, rewrite.condition(node.when) if node.when is not None else None)
        nodes.append(
            ir.Node(
                id=rewrite.node_id(node.id),
                task=node.task,
                inputs={name: rewrite.binding(b) for name, b in node.inputs.items()},
                map=node.map,
                when=when,
            )
        )
    failures = []
    for failure in spec.failures:
        when = _conjoin(guard, rewrite.condition(failure.when))
        assert when is not None
        failures.append(
            ir.Failure(id=rewrite.node_id(failure.id), when=when, message=failure.message)
        )
    outputs = {name: rewrite.binding(b) for name, b in spec.outputs.items()}
    return Inlined(nodes=nodes, failures=failures, outputs=outputs)


def _conjoin(guard: ir.Condition | None, when: ir.Condition | None) -> ir.Condition | None:
    """`guard and when`, flattened (`and` is evaluated in order, so flattening keeps it)."""
    terms: list[ir.Condition] = []
    for term in (guard, when):
        if isinstance(term, ir.AllOf):
            terms += term.conditions
        elif term is not None:
            terms.append(term)
    if not terms:
        return None
    if len(terms) == 1:
        return terms[0]
    if len(terms) > ir.MAX_CONDITION_TERMS:
        raise InliningError(
            f"a condition would have {len(terms)} terms once the sub-workflow is inlined in "
            f"its branch; at most {ir.MAX_CONDITION_TERMS} are supported"
        )
    return ir.AllOf(conditions=terms)


class _Rewriter:
    def __init__(self, workflow: str, call_id: str, arguments: Mapping[str, ir.Binding]) -> None:
        self._workflow = workflow
        self._call_id = call_id
        self._arguments = arguments

    def node_id(self, node_id: str) -> str:
        new = f"{self._call_id}{SEPARATOR}{node_id}"
        if len(new) > MAX_NODE_ID_LENGTH:
            raise InliningError(
                f"node id '{new[:60]}...' would be {len(new)} characters long; at most "
                f"{MAX_NODE_ID_LENGTH} are supported (sub-workflows nested too deep)"
            )
        return new

    def _output(self, binding: ir.NodeOutputBinding) -> ir.NodeOutputBinding:
        return ir.NodeOutputBinding(node_id=self.node_id(binding.node_id), output=binding.output)

    def binding(self, binding: ir.Binding) -> ir.Binding:
        match binding:
            case ir.InputBinding():
                return self._arguments[binding.input]
            case ir.NodeOutputBinding():
                return self._output(binding)
            case ir.SelectBinding():
                return ir.SelectBinding(options=[self._output(o) for o in binding.options])
            case ir.ListBinding():
                return ir.ListBinding(items=[self.binding(item) for item in binding.items])
            case ir.DictBinding():
                return ir.DictBinding(
                    items={key: self.binding(item) for key, item in binding.items.items()}
                )
            case ir.LiteralBinding():
                return binding
        raise AssertionError(binding)  # pragma: no cover

    def _operand(self, operand: ir.Operand) -> ir.Operand:
        if isinstance(operand, ir.InputBinding):
            replaced = self._arguments[operand.input]
            if isinstance(replaced, ir.InputBinding | ir.NodeOutputBinding | ir.LiteralBinding):
                return replaced
            raise InliningError(
                f"workflow '{self._workflow}' branches on its input '{operand.input}', which "
                "this call binds to the output of a conditional; a conditional's output cannot "
                "be compared yet"
            )
        if isinstance(operand, ir.NodeOutputBinding):
            return self._output(operand)
        return operand

    def condition(self, condition: ir.Condition) -> ir.Condition:
        rewrite: Callable[[ir.Condition], ir.Condition] = self.condition
        match condition:
            case ir.Comparison():
                return ir.Comparison(
                    op=condition.op,
                    left=self._operand(condition.left),
                    right=self._operand(condition.right),
                )
            case ir.AllOf():
                return ir.AllOf(conditions=[rewrite(c) for c in condition.conditions])
            case ir.AnyOf():
                return ir.AnyOf(conditions=[rewrite(c) for c in condition.conditions])
            case ir.Not():
                return ir.Not(condition=rewrite(condition.condition))
        raise AssertionError(condition)  # pragma: no cover
