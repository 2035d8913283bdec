"""`numpy.ndarray` and `pandas.DataFrame` values: each travels between tasks as one file in the
blob store, an `.npy` file or a Parquet file, named by a `File`'s literal (`{"uri", "name"}`).

The SDK does not depend on numpy or pandas: `import fleetflow` never imports them, and this
module looks a library up in `sys.modules` only (an annotation of `np.ndarray` means the
engineer's code imported numpy). A DataFrame needs pyarrow too (its Parquet engine).

Where the file goes is `fleetflow.files`'s business, as for a `File` the task returns: inside a
task runtime it is uploaded, content-addressed, next to the attempt's outputs (and staged into
the next task like any File input); outside one (a local run) it is written, content-addressed,
to a directory of this process, removed when the process exits.

Reading never runs code from the file: `.npy` files are read with `allow_pickle=False` (so an
array of Python objects, which `.npy` can only hold pickled, is refused when written and when
read), Parquet by pyarrow (whose extension types that unpickled are refused since 14.0.1).
"""

from __future__ import annotations

import atexit
import importlib
import importlib.util
import os
import shutil
import sys
import tempfile
import threading
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetflow import files
from fleetflow.errors import LiteralValidationError, UnsupportedTypeError
from fleetflow.ir import TypeKind


@dataclass(frozen=True)
class StoredFormat:
    """How the values of one library type are written to and read from one file.

    Attributes:
        kind: the IR kind of the values.
        module, class_name: where the type lives (`numpy`, `ndarray`).
        requires: every package writing and reading the file needs, in import names.
        file_name: the name of the file a value is stored as.
        format_name: the file's format, as a message names it (`.npy`, `Parquet`).
        write: writes a value (already checked to be of the type) to a path.
        read: reads a value back from a path.
    """

    kind: TypeKind
    module: str
    class_name: str
    requires: tuple[str, ...]
    file_name: str
    format_name: str
    write: Callable[[Any, Path], None]
    read: Callable[[Path], Any]

    @property
    def type_name(self) -> str:
        """`numpy.ndarray`."""
        return f"{self.module}.{self.class_name}"

    def python_type(self) -> type | None:
        """The class, if its library has been imported (else no value or annotation can be
        one of it)."""
        module = sys.modules.get(self.module)
        found = getattr(module, self.class_name, None) if module is not None else None
        return found if isinstance(found, type) else None

    def handles(self, py_type: Any) -> bool:
        """Whether `py_type` is the class, or a parametrised form of it
        (`numpy.typing.NDArray[np.float64]`: the dtype is not part of the type)."""
        cls = self.python_type()
        return cls is not None and (py_type is cls or typing.get_origin(py_type) is cls)

    def check_installed(self) -> None:
        """Raise `UnsupportedTypeError` (at compile time) when a package the values need is
        missing here."""
        missing = [name for name in self.requires if not _installed(name)]
        if missing:
            raise UnsupportedTypeError(
                f"{self.type_name} values are stored as {self.format_name} files, which "
                f"needs {' and '.join(missing)}: pip install {' '.join(missing)}"
            )


def _installed(name: str) -> bool:
    if name in sys.modules:
        return sys.modules[name] is not None  # None: imports of it fail
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _module(name: str, why: str) -> Any:
    """Import `name`, or say which package to install (the caller names the value's path)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise LiteralValidationError(
            "", f"{why} needs {name}, which is not installed here: pip install {name}"
        ) from None


# ---------------------------------------------------------------------------------- numpy


def _write_npy(value: Any, target: Path) -> None:
    if value.dtype.hasobject:
        raise ValueError(
            f"an array of dtype {value.dtype} holds Python objects, which an .npy file can "
            "only hold pickled (never read back by a task); use a numeric, bool, string, "
            "bytes or datetime dtype"
        )
    numpy = _module("numpy", "an ndarray")
    with target.open("wb") as out:
        numpy.save(out, value, allow_pickle=False)


def _read_npy(source: Path) -> Any:
    numpy = _module("numpy", "an ndarray value")
    with source.open("rb") as f:
        # A hostile file must never unpickle: object arrays are refused (ValueError).
        value = numpy.load(f, allow_pickle=False)
        if f.read(1):
            raise ValueError("it holds more than one array")
    if not isinstance(value, numpy.ndarray):  # pragma: no cover - allow_pickle=False: .npz only
        raise ValueError(f"it holds a {type(value).__name__}, not one array")
    return value


# ------------------------------------------------------------------------- pandas / Parquet


def _write_parquet(value: Any, target: Path) -> None:
    _module("pyarrow", "a DataFrame (stored as Parquet)")
    value.to_parquet(target, engine="pyarrow")


def _read_parquet(source: Path) -> Any:
    pandas = _module("pandas", "a DataFrame value")
    _module("pyarrow", "a DataFrame (stored as Parquet)")
    return pandas.read_parquet(source, engine="pyarrow")


NDARRAY = StoredFormat(
    kind=TypeKind.NDARRAY,
    module="numpy",
    class_name="ndarray",
    requires=("numpy",),
    file_name="array.npy",
    format_name=".npy",
    write=_write_npy,
    read=_read_npy,
)
DATAFRAME = StoredFormat(
    kind=TypeKind.DATAFRAME,
    module="pandas",
    class_name="DataFrame",
    requires=("pandas", "pyarrow"),
    file_name="dataframe.parquet",
    format_name="Parquet",
    write=_write_parquet,
    read=_read_parquet,
)
FORMATS = (NDARRAY, DATAFRAME)


# ---------------------------------------------------------------------------- conversions

_LOCAL_LOCK = threading.Lock()
_local_dir: tuple[int, Path] | None = None


def _local_values_dir() -> Path:
    """This process's directory of values written outside a task runtime (removed at exit; a
    forked child gets its own)."""
    global _local_dir
    with _LOCAL_LOCK:
        if _local_dir is None or _local_dir[0] != os.getpid():
            directory = Path(tempfile.mkdtemp(prefix="fleetflow-values-"))
            _local_dir = (os.getpid(), directory)
            owner = os.getpid()
            atexit.register(
                lambda: (
                    shutil.rmtree(directory, ignore_errors=True) if os.getpid() == owner else None
                )
            )
        return _local_dir[1]


def to_literal(form: StoredFormat, value: Any, path: str) -> dict[str, str]:
    """Write `value` (checked to be exactly of the format's type) to its file, and return the
    file's literal: uploaded inside a task runtime, a local `file://` URI outside one.

    Raises:
        LiteralValidationError: not a value of the type, or it cannot be stored (an array of
            Python objects, a DataFrame Parquet cannot hold, a package missing).
    """
    cls = form.python_type()
    if cls is None or not isinstance(value, cls):
        got = "null" if value is None else type(value).__name__
        raise LiteralValidationError(path, f"expected {form.type_name}, got {got}")
    if type(value) is not cls:
        raise LiteralValidationError(
            path,
            f"expected {form.type_name}, got its subclass {type(value).__name__}, which "
            f"would not come back as one; convert it to a plain {form.class_name} first",
        )
    context = files.active_blob_context()
    # Outside a task runtime, next to where the file is kept (one rename away).
    where = None if context is not None else _local_values_dir()
    scratch = Path(tempfile.mkdtemp(prefix=".writing-", dir=where))
    try:
        written = scratch / form.file_name
        try:
            form.write(value, written)
        except LiteralValidationError as exc:
            raise LiteralValidationError(path, exc.reason) from None
        except Exception as exc:  # the library's own error: the value cannot be stored
            raise LiteralValidationError(
                path, f"cannot store this {form.type_name} as a {form.format_name} file: {exc}"
            ) from None
        if context is not None:
            return files.file_to_literal(files.File(written), path)
        # Content-addressed, so an equal value is one file however often it is converted.
        kept = _local_values_dir() / files.file_digest(written) / form.file_name
        if not kept.is_file():
            kept.parent.mkdir(exist_ok=True)
            os.replace(written, kept)
        return {"uri": kept.as_uri(), "name": form.file_name}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def to_python(form: StoredFormat, literal: dict[str, str], path: str) -> Any:
    """Read a value back from the file a checked File literal names (downloaded first inside a
    task runtime).

    Raises:
        LiteralValidationError: the file cannot be read (or downloaded) as a value of the type:
            not such a file, an array of Python objects, a package missing here.
    """
    missing = [name for name in form.requires if not _installed(name)]
    if missing:
        raise LiteralValidationError(
            path,
            f"a {form.type_name} value needs {' and '.join(missing)}, which is not installed "
            f"here: pip install {' '.join(missing)}",
        )
    local = files.file_to_python(literal, path).path
    try:
        return form.read(local)
    except LiteralValidationError as exc:
        raise LiteralValidationError(path, exc.reason) from None
    except Exception as exc:  # whatever the library says of a file that is not one of its own
        raise LiteralValidationError(
            path, f"{literal['uri']} is not a readable {form.format_name} file: {exc}"
        ) from None
