"""Workflows defined interactively (a notebook cell, IPython), captured by value for a remote run.

A task process imports its task from the code bundle by module and function name, which a
definition made in `__main__` of a notebook kernel does not have. `capture_workflow` writes
what the workflow needs into one generated module, `fleetflow_interactive_<digest>.py`: the
source of the workflow, of its tasks and of the functions, classes (a dataclass of an
interface, say) and constants they use from the session, and the imports of the modules and
objects they use from elsewhere. Compiled again from that module, the workflow's spec names
tasks a task process can import; it is the same graph with the same types, so a remote run
gives what a local call gives.

What is captured, found from the names the code loads (not from the text):

- a function or class defined in the session: its source (`inspect.getsource`; for a class,
  the cell that defines it), decorators included, then what it uses, recursively;
- a module, or a function or class defined in a module (`import numpy as np`, `from math
  import sqrt`, `from mylib import helper`): an import of it. A module of the engineer's own
  (a file outside the interpreter's installation, next to the notebook say) is packed into
  the bundle as well, with the modules of the engineer's own it imports; an installed one
  must be installed where the task runs (its image);
- a constant: its value, written as a Python literal (numbers, strings, bytes, booleans,
  None, and tuples, lists, sets and dicts of them), as it is at capture time; a member of an
  enum, as the member of the (captured or imported) enum;
- a type alias (`Rows = list[Row]`, `MaybeInt = int | None`): written again as source.

Anything else is refused with an `InteractiveCaptureError` naming what uses what: an object
(a model, a data frame, a client: create it in the task or pass it as an input), a lambda
bound to a name (use `def`), a function defined inside another one, a definition whose source
the session did not keep (the plain `python` console keeps none: use IPython or Jupyter), or a
task redefined since the workflow was. Nothing is pickled: the bundle is source code.
"""

from __future__ import annotations
import __future__

import ast
import builtins
import dis
import enum
import functools
import hashlib
import importlib.util
import inspect
import linecache
import site
import sys
import sysconfig
import textwrap
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetflow.bundle import bundle_files
from fleetflow.errors import FleetflowError
from fleetflow.task import TaskFunction
from fleetflow.workflow import WorkflowFunction

MODULE_PREFIX = "fleetflow_interactive_"
"""Generated modules are named this followed by the first 16 hex digits of the sha256 of
their code and of the modules of the engineer's own they pack."""

_LOADS = frozenset(
    {"LOAD_GLOBAL", "LOAD_NAME", "STORE_GLOBAL", "DELETE_GLOBAL", "LOAD_FROM_DICT_OR_GLOBALS"}
)
_LITERAL_TYPES = (int, float, complex, str, bytes, bool, type(None))
_FUTURE_ANNOTATIONS = __future__.annotations.compiler_flag
# Names every module has, and IPython's own: never captured.
_SESSION_NAMES = frozenset(
    {"__builtins__", "__name__", "__doc__", "__spec__", "__loader__", "__package__"}
)


class InteractiveCaptureError(FleetflowError):
    """A workflow defined interactively uses something that cannot be captured by value."""


@dataclass(frozen=True)
class CapturedWorkflow:
    """An interactive workflow as a task process will import it.

    Attributes:
        workflow: the workflow compiled again from the generated module (its spec names the
            module's tasks); its inputs and outputs are the original's.
        module: the generated module's name.
        source: the generated module's source.
        files: the code bundle's files: archive name -> content (the generated module, and
            the engineer's own modules it imports).
    """

    workflow: WorkflowFunction[..., Any]
    module: str
    source: str
    files: dict[str, bytes]


def is_interactive(wf: WorkflowFunction[..., Any]) -> bool:
    """Whether `wf` was defined in `__main__` without a source file: a notebook cell, an
    IPython or `python` console, `python -c`, `exec`."""
    fn = wf.fn
    if fn.__module__ != "__main__":
        return False
    filename = fn.__globals__.get("__file__")
    return not (isinstance(filename, str) and filename.endswith(".py") and Path(filename).is_file())


def capture_workflow(wf: WorkflowFunction[..., Any]) -> CapturedWorkflow:
    """Capture the interactively defined `wf` and compile it again from the generated module.

    Raises:
        InteractiveCaptureError: something it uses cannot be captured; the message names it,
            who uses it and what to do instead.
    """
    namespace = wf.fn.__globals__
    capture = _Capture(namespace, f"workflow '{wf.fn.__name__}'")
    for task in wf.tasks.values():
        fn = task.fn
        top_level = fn.__qualname__ == fn.__name__
        if fn.__module__ == "__main__" and top_level and namespace.get(fn.__name__) is not task:
            raise capture.refuse(
                f"task '{fn.__name__}' was redefined (or deleted) after the workflow was "
                "defined: run the workflow's cell again so that it uses the current task"
            )
    if namespace.get(wf.fn.__name__) is not wf:
        raise capture.refuse(
            f"{wf.fn.__name__!r} now names something else in the session (it was redefined or "
            "deleted): run the workflow's cell again"
        )
    capture.need(wf.fn.__name__, "the workflow")
    body = capture.render()
    files: dict[str, bytes] = {}
    for top, path in sorted(capture.local_modules.items()):
        files.update(_module_files(top, path))
    content = hashlib.sha256(body.encode())
    for name, data in sorted(files.items()):  # the modules it packs are its code too
        content.update(b"\0%s\0%d\0%s" % (name.encode(), len(data), data))
    module_name = MODULE_PREFIX + content.hexdigest()[:16]
    source = (
        f'"""Generated by Fleetflow: workflow {wf.fn.__name__!r}, defined interactively, and '
        'what it uses, captured by value."""\n\n' + body
    )
    module = _load_module(module_name, source, capture.what)
    captured = getattr(module, wf.fn.__name__, None)
    if not isinstance(captured, WorkflowFunction):  # pragma: no cover - the source defines it
        raise capture.refuse(f"the generated module defines no workflow '{wf.fn.__name__}'")
    files[f"{module_name}.py"] = source.encode()
    return CapturedWorkflow(workflow=captured, module=module_name, source=source, files=files)


def _load_module(name: str, source: str, what: str) -> types.ModuleType:
    """Execute `source` as module `name`, as the task process will import it; a failure is the
    capture's (an InteractiveCaptureError)."""
    filename = f"<{name}.py>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(name)
    module.__file__ = filename
    previous = sys.modules.get(name)
    sys.modules[name] = module  # dataclasses look their module up while being created
    try:
        exec(compile(source, filename, "exec", dont_inherit=True), module.__dict__)
    except FleetflowError:
        raise
    except Exception as exc:
        raise InteractiveCaptureError(
            f"cannot capture {what} for a remote run: its captured code fails on import: "
            f"{exc.__class__.__name__}: {exc}"
        ) from exc
    finally:
        if previous is None:
            sys.modules.pop(name, None)
        else:  # pragma: no cover - the same digest twice: the same source
            sys.modules[name] = previous
    return module


@dataclass
class _Capture:
    """The definitions, imports and constants collected so far, in the order to write them."""

    namespace: dict[str, Any]
    what: str
    imports: list[str] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)
    done: dict[str, Any] = field(default_factory=dict)
    local_modules: dict[str, Path] = field(default_factory=dict)
    future_annotations: bool = False

    def refuse(self, reason: str) -> InteractiveCaptureError:
        return InteractiveCaptureError(f"cannot capture {self.what} for a remote run: {reason}")

    def render(self) -> str:
        parts = []
        if self.future_annotations:
            parts.append("from __future__ import annotations\n")
        if self.imports:
            parts.append("\n".join(self.imports) + "\n")
        parts.extend(self.blocks)
        return "\n\n".join(parts)

    def need(self, name: str, user: str) -> None:
        """Capture the session's global `name`, used by `user` ("task 'train'")."""
        if name in self.done or name in _SESSION_NAMES:
            return
        if name not in self.namespace:
            return  # a builtin, or a name defined nowhere: a NameError here and there alike
        value = self.namespace[name]
        if value is getattr(builtins, name, _MISSING):
            return
        self.done[name] = value
        if isinstance(value, types.ModuleType):
            self._import_module(name, value, user)
        elif isinstance(value, TaskFunction | WorkflowFunction):
            if value.fn.__module__ == "__main__":
                self._define(name, value, value.fn, user)
            else:
                self._import_object(name, value, user)
        elif isinstance(value, types.FunctionType | type):
            if value.__module__ == "__main__":
                self._define(name, value, value, user)
            else:
                self._import_object(name, value, user)
        elif _wraps_session_function(value):  # `@functools.cache def helper`
            self._define(name, value, value.__wrapped__, user)
        elif _is_literal(value):
            self.blocks.append(f"{name} = {value!r}\n")
        elif _importable(value, name) is not None:
            self._import_object(name, value, user)
        elif _is_enum_member(value):
            member = f"{self._class_expression(type(value), name, user)}.{value.name}"
            self.blocks.append(f"{name} = {member}\n")
        elif typing.get_origin(value) is not None:  # a type alias: `Rows = list[Row]`
            self.blocks.append(f"{name} = {self._type_expression(value, name, user)}\n")
        else:
            raise self.refuse(
                f"{user} uses {name!r}, {_describe(value)}, which cannot be captured by value "
                "(only modules, functions, classes and constants: numbers, strings, bytes, "
                "and tuples, lists, sets and dicts of them); create it inside the task, or "
                "pass it to the workflow as an input"
            )

    def _import_module(self, name: str, module: types.ModuleType, user: str) -> None:
        module_name = module.__name__
        if module_name == "__main__" or getattr(module, "__spec__", None) is None:
            raise self.refuse(
                f"{user} uses module {name!r}, which cannot be imported by name where the task "
                "runs (it was not imported from a file or package)"
            )
        self._note_local(module_name)
        if module_name == name:
            self._add_import(f"import {name}")
        else:
            self._add_import(f"import {module_name} as {name}")

    def _import_object(self, name: str, value: Any, user: str) -> None:
        place = _importable(value, name)
        if place is None:
            raise self.refuse(
                f"{user} uses {name!r}, {_describe(value)}, which is neither defined in the "
                "session nor importable from its module; define it at the top level of a cell "
                "or of a module"
            )
        module_name, attribute = place
        self._note_local(module_name)
        if attribute == name:
            self._add_import(f"from {module_name} import {name}")
        else:
            self._add_import(f"from {module_name} import {attribute} as {name}")

    def _type_expression(self, tp: Any, name: str, user: str) -> str:
        """Python source for the type `tp` (of alias `name`): `list[Row]`, `int | None`."""
        if tp is None or tp is type(None):
            return "None"
        if tp is Ellipsis:
            return "..."
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is None:
            if isinstance(tp, type):
                return self._class_expression(tp, name, user)
        elif origin is typing.Union or origin is types.UnionType:
            return " | ".join(self._type_expression(a, name, user) for a in args)
        elif origin is typing.Literal and all(_is_literal(a) for a in args):
            self._add_import("import typing")
            return f"typing.Literal[{', '.join(repr(a) for a in args)}]"
        elif isinstance(origin, type) and origin is not typing.Annotated:
            head = self._class_expression(origin, name, user)
            if all(a is Ellipsis or not isinstance(a, list) for a in args):
                return f"{head}[{', '.join(self._type_expression(a, name, user) for a in args)}]"
        raise self.refuse(
            f"{user} uses the type alias {name!r} ({tp!r}), which cannot be written again as "
            "source; write the type in the annotations instead"
        )

    def _class_expression(self, cls: type, name: str, user: str) -> str:
        if cls.__module__ == "builtins":
            return cls.__qualname__
        if cls.__module__ == "__main__":
            self.need(cls.__name__, repr(name))
            if self.namespace.get(cls.__name__) is cls:
                return cls.__name__
        place = _importable(cls, cls.__name__)
        if place is None or place[0] == "__main__":
            raise self.refuse(
                f"{user} uses {name!r}, whose class {cls.__qualname__} is neither defined at "
                "the top level of the session nor importable from its module"
            )
        module_name, attribute = place
        self._note_local(module_name)
        self._add_import(f"import {module_name}")
        return f"{module_name}.{attribute}"

    def _add_import(self, line: str) -> None:
        if line not in self.imports:
            self.imports.append(line)

    def _note_local(self, module_name: str) -> None:
        """Pack the top-level module of `module_name` if it is the engineer's own, and those of
        their own that it imports in turn."""
        top = module_name.partition(".")[0]
        if top in self.local_modules or top in ("fleetflow", "__main__"):
            return
        path = _local_module_path(top)
        if path is None:
            return
        self.local_modules[top] = path
        for imported in _imports_of(path):
            self._note_local(imported)

    def _define(self, name: str, value: Any, definition: Any, user: str) -> None:
        """Capture the source of a function or class of the session, then what it uses."""
        label = _label(value, definition)
        own_name = definition.__name__
        if own_name == "<lambda>":
            raise self.refuse(
                f"{user} uses {name!r}, a lambda, whose source cannot be captured on its own; "
                f"define it with `def {name}(...)`"
            )
        if "<locals>" in definition.__qualname__ or "." in definition.__qualname__:
            raise self.refuse(
                f"{user} uses {label}, defined inside {definition.__qualname__.rpartition('.')[0]}"
                f"; define it at the top level of a cell"
            )
        if self.namespace.get(own_name) is not value:
            raise self.refuse(
                f"{user} uses {label}, but {own_name!r} now names something else in the session "
                "(it was redefined or deleted): run the cells that use it again"
            )
        self.done[own_name] = value
        source = self._source(definition, label, user)
        for used in _used_names(source):
            self.need(used, label)
        if isinstance(definition, types.FunctionType):
            if definition.__code__.co_flags & _FUTURE_ANNOTATIONS:
                self.future_annotations = True
        elif any(isinstance(a, str) for a in vars(definition).get("__annotations__", {}).values()):
            self.future_annotations = True
        alias = f"{name} = {own_name}\n" if name != own_name else ""
        self.blocks.append(source + alias)

    def _source(self, definition: Any, label: str, user: str) -> str:
        """The `def`/`class` statement of `definition`, decorators included, dedented."""
        if isinstance(definition, type):
            source = _class_source(definition, self.namespace)
        else:
            try:
                source = inspect.getsource(definition)
            except (OSError, TypeError):
                source = None
        if source is None and isinstance(definition, type):
            raise self.refuse(
                f"the `class` statement of {label} (used by {user}) is not in the session's "
                "cells (a class made by a call, such as NamedTuple('P', ...) or "
                "make_dataclass, has none): define it with a `class` statement in a cell"
            )
        if source is None:
            raise self.refuse(
                f"the source of {label} (used by {user}) is not available: this interpreter "
                "did not keep it (the plain `python` console does not); define it in IPython "
                "or Jupyter, or in a .py file"
            )
        source = textwrap.dedent(source)
        try:
            tree = ast.parse(source)
        except SyntaxError:
            tree = None
        statement = tree.body[0] if tree is not None and len(tree.body) == 1 else None
        kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        if not isinstance(statement, kinds) or statement.name != definition.__name__:
            raise self.refuse(
                f"the source of {label} (used by {user}) is not a single `def` or `class` "
                "statement; define it at the top level of a cell"
            )
        return source if source.endswith("\n") else source + "\n"


class _Missing:
    pass


_MISSING = _Missing()


def _label(value: Any, definition: Any) -> str:
    if isinstance(value, WorkflowFunction):
        return f"workflow '{definition.__name__}'"
    if isinstance(value, TaskFunction):
        return f"task '{definition.__name__}'"
    if isinstance(definition, type):
        return f"class '{definition.__name__}'"
    return f"function '{definition.__name__}'"


def _describe(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return f"a member of enum {type(value).__name__}"
    if isinstance(value, types.FunctionType | types.BuiltinFunctionType | type):
        return f"{type(value).__name__} {getattr(value, '__qualname__', '?')}"
    kind = type(value)
    module = "" if kind.__module__ in ("builtins", "__main__") else f"{kind.__module__}."
    return f"a {module}{kind.__qualname__} object"


def _is_literal(value: Any, depth: int = 0) -> bool:
    """A value `repr` writes as a Python literal that reads back equal."""
    if depth > 20:
        return False
    if type(value) in _LITERAL_TYPES:
        if isinstance(value, float | complex):
            try:
                return ast.literal_eval(repr(value)) == value
            except (ValueError, SyntaxError):
                return False  # nan, inf
        return True
    if type(value) in (tuple, list, set, frozenset):
        if type(value) is frozenset:
            return False  # its repr is a call
        return all(_is_literal(item, depth + 1) for item in value)
    if type(value) is dict:
        return all(
            _is_literal(k, depth + 1) and _is_literal(v, depth + 1) for k, v in value.items()
        )
    return False


def _wraps_session_function(value: Any) -> bool:
    """A decorated function of the session (`functools.cache`, `functools.wraps`)."""
    wrapped = getattr(value, "__wrapped__", None)
    return isinstance(wrapped, types.FunctionType) and wrapped.__module__ == "__main__"


def _is_enum_member(value: Any) -> bool:
    """An enum member its class names: `Unit.KM`."""
    return isinstance(value, enum.Enum) and getattr(type(value), value.name, None) is value


def _importable(value: Any, name: str) -> tuple[str, str] | None:
    """(module, attribute) that imports exactly `value`, or None."""
    module_name = getattr(value, "__module__", None)
    if not isinstance(module_name, str) or module_name == "__main__":
        return None
    module = sys.modules.get(module_name)
    if module is None or getattr(module, "__spec__", None) is None:
        return None
    for attribute in (getattr(value, "__qualname__", None), getattr(value, "__name__", None), name):
        if isinstance(attribute, str) and attribute.isidentifier():
            if getattr(module, attribute, _MISSING) is value:
                return module_name, attribute
    return None


def _used_names(source: str) -> list[str]:
    """The global names a definition's code loads, its decorators, defaults, annotations and
    class body included, in order of first use.

    The source is compiled without `from __future__ import annotations`, so that the names
    in annotations are loaded too."""
    code = compile(source, "<captured>", "exec", dont_inherit=True)
    seen: dict[str, None] = {}
    for each in _code_objects(code):
        for instruction in dis.get_instructions(each):
            if instruction.opname in _LOADS and isinstance(instruction.argval, str):
                seen.setdefault(instruction.argval, None)
    return list(seen)


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            yield from _code_objects(constant)


def _class_source(cls: type, namespace: dict[str, Any]) -> str | None:
    """The source of a class defined in the session: its `class` statement, decorators
    included, found in the cell that defines it.

    `inspect.getsource` looks for classes in their module's file, which a session does not
    have; the cells are in IPython's input history (`_ih`, newest last) and in `linecache`
    under the file names of the code defined in them (a method's cell first), or of IPython's
    cells (`<ipython-input-…>`, ipykernel's `/tmp/ipykernel_<pid>/…`)."""
    sources: list[str] = []
    for member in vars(cls).values():
        code = getattr(getattr(member, "__func__", member), "__code__", None)
        if isinstance(code, types.CodeType):
            sources.append("".join(linecache.getlines(code.co_filename)))
    history = namespace.get("_ih")
    if isinstance(history, list):
        sources.extend(cell for cell in reversed(history) if isinstance(cell, str))
    for value in namespace.values():
        fn = getattr(value, "fn", value)
        code = getattr(fn, "__code__", None)
        if isinstance(code, types.CodeType) and getattr(fn, "__module__", None) == "__main__":
            sources.append("".join(linecache.getlines(code.co_filename)))
    # Last, every cell the interpreter keeps, newest first (IPython without a history).
    for filename in reversed(list(linecache.cache)):
        generated = filename.startswith(f"<{MODULE_PREFIX}")  # an earlier capture's
        if (filename.startswith("<") or "ipykernel_" in filename) and not generated:
            sources.append("".join(linecache.getlines(filename)))
    for text in sources:
        found = _class_in(text, cls.__name__)
        if found is not None:
            return found
    return None


def _class_in(text: str, name: str) -> str | None:
    """The last top-level `class name` statement of `text`, decorators included."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    lines = text.splitlines(True)
    found = None
    for statement in tree.body:
        if isinstance(statement, ast.ClassDef) and statement.name == name:
            first = min([statement.lineno, *(d.lineno for d in statement.decorator_list)])
            last = statement.end_lineno or statement.lineno
            found = "".join(lines[first - 1 : last])
    return found


@functools.cache
def _installation_dirs() -> list[Path]:
    places = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    places.update(p for p in sysconfig.get_paths().values() if p)
    try:
        places.update(site.getsitepackages())
    except AttributeError:  # pragma: no cover - some virtualenvs' old site module
        pass
    user_site = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    if user_site:
        places.add(user_site)
    return [Path(p).resolve() for p in places]


def _local_module_path(top: str) -> Path | None:
    """The file (a module) or directory (a package) of the top-level module `top` if it is the
    engineer's own: imported (or importable) from a file outside the interpreter's
    installation."""
    module = sys.modules.get(top)
    if module is not None:
        filename = getattr(module, "__file__", None)
    else:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            return None
        filename = spec.origin if spec is not None and spec.has_location else None
    if not isinstance(filename, str):
        return None  # built in, or a namespace package
    path = Path(filename).resolve()
    if any(path.is_relative_to(place) for place in _installation_dirs()):
        return None
    return path.parent if path.name == "__init__.py" else path


def _imports_of(path: Path) -> list[str]:
    """The modules the Python files of a module or package import (absolute imports)."""
    files = [file for _, file in bundle_files(path)] if path.is_dir() else [path]
    found: list[str] = []
    for file in files:
        if file.suffix != ".py":
            continue
        try:
            tree = ast.parse(file.read_bytes())
        except (SyntaxError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append(node.module)
    return found


def _module_files(top: str, path: Path) -> dict[str, bytes]:
    if path.is_dir():
        return {f"{top}/{name}": file.read_bytes() for name, file in bundle_files(path)}
    return {path.name: path.read_bytes()}
