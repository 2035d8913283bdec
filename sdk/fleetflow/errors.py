"""Errors the SDK raises, and how a task's failure is shown to the person who wrote it.

Each error subclasses the builtin a Python user would expect. `format_user_traceback` renders
an exception the way its author needs to read it, locally and from a cluster alike: only their
own frames, never the SDK's machinery, with paths inside a code bundle shown relative to it.
"""

from __future__ import annotations

import functools
import os
import traceback
from collections.abc import Iterator
from pathlib import Path


class FleetflowError(Exception):
    """Base of every error Fleetflow raises on purpose."""


class UnsupportedTypeError(FleetflowError, TypeError):
    """A Python type that Fleetflow cannot carry between tasks."""


class LiteralValidationError(FleetflowError, ValueError):
    """A value does not match its declared type. `path` names where (`inputs.n`, `[2].lr`)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.reason = message
        super().__init__(self._describe())

    def _describe(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class TaskOutputError(LiteralValidationError):
    """A task returned a value that does not match its return annotation.

    Raised where the result is converted, locally and in the task runtime on a cluster alike.
    The message names the task, the `file:line` of its `def`, what it returned and what was
    expected: `task train (pipeline.py:12) returned str 'abc', expected int`; for a field of a
    NamedTuple return type, `... returned str 'x' as output 'test', expected list[float]`; and
    where the mismatch is deeper or of another kind, where and why after a `;`
    (`...expected list[float]; at [2]: expected float, got str 'x'`).

    Attributes:
        task: the task's name (`module.function`).
        location: `file:line` of the task's `def`.
        output: the NamedTuple field whose value is wrong, or None.
        returned: what came back, as the message shows it (`str 'abc'`).
        expected: the annotation (`int`, `Split (2 outputs: train, test)`).
        detail: where inside the value and why, when the value is not simply of another type.
        path: where the value was checked (`n1-train.outputs.o0[2]`), as for any
            `LiteralValidationError`; `reason` is the mismatch found there.
    """

    def __init__(
        self,
        path: str,
        reason: str,
        *,
        task: str,
        function: str,
        location: str,
        returned: str,
        expected: str,
        output: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.task = task
        self.function = function
        self.location = location
        self.returned = returned
        self.expected = expected
        self.output = output
        self.detail = detail
        super().__init__(path, reason)

    def _describe(self) -> str:
        as_output = f" as output '{self.output}'" if self.output else ""
        message = (
            f"task {self.function} ({self.location}) returned {self.returned}{as_output}, "
            f"expected {self.expected}"
        )
        return f"{message}; {self.detail}" if self.detail else message


class InvalidOptionError(FleetflowError, ValueError):
    """A `@task` option or a `Resources` field is out of range or of the wrong kind."""


class DefinitionError(FleetflowError, TypeError):
    """A task or workflow is written in a way Fleetflow cannot compile.

    Raised on the engineer's machine at import time, so the message carries everything needed
    to fix it without a debugger: who (`workflow`, `task`, `parameter`), where (`location`,
    `file:line`) and what (`expected` vs `actual` type).
    """

    def __init__(
        self,
        detail: str,
        *,
        location: str,
        workflow: str | None = None,
        task: str | None = None,
        parameter: str | None = None,
        expected: str | None = None,
        actual: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.detail = detail
        self.location = location
        self.workflow = workflow
        self.task = task
        self.parameter = parameter
        self.expected = expected
        self.actual = actual
        self.hint = hint
        if workflow is not None:
            subject = f"workflow '{workflow}'"
        elif task is not None:
            subject = f"task '{task}'"
        else:
            subject = "definition"
        message = f"{subject} at {location}: {detail}"
        if hint:
            message += f"\n  hint: {hint}"
        super().__init__(message)


class TaskDefinitionError(DefinitionError):
    """A `@task` signature Fleetflow cannot type: a missing or unsupported annotation, etc."""


class WorkflowCompileError(DefinitionError):
    """The body or signature of a `@workflow` does not type-check or cannot be compiled."""


class PromiseAttributeError(WorkflowCompileError, AttributeError):
    """Attribute access on a promise in a workflow body (`data.points`).

    Also an `AttributeError`, so `hasattr(promise, ...)` in generic tooling stays false
    instead of blowing up, while direct access still explains what went wrong.
    """


class ReferenceWorkflowError(FleetflowError, RuntimeError):
    """A reference to a registered workflow was run where only the platform can run it."""


class ConditionalFailedError(FleetflowError, RuntimeError):
    """A workflow run took a conditional's `.fail("message")` branch; the message is its own."""


class WorkflowInputError(FleetflowError, ValueError):
    """Workflow inputs that are unknown, missing or unparseable (`input 'lr': expected float`)."""

    def __init__(self, message: str, *, input_name: str | None = None) -> None:
        self.input_name = input_name
        super().__init__(message)


class WorkflowOutputError(FleetflowError, ValueError):
    """Workflow outputs that do not match the workflow's declared return type."""


class MapInputError(FleetflowError, ValueError):
    """The inputs of a `map_task` cannot be split into elements (lists of different lengths,
    no list to map over when called outside a workflow)."""


class MapElementsFailedError(FleetflowError, RuntimeError):
    """More elements of a `map_task(..., min_success_ratio=...)` failed than its ratio allows;
    says how many of how many, and one failed element's error (also its `__cause__`)."""


# ------------------------------------------------------------------ showing a task's failure


def shown_path(filename: str) -> str:
    """`filename` relative to the working directory when it is below it (`examples/x.py`, as
    a user types it; in the task runtime, whose working directory is the unpacked code bundle,
    the path inside the bundle), else as is."""
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # another drive
        return filename
    return filename if relative.startswith("..") else relative


@functools.cache
def _machinery_dirs() -> tuple[Path, ...]:
    """Where the frames that run a task, rather than the task itself, come from: this package
    (the runtime, the local runner), the import system and the thread pool map elements run in."""
    import concurrent.futures
    import importlib

    return tuple(
        Path(module.__file__).resolve().parent
        for module in (importlib, concurrent.futures)
        if module.__file__
    ) + (Path(__file__).resolve().parent,)


@functools.cache
def is_machinery_frame(filename: str) -> bool:
    """Whether a frame of `filename` belongs to what runs the task, not to its author's code."""
    if filename.startswith("<frozen importlib."):
        return True
    try:
        path = Path(filename).resolve()
    except (OSError, ValueError):
        return False
    return any(path.is_relative_to(directory) for directory in _machinery_dirs())


def _chain(shown: traceback.TracebackException) -> Iterator[traceback.TracebackException]:
    """`shown` and every exception it chains to: its cause, its context, a group's members."""
    pending = [shown]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        chained = [current.__cause__, current.__context__, *(current.exceptions or [])]
        pending.extend(other for other in chained if other is not None)


def user_traceback(exc: BaseException) -> traceback.TracebackException:
    """`exc` as a `TracebackException` without the SDK's own frames, in it and in the
    exceptions it chains to."""
    shown = traceback.TracebackException.from_exception(exc)
    for current in _chain(shown):
        current.stack = traceback.StackSummary.from_list(
            [frame for frame in current.stack if not is_machinery_frame(frame.filename)]
        )
    return shown


def has_user_frames(shown: traceback.TracebackException) -> bool:
    """Whether a `user_traceback` holds any frame of its author's code (in the chain too)."""
    return any(current.stack for current in _chain(shown))


def format_user_traceback(exc: BaseException, *, bundle_root: Path | None = None) -> str:
    """The traceback of `exc` as its author needs it: their frames (and those of the libraries
    they called), none of the SDK's, then the exception with its notes; no `Traceback` header
    when no frame is theirs (a `FleetflowError` raised before or after their code ran says
    all there is to say). An exception that is not a `FleetflowError` and comes from none of
    their frames is a failure of the SDK or of what it runs on: it keeps its whole traceback,
    which is what a bug report needs.

    With `bundle_root`, the directory a code bundle was unpacked into, paths below it are shown
    relative to it (`pipeline.py`, not `/var/lib/agent/attempts/at-1/code/pipeline.py`), in
    frames and messages alike.
    """
    shown = user_traceback(exc)
    if has_user_frames(shown) or isinstance(exc, FleetflowError):
        text = "".join(shown.format())
    else:
        text = "".join(traceback.format_exception(exc))
    return strip_bundle_root(text, bundle_root)


def strip_bundle_root(text: str, bundle_root: Path | None) -> str:
    """`text` with `<bundle_root>/` removed from the paths in it."""
    if bundle_root is None:
        return text
    return text.replace(f"{bundle_root}{os.sep}", "")


class DynamicWorkflowError(FleetflowError, RuntimeError):
    """The sub-DAG a `@dynamic` task built when it ran is refused: too many nodes, dynamic
    tasks nested too deep. The message names the task and the bound."""
