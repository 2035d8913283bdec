"""Load a workflow from a Python file the way the task runtime will import it remotely.

The file's directory is the code bundle's root and the file's stem its module name, so
`examples/hello.py` is imported as module `hello` both here and inside the task process.

`fleetflow run FILE TASK` runs a single `@task` as a workflow of one node (`task_as_workflow`):
the same input flags, local run, outputs and `--remote` as a workflow, with nothing to write.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetflow.errors import DefinitionError, FleetflowError

if TYPE_CHECKING:
    from fleetflow.task import TaskFunction
    from fleetflow.workflow import WorkflowFunction


class WorkflowNotFoundError(FleetflowError, LookupError):
    """The file or the workflow named on the command line does not exist."""


class WorkflowImportError(FleetflowError, ImportError):
    """Importing the workflow's file raised; the message names the file and the failing line."""


def load_workflow(file: Path, name: str, *, tasks: bool = False) -> tuple[WorkflowFunction, Path]:
    """Import `file` and return its workflow `name` and the bundle root directory.

    With `tasks`, `name` may also be a `@task` of the file, returned as a workflow of one node
    that runs it (`task_as_workflow`).

    Raises:
        WorkflowNotFoundError: no such file, not a `.py` file, or no `@workflow` (nor, with
            `tasks`, `@task`) called `name`; the message lists those the file has.
        WorkflowImportError: the file could not be imported (a syntax error, a missing module,
            an exception at import time, a module name taken by another module).
        DefinitionError: a task or workflow in the file does not compile.
    """
    from fleetflow.task import TaskFunction
    from fleetflow.workflow import WorkflowFunction

    path = file.resolve()
    if not path.exists():
        raise WorkflowNotFoundError(f"{file}: no such file")
    if not path.is_file() or path.suffix != ".py":
        raise WorkflowNotFoundError(f"{file}: not a Python file (expected a .py file)")
    root = path.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module_name = path.stem
    try:
        module = importlib.import_module(module_name)
    except DefinitionError:
        raise  # already names the file and line of the mistake
    except (Exception, SystemExit) as exc:  # SystemExit: a script that exits on import
        raise WorkflowImportError(_import_failure(file, root, exc)) from exc
    loaded_from = getattr(module, "__file__", None)
    if loaded_from is None or Path(loaded_from).resolve() != path:
        raise WorkflowImportError(
            f"cannot import {file} as module '{module_name}': that name is already taken by "
            f"{loaded_from or 'a namespace package'}; rename the file"
        )
    candidate = getattr(module, name, None)
    if tasks and isinstance(candidate, TaskFunction):
        return task_as_workflow(candidate), root
    if not isinstance(candidate, WorkflowFunction):
        available = sorted(
            attr for attr, value in vars(module).items() if isinstance(value, WorkflowFunction)
        )
        hint = (
            f"; workflows in {file}: {', '.join(available)}"
            if available
            else f"; {file} defines no @workflow"
        )
        if tasks:
            task_names = sorted(
                attr for attr, value in vars(module).items() if isinstance(value, TaskFunction)
            )
            hint += f"; tasks in {file}: {', '.join(task_names)}" if task_names else " nor @task"
            available += task_names
        closest = difflib.get_close_matches(name, available, n=1)
        if closest:
            hint += f"; did you mean {closest[0]!r}?"
        raise WorkflowNotFoundError(f"{file} has no @workflow named {name!r}{hint}")
    return candidate, root


def runnable_kind(wf: WorkflowFunction) -> str:
    """How messages name `wf`: "task" for a task run alone (`task_as_workflow`), else
    "workflow"."""
    return str(getattr(wf, "kind", "workflow"))


def task_as_workflow(task: TaskFunction[..., Any]) -> WorkflowFunction:
    """A workflow of one node that runs `task`: its inputs and outputs are the task's, its
    name, module and function the task's (so a remote run registers it under the task's
    name), and its `kind` is "task" (for the messages of `fleetflow run`)."""
    from fleetflow.workflow import WorkflowFunction

    def run_one_task(**inputs: Any) -> Any:
        result = task(**inputs)
        return None if task.output_type is None else result

    parameters = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=task.defaults.get(name, inspect.Parameter.empty),
            annotation=py_type,
        )
        for name, py_type in task.input_types.items()
    ]
    run_one_task.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    run_one_task.__annotations__ = {**task.input_types, "return": task.output_type}
    for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(run_one_task, attribute, getattr(task.fn, attribute))
    wf: WorkflowFunction = WorkflowFunction(run_one_task)
    wf.kind = "task"  # type: ignore[attr-defined]
    return wf


def workflow_source(wf: WorkflowFunction) -> tuple[WorkflowFunction, Path]:
    """The workflow as the task runtime will import it, and the root of its code bundle.

    The root is the directory its module is imported from (`/src` for module `pkg.flows` in
    `/src/pkg/flows.py`). A workflow defined in a script run as `__main__` is imported again
    from the script's file, as a module named after the file (what `fleetflow run` does), so
    its spec names a module a task process can import.

    Raises:
        WorkflowNotFoundError: the workflow's module has no source file (a module made at run
            time; a workflow of a notebook cell or an interactive session is captured by value
            instead, see `fleetflow.interactive`).
    """
    module = sys.modules.get(wf.fn.__module__)
    filename = getattr(module, "__file__", None)
    if not filename:
        raise WorkflowNotFoundError(
            f"workflow '{wf.spec.name}' has no source file to bundle: its module "
            f"{wf.fn.__module__!r} was not imported from a file; define it in a .py file (or in "
            "a notebook cell, whose code is captured by value)"
        )
    path = Path(filename).resolve()
    if wf.spec.module == "__main__":
        return load_workflow(path, wf.fn.__name__)
    depth = wf.spec.module.count(".") + (1 if path.stem == "__init__" else 0)
    return wf, path.parents[depth]


def _import_failure(file: Path, root: Path, exc: BaseException) -> str:
    """`cannot import F: Kind: message`, then the line of the user's code that raised it."""
    where = ""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = _located(exc.filename, exc.lineno, exc.text)
        reason = f"{exc.__class__.__name__}: {exc.msg}"
    else:
        reason = f"{exc.__class__.__name__}: {exc}"
        frames = traceback.extract_tb(exc.__traceback__)
        # The deepest frame in the bundle's directory: the user's line, not importlib's.
        ours = [f for f in frames if _is_within(f.filename, root)]
        if ours:
            where = _located(ours[-1].filename, ours[-1].lineno, ours[-1].line)
    return f"cannot import {file}: {reason}" + (f"\n  {where}" if where else "")


def _located(filename: str, lineno: int | None, line: str | None) -> str:
    shown = _display_path(filename)
    location = f"{shown}:{lineno}" if lineno else shown
    code = (line or "").strip()
    return f"{location}: {code}" if code else location


def _is_within(filename: str, root: Path) -> bool:
    try:
        return Path(filename).resolve().is_relative_to(root)
    except (OSError, ValueError):
        return False


def _display_path(filename: str) -> str:
    """Relative to the working directory when it is below it, as the user typed it."""
    try:
        relative = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if relative.startswith("..") else relative
