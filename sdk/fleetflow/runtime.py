"""The task runtime: what runs inside a task's pod or process on a cluster.

An agent launches it as
``python -m fleetflow.runtime --bundle-uri URI --inputs-uri URI --outputs-uri URI
--module M --function F --result-file PATH [--workdir DIR]
[--execution-id E --node-id N --attempt-id A --attempt-number K [--map-index I]]
[--checkpoint-dir DIR [--checkpoint-uri URI]]``.
It downloads and unpacks the code bundle, imports the `@fleetflow.task` function, converts the
JSON inputs to Python values with the type system, calls the function, and writes the outputs
(`{"o0": literal}`, one entry per field of a NamedTuple return type, or `{}` for a task without
a result) back to the blob store. `File`/`Directory` inputs are downloaded into the work
directory (`.fleetflow/downloads/`) and those the task returns are uploaded next to the outputs
document, content-addressed (`files/<sha256>/<name>`, `dirs/<sha256>/...`). The task runs
with its `fleetflow.current_context()` made of the attempt's identity given on the command line
(execution, node, attempt, map element: empty when an older agent gives none), and its unit's
checkpoint in `--checkpoint-dir`, which its agent staged and uploads again after the attempt
(none without it: `ctx.checkpoint` then raises `CheckpointUnavailableError`). Where no agent
can stage files (a Kubernetes pod), `--checkpoint-uri` names the unit's checkpoint location:
the runtime itself copies the checkpoint from there (through the presigned URLs with
`--presigned`) before the task runs, and uploads each checkpoint file as the task writes it,
before `ctx.checkpoint.write` returns, so what a task wrote survives its pod being deleted or
killed (preempted, past its deadline, out of memory, its node lost).

It always tells the agent how it ended through the result file, a small JSON document:
``{"status": "SUCCEEDED"}`` (exit 0), or ``{"status": "FAILED", "message": "ValueError: …",
"traceback": "…"}`` (exit 1). The traceback is the task author's: their frames only, none of
this module's, with the paths of the bundle's files relative to it (`pipeline.py`, not the
agent's work directory); set `FLEETFLOW_DEBUG` for the whole one in the log as well.

The agent keeps the process's stdout and stderr as the attempt's log. What the task prints
passes through untouched; the runtime's own progress lines go to stderr prefixed `[fleetflow]`
(see `fleetflow.logs.sdk_lines_to`), and the task's `logging` records to stderr as
`<time> <LEVEL> <logger>: <message>`.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import importlib
import inspect
import json
import logging
import os
import posixpath
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from fleetflow import ir, presigned, staging
from fleetflow.bundle import extract_bundle, verify_bundle
from fleetflow.child_processes import die_with_parent_if_asked
from fleetflow.compiler import define_on_first_use
from fleetflow.context import Checkpoint, CheckpointSaveError, attempt_context
from fleetflow.errors import FleetflowError, format_user_traceback, strip_bundle_root
from fleetflow.files import blob_context
from fleetflow.logs import sdk_lines_to
from fleetflow.storage import BlobStore, open_blob_store, parent_uri, read_uri, write_uri
from fleetflow.task import result_to_literals
from fleetflow.types import to_python

logger = logging.getLogger("fleetflow.runtime")

#: Where `File`/`Directory` inputs are downloaded to, inside the work directory.
DOWNLOADS_DIR = ".fleetflow/downloads"
STATUS_SUCCEEDED = "SUCCEEDED"
STATUS_FAILED = "FAILED"


@dataclass(frozen=True)
class AttemptIdentity:
    """Which attempt of which unit this is: what `current_context()` tells the task."""

    execution_id: str = ""
    node_id: str = ""
    attempt_id: str = ""
    attempt_number: int = 0
    """1 for a unit's first attempt; 0 when the agent did not say."""
    map_index: int | None = None
    checkpoint_dir: Path | None = None
    """Where the unit's checkpoint was staged; None: its agent keeps none."""


@dataclass(frozen=True)
class TaskInvocation:
    """Everything the runtime needs to run one task attempt."""

    bundle_uri: str
    inputs_uri: str
    outputs_uri: str
    module: str
    function: str
    workdir: Path
    code_unpacked: bool = False
    """`workdir` holds the bundle, unpacked and checked by the agent."""
    staged: Path | None = None
    """The directory its agent staged everything into (`fleetflow.staging`); None: the task
    reads and writes the blob store itself."""
    presigned: dict[str, Any] | None = None
    """URLs to fill `staged` from and a policy to upload its outputs with
    (`fleetflow.presigned`), when the agent cannot stage into the task's filesystem."""
    identity: AttemptIdentity = AttemptIdentity()
    checkpoint_uri: str = ""
    """Where the unit keeps its checkpoint, for the runtime to copy into
    `identity.checkpoint_dir` and back itself; "": its agent stages it (or none is kept)."""
    discard_outputs: bool = False
    """A worker of a gang other than rank 0: its return value is checked, never written (the
    task's outputs are rank 0's)."""


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argument_parser()
    args = parser.parse_args(argv)
    if args.code_unpacked and not args.workdir:
        parser.error("--code-unpacked needs --workdir (where the code is unpacked)")
    if args.checkpoint_uri and not args.checkpoint_dir:
        parser.error("--checkpoint-uri needs --checkpoint-dir (where to copy the checkpoint)")
    return args


@functools.cache
def argument_parser() -> argparse.ArgumentParser:
    """The command line's parser, made once per interpreter (the warm runtime's server makes
    it before forking)."""
    parser = argparse.ArgumentParser(
        prog="python -m fleetflow.runtime",
        description="Run one Fleetflow task attempt from a code bundle.",
    )
    parser.add_argument("--bundle-uri", required=True, help="URI of the code bundle")
    parser.add_argument("--inputs-uri", required=True, help="URI of the JSON inputs")
    parser.add_argument("--outputs-uri", required=True, help="URI to write the JSON outputs to")
    parser.add_argument("--module", required=True, help="import path of the task's module")
    parser.add_argument("--function", required=True, help="name of the task in its module")
    parser.add_argument("--result-file", required=True, help="where to write the outcome")
    parser.add_argument(
        "--workdir", default=None, help="directory to unpack the code into (default: a temp dir)"
    )
    parser.add_argument(
        "--staged",
        default=None,
        help="directory the agent staged the bundle, inputs and input files into; outputs are "
        "left in its outputs/ for the agent (the task then never touches the blob store)",
    )
    parser.add_argument(
        "--code-unpacked",
        action="store_true",
        help="--workdir holds the code bundle already, unpacked and checked against its digest "
        "by the agent (which then stages no bundle)",
    )
    parser.add_argument(
        "--presigned",
        action="store_true",
        help=f"fetch the staged directory from the presigned URLs in ${presigned.ENV} and "
        "upload the outputs with its policy (no blob store credentials needed)",
    )
    parser.add_argument(
        "--discard-outputs",
        action="store_true",
        help="run and check the task, but write no outputs (a gang's workers but rank 0)",
    )
    identity = parser.add_argument_group("the attempt's identity, for current_context()")
    identity.add_argument("--execution-id", default="", help="the execution's id")
    identity.add_argument("--node-id", default="", help="the node's id, as compiled")
    identity.add_argument("--attempt-id", default="", help="the attempt's id")
    identity.add_argument(
        "--attempt-number", type=int, default=0, help="1 for the unit's first attempt"
    )
    identity.add_argument(
        "--map-index", type=int, default=None, help="the element of a map node, if one"
    )
    identity.add_argument(
        "--checkpoint-dir",
        default=None,
        help="directory the agent staged the unit's checkpoint into, and uploads it from",
    )
    identity.add_argument(
        "--checkpoint-uri",
        default="",
        help="the unit's checkpoint location, when no agent stages it: the runtime copies it "
        "into --checkpoint-dir before the task runs and uploads it back after",
    )
    return parser


def load_task(module_name: str, function_name: str) -> Any:
    """Import `module_name` and return its `@fleetflow.task` named `function_name`. Its other
    tasks and its workflows are checked and compiled only if used (`define_on_first_use`)."""
    with define_on_first_use():
        module = importlib.import_module(module_name)
    try:
        task_fn = getattr(module, function_name)
    except AttributeError:
        raise FleetflowError(f"module {module_name!r} has no attribute {function_name!r}") from None
    missing = [a for a in ("fn", "input_types", "output_type") if not hasattr(task_fn, a)]
    if missing:
        raise FleetflowError(
            f"{module_name}.{function_name} is not a @fleetflow.task "
            f"(a {type(task_fn).__name__} without {', '.join(missing)})"
        )
    return task_fn


def _call_arguments(task_fn: Any, inputs: Any) -> dict[str, Any]:
    if not isinstance(inputs, dict):
        raise FleetflowError(f"task inputs must be a JSON object, got {type(inputs).__name__}")
    input_types: dict[str, Any] = task_fn.input_types
    unknown = sorted(set(inputs) - set(input_types))
    if unknown:
        raise FleetflowError(f"unknown task input(s): {', '.join(unknown)}")
    parameters: Mapping[str, inspect.Parameter]
    try:
        parameters = inspect.signature(task_fn.fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        parameters = {}
    missing = sorted(
        name
        for name in input_types
        if name not in inputs
        and (name not in parameters or parameters[name].default is inspect.Parameter.empty)
    )
    if missing:
        raise FleetflowError(f"missing task input(s): {', '.join(missing)}")
    return {
        name: to_python(literal, input_types[name], path=f"inputs.{name}")
        for name, literal in inputs.items()
    }


def run_task(invocation: TaskInvocation) -> None:
    """Run one task attempt: unpack, import, convert inputs, call, upload outputs.

    Raises:
        Exception: Whatever went wrong, including the task's own exceptions.
    """
    workdir = invocation.workdir
    staged = invocation.staged
    if invocation.presigned is not None:
        assert staged is not None
        logger.info("fetching the code bundle and inputs from their presigned URLs")
        presigned.fetch(invocation.presigned, staged)
    if not invocation.code_unpacked:
        if staged is None:
            logger.info("downloading code bundle %s", invocation.bundle_uri)
            bundle = read_uri(invocation.bundle_uri)
        else:
            bundle = (staged / staging.BUNDLE_FILE).read_bytes()
        verify_bundle(invocation.bundle_uri, bundle)
        extract_bundle(bundle, workdir)
        logger.info("unpacked code bundle (%d bytes) into %s", len(bundle), workdir)
    sys.path.insert(0, str(workdir))
    # Relative paths in task code resolve against the project root, as when run locally.
    os.chdir(workdir)

    task_fn = load_task(invocation.module, invocation.function)
    # Files and directories: inputs are downloaded into the work directory (or were staged),
    # outputs uploaded next to the attempt's outputs document (or left for the agent to).
    uploads: BlobStore
    if staged is None:
        logger.info("reading inputs %s", invocation.inputs_uri)
        inputs = json.loads(read_uri(invocation.inputs_uri))
        uploads = open_blob_store(parent_uri(invocation.outputs_uri))
        context = blob_context(uploads, "", workdir / DOWNLOADS_DIR)
    else:
        inputs = json.loads((staged / staging.INPUTS_FILE).read_bytes())
        uploads = staging.StagedOutputs(
            staged / staging.OUTPUTS_DIR, parent_uri(invocation.outputs_uri)
        )
        context = blob_context(
            uploads, "", staged / staging.DOWNLOADS_DIR, source=staging.refuse_download
        )
    with context:
        kwargs = _call_arguments(task_fn, inputs)

        logger.info("running %s.%s", invocation.module, invocation.function)
        started = time.monotonic()
        identity = invocation.identity
        with attempt_context(
            execution_id=identity.execution_id,
            node_id=identity.node_id,
            attempt_number=identity.attempt_number,
            map_index=identity.map_index,
            attempt_id=identity.attempt_id,
            # Neither reads the task's spec: building it is the runtime's costliest pydantic.
            task_name=getattr(task_fn, "name", "") or f"{invocation.module}.{invocation.function}",
            local=False,
            checkpoint=(
                Checkpoint(identity.checkpoint_dir, save=checkpoint_saver(invocation))
                if identity.checkpoint_dir is not None
                else None
            ),
        ):
            if getattr(task_fn, "dynamic", False) is True:
                # A dynamic task: its outputs document is the sub-DAG its body builds.
                compiled = task_fn.build_python(kwargs, identity.node_id)
                result = None
                dynamic_outputs = {ir.DYNAMIC_SPEC_OUTPUT: compiled.spec.model_dump(mode="json")}
            else:
                result = task_fn.fn(**kwargs)
                dynamic_outputs = None
        logger.info(
            "%s.%s returned after %.3fs",
            invocation.module,
            invocation.function,
            time.monotonic() - started,
        )

        output_type = task_fn.output_type
        if output_type is None and result is not None and dynamic_outputs is None:
            logger.warning("task has no return annotation; ignoring its result %r", result)
        if dynamic_outputs is not None:
            outputs = dynamic_outputs
        else:
            outputs = result_to_literals(task_fn, result, "outputs")
    if invocation.discard_outputs:
        logger.info("outputs discarded: this worker is not rank 0 of its gang")
        return
    document = json.dumps(outputs).encode()
    if staged is None:
        write_uri(invocation.outputs_uri, document)
    else:
        uploads.put(posixpath.basename(invocation.outputs_uri), document)
    if invocation.presigned is not None:
        assert staged is not None
        presigned.upload_outputs(
            invocation.presigned, staged, posixpath.basename(invocation.outputs_uri)
        )
    logger.info("wrote outputs %s", invocation.outputs_uri)


def _write_result(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".result-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(result, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def describe_exception(exc: BaseException) -> str:
    """`ExcType: message`, or just `ExcType` when the message is empty."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def configure_task_logging() -> None:
    """The task's own logging, to stderr (the runtime's lines get their own prefix in `_run`);
    nothing when it has handlers already: a forked attempt's process set them up while it
    waited for its request (`fleetflow.forkserver`)."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m fleetflow.runtime`; returns the process exit code."""
    die_with_parent_if_asked()
    args = _parse_args(argv)
    configure_task_logging()
    # Absolute before run_task changes the working directory (not resolved: a look at every
    # directory of every path, and nothing here depends on where a symlink leads).
    result_file = Path(args.result_file).absolute()
    workdir = (
        Path(args.workdir).absolute()
        if args.workdir
        else Path(tempfile.mkdtemp(prefix="fleetflow-task-"))
    )
    staged = Path(args.staged).absolute() if args.staged else None
    manifest = None
    if args.presigned:
        try:
            manifest = presigned.manifest_from_environment()
        except presigned.PresignedError as exc:
            _write_result(result_file, {"status": STATUS_FAILED, "message": str(exc)})
            logger.error("%s", exc)
            return 1
        staged = staged or Path(tempfile.mkdtemp(prefix="fleetflow-staged-"))
    invocation = TaskInvocation(
        bundle_uri=args.bundle_uri,
        inputs_uri=args.inputs_uri,
        outputs_uri=args.outputs_uri,
        module=args.module,
        function=args.function,
        workdir=workdir,
        code_unpacked=args.code_unpacked,
        staged=staged,
        presigned=manifest,
        checkpoint_uri=args.checkpoint_uri,
        discard_outputs=args.discard_outputs,
        identity=AttemptIdentity(
            execution_id=args.execution_id,
            node_id=args.node_id,
            attempt_id=args.attempt_id,
            attempt_number=args.attempt_number,
            map_index=args.map_index,
            checkpoint_dir=Path(args.checkpoint_dir).absolute() if args.checkpoint_dir else None,
        ),
    )
    with sdk_lines_to(sys.stderr, timestamps=True):
        return _run(invocation, result_file)


def fetch_checkpoint(invocation: TaskInvocation) -> bool:
    """Copy the unit's checkpoint into the checkpoint directory when the runtime keeps it
    itself (`--checkpoint-uri`); whether it does."""
    target = invocation.identity.checkpoint_dir
    if not invocation.checkpoint_uri or target is None:
        return False
    logger.info("fetching the checkpoint of the unit")
    try:
        if invocation.presigned is not None:
            presigned.fetch_checkpoint(invocation.presigned, target)
        else:
            uri = invocation.checkpoint_uri
            staging.fill_checkpoint(target, staging.checkpoint_from_store(uri))
    except (FleetflowError, OSError) as exc:
        raise staging.StagingError(f"could not fetch the task's checkpoint: {exc}") from None
    return True


def checkpoint_saver(invocation: TaskInvocation) -> Callable[[str, Path], None] | None:
    """What saves each checkpoint file as the task writes it, when the runtime keeps the
    checkpoint itself (`--checkpoint-uri`): an upload to the unit's location (through the
    presigned policy with `--presigned`). None where the agent uploads it after the attempt."""
    if not invocation.checkpoint_uri:
        return None
    manifest = invocation.presigned
    uri = invocation.checkpoint_uri
    stores: list[BlobStore] = []  # opened at the first write, then kept

    def save(name: str, path: Path) -> None:
        try:
            if manifest is not None:
                presigned.upload_checkpoint_file(manifest, name, path)
            else:
                stores[:] = stores or [open_blob_store(uri)]
                stores[0].upload(name, path)
        except (FleetflowError, OSError) as exc:
            raise CheckpointSaveError(
                f"the checkpoint's {name} was written but not saved for the next attempts "
                f"(the one saved before is kept): {exc}"
            ) from None
        logger.info("kept the checkpoint (%s)", name)

    return save


def _run(invocation: TaskInvocation, result_file: Path) -> int:
    try:
        fetch_checkpoint(invocation)
        run_task(invocation)
    except BaseException as exc:  # noqa: BLE001 - every way out must leave a result file
        message = strip_bundle_root(describe_exception(exc), invocation.workdir)
        formatted = format_user_traceback(exc, bundle_root=invocation.workdir)
        logger.error("task failed: %s", message)
        sys.stderr.write(formatted)
        if os.environ.get("FLEETFLOW_DEBUG"):
            logger.error("the whole traceback (FLEETFLOW_DEBUG is set):")
            sys.stderr.write("".join(traceback.format_exception(exc)))
        _write_result(
            result_file,
            {"status": STATUS_FAILED, "message": message, "traceback": formatted},
        )
        return 1
    _write_result(result_file, {"status": STATUS_SUCCEEDED})
    logger.info("task succeeded")
    return 0


def main_then_exit(argv: Sequence[str] | None = None) -> NoReturn:
    """Run `main` and leave the process at once with its exit code, without the interpreter's
    teardown: `python -m fleetflow.runtime` and the fork server's children
    (`fleetflow.forkserver`) both end here, the same way.

    The attempt is over when `main` returns (its result file is written), so what teardown would
    add is cost (freeing every module, tens of milliseconds) or a hang (joining a non-daemon
    thread the task left running). `atexit` callbacks still run, as they would at a normal exit
    (the task's own, `logging`'s flush, `weakref.finalize`), then stdout and stderr are flushed.
    An exception out of `main` ends the process as the interpreter would end it: `SystemExit`'s
    code, else its traceback and exit code 1 (a `KeyboardInterrupt`: killed by SIGINT).
    """
    try:
        code = main(argv)
    except SystemExit as exc:
        code = _system_exit_code(exc)
    except KeyboardInterrupt:
        traceback.print_exc()
        _leave_now(0, signal.SIGINT)
    except BaseException:  # noqa: BLE001 - reported as the interpreter reports it
        traceback.print_exc()
        code = 1
    _leave_now(code)


def _system_exit_code(exc: SystemExit) -> int:
    """The exit status the interpreter gives `SystemExit(exc.code)`."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    sys.stderr.write(f"{exc.code}\n")
    return 1


def _leave_now(code: int, kill_with: signal.Signals | None = None) -> NoReturn:
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            with contextlib.suppress(Exception):  # closed, replaced or gone: nothing to flush
                if stream is not None:
                    stream.flush()
        if kill_with is not None:
            signal.signal(kill_with, signal.SIG_DFL)
            os.kill(os.getpid(), kill_with)
        os._exit(code & 0xFF)


if __name__ == "__main__":
    main_then_exit()
