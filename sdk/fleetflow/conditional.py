"""`conditional`: branches in a workflow body, decided when the workflow runs.

    result = (
        conditional("size")
        .if_(n > 100).then(big(n=n))
        .elif_((n > 10) & fast.is_true()).then(medium(n=n))
        .else_().then(small(n=n))
    )

The body still runs once, at compile time: every branch's task calls are recorded, each node
guarded by its branch's condition (`ir.Node.when`: not the earlier cases', and this one's,
conjoined with the enclosing branch's when nested). When the workflow runs, the nodes of the
branch taken run and the others are SKIPPED. The conditional's value is the output of the
branch taken (`ir.SelectBinding`); every branch returns the same type (a mix of `T` and
`Optional[T]` gives `Optional[T]`). An `else_()` is required, so that the value always exists;
`.fail("message")` instead of `.then(...)` ends the execution with that message when its branch
is taken.

The builder tracks the case being written on the active `WorkflowCompilation`: a task called
while a case is open (`.then(train(data=prep(x=...)))` calls both) belongs to that case, and
its promises may only be used inside it. Misuse is a `WorkflowCompileError` naming the line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from fleetflow import ir
from fleetflow.errors import WorkflowCompileError
from fleetflow.promise import Condition, Promise, PromiseTuple, caller_location

if TYPE_CHECKING:
    from fleetflow.compiler import WorkflowCompilation

_USAGE = (
    'write `conditional("name").if_(cond).then(task_a(...)).elif_(cond).then(task_b(...))'
    '.else_().then(task_c(...))` (or `.else_().fail("message")`)'
)


@dataclass
class _Case:
    scope: tuple[int, ...]
    guard: ir.Condition
    describe: str  # "the if_ branch of conditional 'size' at file:line"
    is_else: bool = False


@dataclass
class _Result:
    """What one case returned: None for a `.fail`, else the promise (or None: no output)."""

    failed: bool
    promise: Promise | None = None


@dataclass
class _State:
    cases: list[_Case] = field(default_factory=list)
    results: list[_Result] = field(default_factory=list)
    earlier: list[ir.Condition] = field(default_factory=list)  # the cases' own conditions
    open: _Case | None = None
    finished: bool = False


class Conditional:
    """A conditional being written; made by `conditional(name)`."""

    __slots__ = ("_name", "_compilation", "_location", "_scope", "_guard", "_state")

    def __init__(self, name: str, compilation: WorkflowCompilation, location: str) -> None:
        self._name = name
        self._compilation = compilation
        self._location = location
        # The branch it is written in, and that branch's guard: its cases conjoin it.
        self._scope, self._guard = compilation.current_branch()
        self._state = _State()

    def __repr__(self) -> str:
        return f"<conditional {self._name!r} at {self._location}>"

    def __bool__(self) -> bool:
        self._fail(
            f"conditional '{self._name}' has no truth value",
            "its value is the result of `.else_().then(...)`",
        )

    @property
    def describe(self) -> str:
        return f"conditional '{self._name}' ({self._location})"

    def _fail(self, detail: str, hint: str | None = _USAGE) -> NoReturn:
        raise WorkflowCompileError(
            detail,
            location=caller_location(),
            workflow=self._compilation.workflow_name,
            hint=hint,
        )

    def _check_current(self, method: str) -> None:
        state = self._state
        if state.finished:
            self._fail(f"{self.describe} is finished (it has its else_): `.{method}` after it")
        top = self._compilation.innermost_conditional()
        if top is not self:
            assert top is not None
            self._fail(
                f"`.{method}` on {self.describe} while {top.describe} inside it is not finished"
            )

    def _open(self, condition: Condition | None, method: str) -> Conditional:
        state = self._state
        own: list[ir.Condition] = []
        if condition is not None:
            if not isinstance(condition, Condition):
                self._fail(
                    f"`.{method}` of {self.describe} takes a condition on promises "
                    f"(`x > 3`, `flag.is_true()`), got {condition!r}",
                    "compare a promise: a constant or a Python bool is known before the "
                    "workflow runs, decide in the workflow body without a conditional",
                )
            for promise in condition._promises:
                if promise._owner is not self._compilation:
                    self._fail(
                        f"`.{method}` of {self.describe} got a condition on a promise of "
                        f"workflow '{promise._workflow}'; promises cannot cross workflows",
                        None,
                    )
                self._compilation.check_scope(promise, self._scope, f"the condition of `.{method}`")
            own = [condition._ir]
        terms = ([self._guard] if self._guard is not None else []) + [
            ir.Not(condition=c) for c in state.earlier
        ]
        terms += own
        guard: ir.Condition = terms[0] if len(terms) == 1 else ir.AllOf(conditions=terms)
        number = len(state.cases) + 1
        describe = f"the {method} branch (case {number}) of {self.describe}"
        case = _Case(
            scope=(*self._scope, self._compilation.new_branch_id(describe)),
            guard=guard,
            describe=describe,
            is_else=condition is None,
        )
        state.earlier += own
        state.cases.append(case)
        state.open = case
        return self

    def if_(self, condition: Condition) -> Conditional:
        """The first case: runs `.then(...)` when `condition` holds."""
        self._check_current("if_")
        if self._state.cases:
            self._fail(f"{self.describe} already has its if_: use `.elif_(...)`")
        return self._open(condition, "if_")

    def elif_(self, condition: Condition) -> Conditional:
        """A further case, when no earlier case held and `condition` does."""
        self._check_current("elif_")
        if any(case.is_else for case in self._state.cases):
            self._fail(f"`.elif_` of {self.describe} after its `.else_()`, the last case")
        self._require_between("elif_")
        return self._open(condition, "elif_")

    def else_(self) -> Conditional:
        """The last case, when no earlier case held; it ends the conditional."""
        self._check_current("else_")
        if any(case.is_else for case in self._state.cases):
            self._fail(f"{self.describe} already has its `.else_()`")
        self._require_between("else_")
        return self._open(None, "else_")

    def _require_between(self, method: str) -> None:
        state = self._state
        if not state.cases:
            self._fail(f"`.{method}` of {self.describe} before its `.if_(...)`")
        if state.open is not None:
            self._fail(
                f"`.{method}` of {self.describe} before the `.then(...)` (or `.fail(...)`) of "
                f"its case {len(state.cases)}"
            )

    def _require_open(self, method: str) -> _Case:
        self._check_current(method)
        case = self._state.open
        if case is None:
            after = "`.if_(...)`" if not self._state.cases else "`.elif_(...)` or `.else_()`"
            self._fail(f"`.{method}` of {self.describe} needs a case first: call {after}")
        assert case is not None
        return case

    def then(self, result: Any) -> Any:
        """What the open case runs: the result of a task called right here, `.then(t(...))`.

        Returns the conditional to go on with (`.elif_`, `.else_`), or after `.else_()` the
        promise of the conditional's value (None when the tasks return nothing)."""
        case = self._require_open("then")
        if isinstance(result, PromiseTuple):
            self._fail(
                f"`.then` of {self.describe} got all the outputs of {result._origin}; a "
                "branch returning several outputs is not supported yet",
                "have the task return one value (a dataclass, for instance)",
            )
        if result is not None:
            if not isinstance(result, Promise) or not self._compilation.made_in(result, case.scope):
                shown = result._origin if isinstance(result, Promise) else repr(result)
                self._fail(
                    f"`.then` of {self.describe} takes what a task called inside it returns, "
                    f"got {shown}",
                    "call the task right there: `.then(train(data=...))`",
                )
        self._state.results.append(_Result(failed=False, promise=result))
        return self._close(case)

    def fail(self, message: str) -> Any:
        """End the execution with `message` when the open case is taken."""
        case = self._require_open("fail")
        if not isinstance(message, str) or not message.strip():
            self._fail(f"`.fail` of {self.describe} takes a message (a non-empty str)", None)
        if len(message) > ir.MAX_FAIL_MESSAGE_LENGTH:
            self._fail(
                f"`.fail` message of {self.describe} is longer than "
                f"{ir.MAX_FAIL_MESSAGE_LENGTH} characters",
                None,
            )
        self._compilation.add_failure(case.guard, message, self._name)
        self._state.results.append(_Result(failed=True))
        return self._close(case)

    def _close(self, case: _Case) -> Any:
        self._state.open = None
        if not case.is_else:
            return self
        self._state.finished = True
        self._compilation.finish_conditional(self)
        return self._value()

    def _value(self) -> Promise | None:
        """The promise of the branch taken's output, checked to be the same in every branch."""
        taken = [r for r in self._state.results if not r.failed]
        promises = [r.promise for r in taken]
        if not promises or all(p is None for p in promises):
            return None
        if any(p is None for p in promises):
            shown = ", ".join(
                f"case {i + 1}: {p._type.describe() if p is not None else 'nothing (None)'}"
                for i, p in enumerate(promises)
            )
            self._fail(
                f"the branches of {self.describe} return different types ({shown})",
                "every branch returns the same type",
            )
        present = [p for p in promises if p is not None]
        literal_type = _common_type([p._type for p in present])
        if literal_type is None:
            shown = ", ".join(f"case {i + 1}: {p._type.describe()}" for i, p in enumerate(present))
            self._fail(
                f"the branches of {self.describe} return different types ({shown})",
                "every branch returns the same type (or the same type and its Optional)",
            )
        assert literal_type is not None
        options: list[ir.NodeOutputBinding] = []
        for promise in present:
            binding = promise._binding
            if isinstance(binding, ir.SelectBinding):  # a nested conditional's value
                options += binding.options
            else:
                assert isinstance(binding, ir.NodeOutputBinding)
                options.append(binding)
        return Promise(
            ir.SelectBinding(options=options),
            literal_type,
            origin=f"output of {self.describe}",
            workflow=self._compilation.workflow_name,
            owner=self._compilation,
            scope=self._scope,
        )


def _common_type(types: list[ir.LiteralType]) -> ir.LiteralType | None:
    """The type all branches return: one type, or a type and its Optional (the Optional)."""
    inner = [t.item if t.kind is ir.TypeKind.OPTIONAL and t.item is not None else t for t in types]
    if any(t != inner[0] for t in inner):
        return None
    optional = [t for t in types if t.kind is ir.TypeKind.OPTIONAL]
    return optional[0] if optional else types[0]


def conditional(name: str) -> Conditional:
    """Start a conditional in a workflow body (see the module's docstring)."""
    from fleetflow.compiler import active_compilation

    location = caller_location()
    compilation = active_compilation()
    if compilation is None:
        raise WorkflowCompileError(
            "conditional() is only used in the body of a @workflow",
            location=location,
            hint="in a task, use a plain `if`",
        )
    if not isinstance(name, str) or not name.strip():
        raise WorkflowCompileError(
            f"conditional() takes a name (a non-empty str), got {name!r}",
            location=location,
            workflow=compilation.workflow_name,
            hint=_USAGE,
        )
    built = Conditional(name, compilation, location)
    compilation.start_conditional(built)
    return built
