"""`fleetflow`: the root command.

The SDK owns `run`, `executions`, `login`/`logout`/`whoami` (`cli/account.py`), `quota` and
`usage` (`cli/usage.py`) and `admin` (`cli/admin.py`); the root `--tenant` option makes any of
them act in another tenant (`cli/common.py` builds their clients). The control plane and the agent
contribute their own groups (`control-plane`, `dev`, `agent`) through the `fleetflow.cli`
entry-point group, so this package never imports them. `main()` is the one place where an
exception becomes what the user reads: a one-line `error: …` and a non-zero exit code, never a
traceback of ours.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import traceback
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperCommand

from fleetflow.cache import CACHE_DIR_ENV, LocalCache
from fleetflow.cli import account
from fleetflow.cli import usage as usage_commands
from fleetflow.cli.admin import admin_app
from fleetflow.cli.common import TENANT_META_KEY, client, not_found_hint
from fleetflow.cli.inputs import split_input_flags
from fleetflow.errors import FleetflowError

if TYPE_CHECKING:
    from fleetflow.workflow import WorkflowFunction

app = typer.Typer(
    help="Fleetflow: typed ML workflows, run locally or on many clusters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
EXECUTIONS_HINT = "`fleetflow executions list` shows recent ones"
executions_app = typer.Typer(help="Inspect executions on the control plane.", no_args_is_help=True)

# soft_wrap: ids, paths and tracebacks stay on one line when the output is not a terminal.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

WORKFLOWS_PANEL = "Workflows"
ACCOUNT_PANEL = "Account"
PLATFORM_PANEL = "Platform"
EXECUTION_STATES = ("QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")


class LocalRunError(FleetflowError):
    """A task raised while the workflow ran in-process; its traceback was printed."""


def _version() -> str:
    try:
        return version("fleetflow")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def _show_version(value: bool) -> None:
    if value:
        console.print(f"fleetflow {_version()}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    _version_flag: bool = typer.Option(
        False,
        "--version",
        help="Print the version and exit.",
        callback=_show_version,
        is_eager=True,
    ),
    tenant: str = typer.Option(
        None,
        "--tenant",
        metavar="T",
        help="Act in tenant T for this command instead of your home tenant (default: "
        "FLEETFLOW_TENANT, then the tenant `fleetflow login` saved).",
        show_default=False,
    ),
) -> None:
    """Fleetflow: typed ML workflows, run locally or on many clusters."""
    if tenant:
        ctx.meta[TENANT_META_KEY] = tenant


RUN_EPILOG = (
    "Workflow inputs follow WORKFLOW as --name value (--learning-rate is learning_rate); "
    "lists, dicts and dataclasses are JSON, File and Directory inputs local paths (uploaded "
    "for --remote). Inputs not given take the workflow's defaults; `fleetflow run FILE "
    "WORKFLOW --help` lists them. Outputs are printed as one line of JSON, by output name.\n\n"
    "Example: fleetflow run --remote examples/hello.py hello_pipeline --n 50"
)

# Options of `run` itself that take a value, so the words after them are not FILE/WORKFLOW.
_RUN_VALUE_OPTIONS = frozenset({"--timeout", "--cache-dir", "--priority"})
_RUN_FLAGS = frozenset({"--remote", "--wait", "--no-wait", "--dry-run"})
_WORKFLOW_HELP = "fleetflow.workflow_help"


class RunCommand(TyperCommand):
    """`run`, whose `--help` after FILE and WORKFLOW describes that workflow's inputs.

    Click answers `--help` before it reads any argument, so the request is noticed here,
    while parsing, and answered by the command once FILE and WORKFLOW are known.
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        help_flags = set(self.get_help_option_names(ctx))
        if any(arg in help_flags for arg in args):
            rest = [arg for arg in args if arg not in help_flags]
            if len(_leading_positionals(rest)) >= 2:
                ctx.meta[_WORKFLOW_HELP] = True
                args = rest
        return super().parse_args(ctx, args)


def _leading_positionals(args: list[str]) -> list[str]:
    """FILE and WORKFLOW, if given: the arguments before the first workflow input."""
    positionals: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in _RUN_VALUE_OPTIONS:
            skip = True
        elif arg.startswith("-"):
            name = arg.split("=", 1)[0]
            if name not in _RUN_VALUE_OPTIONS and name not in _RUN_FLAGS:
                break  # a workflow input: FILE and WORKFLOW come before them
        else:
            positionals.append(arg)
    return positionals


@app.command(
    cls=RunCommand,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    no_args_is_help=True,
    epilog=RUN_EPILOG,
    rich_help_panel=WORKFLOWS_PANEL,
)
def run(
    ctx: typer.Context,
    file: Path = typer.Argument(
        ..., metavar="FILE", help="Python file that defines the workflow.", show_default=False
    ),
    workflow_name: str = typer.Argument(
        ..., metavar="WORKFLOW", help="Name of the @workflow function.", show_default=False
    ),
    remote: bool = typer.Option(
        False, "--remote", help="Run on the control plane instead of in this process."
    ),
    wait: bool = typer.Option(
        True,
        "--wait/--no-wait",
        help="Wait for a remote run and print its outputs; --no-wait prints the execution id.",
    ),
    timeout: float = typer.Option(
        None,
        "--timeout",
        help="Give up waiting for a remote run after this many seconds (it keeps running).",
        show_default=False,
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="With --remote: upload and register, then only preview where each task would "
        "run now (eligible clusters, why others are excluded); nothing is created.",
    ),
    priority: int = typer.Option(
        0,
        "--priority",
        min=-1000,
        max=1000,
        help="With --remote: among your tenant's waiting tasks, higher starts first "
        "(tenants share capacity fairly whatever their priorities).",
    ),
    cache_dir: Path = typer.Option(
        None,
        "--cache-dir",
        metavar="DIR",
        help=(
            "Local runs: reuse the outputs of cacheable tasks (@task(cache=True)) kept in DIR "
            f"(default: ${CACHE_DIR_ENV} if set, else no caching)."
        ),
        show_default=False,
    ),
) -> None:
    """Run WORKFLOW from FILE, in this process or (--remote) on the control plane."""
    from fleetflow.loader import load_workflow

    wf, root = load_workflow(file, workflow_name)
    if ctx.meta.get(_WORKFLOW_HELP):
        _print_workflow_help(wf, file)
        return
    if dry_run and not remote:
        raise FleetflowError("--dry-run previews a remote run: add --remote")
    if priority and not remote:
        raise FleetflowError("--priority orders remote runs: add --remote")
    values = wf.parse_cli_inputs(split_input_flags(ctx.args))
    _require_inputs(wf, values)
    if not remote:
        console.print(f"running [bold]{wf.spec.name}[/bold] locally")
        cache = LocalCache(cache_dir) if cache_dir is not None else LocalCache.from_env()
        outputs = _run_locally(wf, values, cache)
        if cache is not None and (cache.hits or cache.misses):
            console.print(
                f"local cache {cache.root}: {cache.hits} hit(s), {cache.misses} miss(es)",
                highlight=False,
            )
        console.print("[bold]outputs:[/bold]")
        console.out(json.dumps(outputs), highlight=False)  # one line, for scripts
        return
    if cache_dir is not None:
        raise FleetflowError(
            "--cache-dir is for local runs; remote runs use the control plane's task cache"
        )
    if dry_run:
        from fleetflow.cli.remote import preview_remote

        with client(ctx) as api:
            preview_remote(api, wf, root, values, console=console)
        return
    from fleetflow.cli.remote import run_remote

    with client(ctx) as api:
        run_remote(
            api, wf, root, values, wait=wait, timeout=timeout, console=console, priority=priority
        )


def _print_workflow_help(wf: WorkflowFunction[..., Any], file: Path) -> None:
    """Usage, the workflow's docstring and its typed inputs with their defaults."""
    from rich.table import Table

    usage = f"fleetflow run [--remote] {file} {wf.fn.__name__}"
    inputs = wf.spec.interface.inputs
    console.print(Text(f"Usage: {usage}" + (" [--INPUT VALUE ...]" if inputs else "")))
    doc = inspect.getdoc(wf.fn)
    if doc:
        console.print()
        console.print(Text(doc))
    console.print()
    console.print(Text(f"Inputs of workflow {wf.spec.name}:", style="bold"))
    if not inputs:
        console.print("  none")
    table = Table(box=None, show_header=False, padding=(0, 2))
    for column in ("flag", "type", "default"):
        table.add_column(column, no_wrap=column != "default", overflow="fold")
    for variable in inputs:
        if variable.has_default:
            default = Text(f"[default: {json.dumps(variable.default)}]", style="dim")
        else:
            default = Text("[required]", style="red")
        flag = "--" + variable.name.replace("_", "-")
        table.add_row(Text(flag, style="cyan"), Text(variable.type.describe()), default)
    if inputs:
        console.print(table)
    outputs = ", ".join(f"{v.name}: {v.type.describe()}" for v in wf.spec.interface.outputs)
    console.print()
    console.print(Text(f"Outputs (printed as JSON): {outputs or 'none'}"))
    console.print(
        Text(
            "Values: numbers and strings as is, bools true/false, lists/dicts/dataclasses as "
            "JSON, File/Directory as local paths. Options of `fleetflow run` itself "
            "(--remote, --no-wait, --timeout, --cache-dir): fleetflow run --help"
        )
    )


def _describe_inputs(wf: WorkflowFunction[..., Any]) -> str:
    parts = []
    for variable in wf.spec.interface.inputs:
        default = f" (default {json.dumps(variable.default)})" if variable.has_default else ""
        parts.append(f"--{variable.name} {variable.type.describe()}{default}")
    return ", ".join(parts) or "none"


def _require_inputs(wf: WorkflowFunction[..., Any], values: dict[str, Any]) -> None:
    """Name every missing required input at once, with the workflow's whole interface."""
    from fleetflow.errors import WorkflowInputError

    missing = [v for v in wf.spec.interface.inputs if not v.has_default and v.name not in values]
    if missing:
        names = ", ".join(f"--{v.name} ({v.type.describe()})" for v in missing)
        raise WorkflowInputError(
            f"workflow '{wf.spec.name}' needs {names}; its inputs: {_describe_inputs(wf)}",
            input_name=missing[0].name,
        )


def _run_locally(
    wf: WorkflowFunction[..., Any], values: dict[str, Any], cache: LocalCache | None
) -> dict[str, Any]:
    """Run the workflow in-process; its outputs as literals. A task's exception is shown as
    the task's own traceback."""
    try:
        return wf.run_local(values, cache=cache)
    except Exception as exc:
        notes = getattr(exc, "__notes__", None)
        if not notes or os.environ.get("FLEETFLOW_DEBUG"):
            raise  # not raised by a task (bad inputs…): main() reports it
        err_console.print(_user_traceback(exc), markup=False, highlight=False)
        raise LocalRunError(
            f"workflow '{wf.spec.name}' failed locally: {exc.__class__.__name__}: {exc}"
        ) from None


def _user_traceback(exc: BaseException) -> str:
    """The traceback without Fleetflow's own frames: what the task author needs to read."""
    package = Path(__file__).resolve().parents[1]
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not Path(frame.filename).resolve().is_relative_to(package)
    ]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    lines += traceback.format_exception_only(exc)
    return "".join(lines).rstrip("\n")


@app.command(no_args_is_help=True, rich_help_panel=WORKFLOWS_PANEL)
def register(
    ctx: typer.Context,
    file: Path = typer.Argument(
        ..., metavar="FILE", help="Python file that defines the workflow.", show_default=False
    ),
    workflow_name: str = typer.Argument(
        ..., metavar="WORKFLOW", help="Name of the @workflow function.", show_default=False
    ),
    version: str = typer.Option(
        None,
        "--version",
        help="Version name [default: a hash of the spec and the code bundle].",
        show_default=False,
    ),
) -> None:
    """Upload WORKFLOW's code bundle and register its spec, without running it."""
    from fleetflow.cli.remote import register_remote
    from fleetflow.loader import load_workflow

    wf, root = load_workflow(file, workflow_name)
    with client(ctx) as api:
        if version:
            registered = api.register(wf, root=root, version=version)
            console.print(
                f"registered [bold]{registered['name']}[/bold] version {registered['version']}",
                highlight=False,
            )
        else:
            register_remote(api, wf, root, console)


@executions_app.command("get")
def executions_get(
    ctx: typer.Context,
    execution_id: str = typer.Argument(
        ..., metavar="ID", help="Execution id (ex-…), as `executions list` shows it."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the API's JSON answer as is."),
) -> None:
    """Show one execution: status, inputs, task attempts, then outputs or the error."""
    from fleetflow.cli.remote import print_execution

    with client(ctx) as api, not_found_hint(api, EXECUTIONS_HINT):
        execution = api.get_execution(execution_id)
    if as_json:
        console.print_json(json.dumps(execution))
    else:
        print_execution(execution, console, attempts=True)


@executions_app.command("logs")
def executions_logs(
    ctx: typer.Context,
    execution_id: str = typer.Argument(
        ..., metavar="ID", help="Execution id (ex-…), as `executions list` shows it."
    ),
    node: str = typer.Option(
        None, "--node", metavar="NODE", help="Only this node's attempts (n0-…)."
    ),
    attempt: int = typer.Option(
        None, "--attempt", min=1, metavar="N", help="Only attempt number N of each node."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the API's JSON answer as is."),
) -> None:
    """Print what each task attempt printed (the last MiB of it), oldest attempt first.

    Running attempts' output is refreshed by their agent every few seconds.
    """
    from fleetflow.cli.remote import describe_attempt

    with client(ctx) as api, not_found_hint(api, EXECUTIONS_HINT):
        attempts = api.execution_logs(execution_id, node=node, attempt=attempt)
    if as_json:
        console.print_json(json.dumps(attempts))
        return
    if not attempts:
        console.print("no task attempt yet", highlight=False)
    for entry in attempts:
        console.rule(describe_attempt(entry), align="left", style="dim")
        text = entry.get("log")
        if text:
            console.out(text.rstrip("\n"), highlight=False)
        else:
            console.print("(no output stored)", style="dim", highlight=False)


@executions_app.command("cancel")
def executions_cancel(
    ctx: typer.Context,
    execution_id: str = typer.Argument(
        ..., metavar="ID", help="Execution id (ex-…), as `executions list` shows it."
    ),
) -> None:
    """Cancel an execution: its running task attempts are stopped on every cluster."""
    with client(ctx) as api, not_found_hint(api, EXECUTIONS_HINT):
        execution = api.cancel(execution_id)
    status = execution["status"]
    if status == "CANCELLED":
        console.print(f"execution [bold]{execution_id}[/bold] CANCELLED", highlight=False)
    elif status in ("SUCCEEDED", "FAILED"):
        console.print(
            f"execution [bold]{execution_id}[/bold] had already finished: {status}",
            highlight=False,
        )
    else:
        console.print(
            f"execution [bold]{execution_id}[/bold] is being cancelled (now {status}); "
            f"`fleetflow executions get {execution_id}` shows when it is done",
            highlight=False,
        )


def _parse_status(value: str | None) -> str | None:
    if value is None:
        return None
    status = value.strip().upper()
    if status not in EXECUTION_STATES:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(EXECUTION_STATES)}")
    return status


@executions_app.command("list")
def executions_list(
    ctx: typer.Context,
    limit: int = typer.Option(20, "--limit", min=1, max=200, help="How many, newest first."),
    status: str = typer.Option(
        None,
        "--status",
        help=f"Only executions in this state: {', '.join(EXECUTION_STATES)}.",
        callback=_parse_status,
        show_default=False,
    ),
) -> None:
    """List recent executions, newest first."""
    from rich.table import Table

    with client(ctx) as api:
        items = api.list_executions(limit=limit, status=status)
    if not items:
        which = f" {status}" if status else ""
        console.print(f"no{which} executions on {api.api_url}", highlight=False)
        return
    table = Table(box=None, pad_edge=False)
    # The id is what one copies into `executions get`: never shortened.
    table.add_column("ID", no_wrap=True, min_width=max(len(item["id"]) for item in items))
    table.add_column("WORKFLOW", overflow="fold")
    table.add_column("STATUS", no_wrap=True)
    table.add_column("CREATED", no_wrap=True)
    for item in items:
        table.add_row(item["id"], item["workflow"], item["status"], _short_time(item))
    # Piped into grep or awk, a row stays one line whatever its width.
    out = console if console.is_terminal else Console(file=console.file, width=1000)
    out.print(table)


def _short_time(item: dict[str, Any]) -> str:
    """`2026-11-29T08:45:41.089952Z` -> `2026-11-29 08:45:41` (UTC, as the API stores it)."""
    text = str(item.get("created_at") or "")
    return text.replace("T", " ")[:19]


def _mount_plugins() -> None:
    """Add the `fleetflow.cli` groups of the installed layers (once per process)."""
    mounted = {info.name for info in app.registered_groups} | {
        info.name for info in app.registered_commands
    }
    # The embedded stack first: it is what a new user needs after `run`.
    order = {"dev": 0, "control-plane": 1, "agent": 2}
    eps = sorted(entry_points(group="fleetflow.cli"), key=lambda e: (order.get(e.name, 9), e.name))
    for ep in eps:
        if ep.name in mounted:
            continue
        try:
            sub = ep.load()
        except ImportError as exc:
            # e.g. the agent extra is not installed: the command is absent, not broken.
            missing = exc.name or str(exc)

            def unavailable(_name: str = ep.name, _missing: str = missing) -> None:
                raise FleetflowError(
                    f"`fleetflow {_name}` needs {_missing}: pip install 'fleetflow[server,agent]'"
                )

            app.command(
                ep.name,
                help=f"(unavailable: {missing} is not installed)",
                rich_help_panel=PLATFORM_PANEL,
            )(unavailable)
            continue
        app.add_typer(sub, name=ep.name, rich_help_panel=PLATFORM_PANEL)


app.add_typer(executions_app, name="executions", rich_help_panel=WORKFLOWS_PANEL)
app.command("login", help=account.LOGIN_HELP, no_args_is_help=True, rich_help_panel=ACCOUNT_PANEL)(
    account.login
)
app.command("logout", rich_help_panel=ACCOUNT_PANEL)(account.logout)
app.command("whoami", rich_help_panel=ACCOUNT_PANEL)(account.whoami)
app.command("quota", rich_help_panel=ACCOUNT_PANEL)(usage_commands.quota)
app.command("usage", help=usage_commands.USAGE_HELP, rich_help_panel=ACCOUNT_PANEL)(
    usage_commands.usage
)
app.add_typer(admin_app, name="admin", rich_help_panel=PLATFORM_PANEL)


def _print_error(message: str, label: str = "error") -> None:
    # A Text, not markup: messages carry `[...]` (types such as list[float]) that rich would
    # otherwise read as style tags and drop.
    text = Text(f"{label}: ", style="red")
    text.append(message)
    err_console.print(text, highlight=False)


def _usage_error_types() -> tuple[type[Exception], ...]:
    """The exceptions the command-line parser raises for bad usage: click's, and typer's own
    copy of them in the typer versions that vendor click."""
    kinds: list[type[Exception]] = []
    try:
        import click

        kinds.append(click.ClickException)
    except ImportError:
        pass
    typer_exception = getattr(typer, "TyperException", None)
    if isinstance(typer_exception, type) and issubclass(typer_exception, Exception):
        kinds.append(typer_exception)
    return tuple(kinds)


def main() -> None:
    """Console-script entry point: clear one-line errors, tracebacks only on request."""
    # gRPC core's informational lines (e.g. about fork handlers) are not for our users; set
    # before any plugin imports grpc.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    _mount_plugins()
    try:
        app(standalone_mode=False, prog_name="fleetflow")
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        _print_error("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except _usage_error_types() as exc:
        show = getattr(exc, "show", None)
        if callable(show):
            show()  # usage line, hint and message, as the parser formats them
        else:
            _print_error(str(exc))
        sys.exit(getattr(exc, "exit_code", 2))
    except Exception as exc:  # the boundary where every error becomes a message
        if os.environ.get("FLEETFLOW_DEBUG"):
            raise
        if isinstance(exc, FleetflowError):
            _print_error(str(exc))
        else:
            _print_error(
                f"{exc.__class__.__name__}: {exc} (set FLEETFLOW_DEBUG=1 to see the traceback)",
                label="internal error",
            )
        sys.exit(1)
