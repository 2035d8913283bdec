"""Load a workflow from a Python file the way the task runtime will import it remotely.

The file's directory is the code bundle's root and the file's stem its module name, so
`examples/hello.py` is imported as module `hello` both here and inside the task process.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fleetflow.errors import FleetflowError

if TYPE_CHECKING:
    from fleetflow.workflow import WorkflowFunction


class WorkflowNotFoundError(FleetflowError, LookupError):
    """The file or the workflow named on the command line does not exist."""


def load_workflow(file: Path, name: str) -> tuple[WorkflowFunction, Path]:
    """Import `file` and return its workflow `name` and the bundle root directory."""
    from fleetflow.workflow import WorkflowFunction

    path = file.resolve()
    if not path.is_file() or path.suffix != ".py":
        raise WorkflowNotFoundError(f"{file}: no such Python file")
    root = path.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module = importlib.import_module(path.stem)
    candidate = getattr(module, name, None)
    if not isinstance(candidate, WorkflowFunction):
        available = sorted(
            attr for attr, value in vars(module).items() if isinstance(value, WorkflowFunction)
        )
        hint = f"; workflows in {file}: {', '.join(available)}" if available else ""
        raise WorkflowNotFoundError(f"{file} has no @workflow named {name!r}{hint}")
    return candidate, root
