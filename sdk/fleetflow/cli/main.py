"""`fleetflow`: the root command.

The SDK owns `run`, `executions`, `login`/`logout`/`whoami` (`cli/account.py`), `quota` and
`usage` (`cli/usage.py`) and `admin` (`cli/admin.py`); the root `--tenant` option makes any of
them act in another tenant (`cli/common.py` builds their clients). The control plane and the agent
contribute their own groups (`control-plane`, `dev`, `agent`) through the `fleetflow.cli`
entry-point group, so this package never imports them; `RootGroup` imports one only when it is
run, so `fleetflow --help` and `fleetflow run` never load a server's code.

`main()` is the one place where an exception becomes what the user reads: a one-line
`error: …`, or the parser's usage message, and the exit code: 0 success, 1 failure, 2 a usage
error (a bad flag, command or input value), 130 interrupted (Ctrl-C). Never a traceback of ours.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from fleetflow.cli import account
from fleetflow.cli import usage as usage_commands
from fleetflow.cli.common import (
    NOTIFY_FORMAT_OPTION,
    NOTIFY_ON_OPTION,
    NOTIFY_WEBHOOK_OPTION,
    TENANT_META_KEY,
    CommandUsageError,
    client,
    notification_rules,
    print_json,
)
from fleetflow.cli.inputs import InputFlagError, did_you_mean, split_input_flags
from fleetflow.errors import FleetflowError, MapElementsFailedError, WorkflowInputError
from fleetflow.loader import WorkflowNotFoundError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from fleetflow.cache import LocalCache
    from fleetflow.workflow import WorkflowFunction

WORKFLOWS_PANEL = "Workflows"
ACCOUNT_PANEL = "Account"
PLATFORM_PANEL = "Platform"


@dataclass(frozen=True)
class LazyGroup:
    """A group of commands imported only when it runs (or its own `--help` is asked for);
    `fleetflow --help` lists it by `help`, which the tests check against the group's own."""

    name: str
    help: str
    panel: str
    load: Callable[[], Any]  # imports the group: a `typer.Typer` or a click command


def _attribute(module: str, attribute: str) -> Callable[[], Any]:
    return lambda: getattr(importlib.import_module(module), attribute)


# The SDK's groups: each imports what its commands need (the HTTP client, the type system) and
# has many commands for typer to build; neither is needed for `run` or `--help`.
SDK_GROUPS = {
    group.name: group
    for group in (
        LazyGroup(
            "executions",
            "Inspect, wait for, cancel, relaunch and recover executions on the control plane; "
            "read their inputs, outputs, logs and notifications.",
            WORKFLOWS_PANEL,
            _attribute("fleetflow.cli.executions", "executions_app"),
        ),
        LazyGroup(
            "launchplans",
            "Launch plans: a workflow version with fixed and default inputs and a schedule.",
            WORKFLOWS_PANEL,
            _attribute("fleetflow.cli.launch_plans", "launchplans_app"),
        ),
        LazyGroup(
            "secrets",
            "Your tenant's secrets, which tasks name in @task(secrets=[...]); values never shown.",
            WORKFLOWS_PANEL,
            _attribute("fleetflow.cli.secrets", "secrets_app"),
        ),
        LazyGroup(
            "workflows",
            "List the workflows your tenant registered, their versions, inputs and tasks.",
            WORKFLOWS_PANEL,
            _attribute("fleetflow.cli.workflows", "workflows_app"),
        ),
        LazyGroup(
            "artifacts",
            "Artifacts: the blobs tasks produced, what produced each, and their lineage.",
            WORKFLOWS_PANEL,
            _attribute("fleetflow.cli.artifacts", "artifacts_app"),
        ),
        LazyGroup(
            "admin",
            "Administer the platform: tenants, users and their tokens, roles, quotas, cohorts, "
            "clusters, secrets keys, the audit log.",
            PLATFORM_PANEL,
            _attribute("fleetflow.cli.admin", "admin_app"),
        ),
    )
}

# The groups of the installed layers, from the `fleetflow.cli` entry points; the embedded
# stack first: it is what a new user needs after `run`.
PLUGIN_HELP = {
    "dev": "Run the embedded Fleetflow stack for development.",
    "control-plane": "Run the control plane (REST API, agent gRPC service, Temporal worker).",
    "agent": "Run the Fleetflow data-plane agent of a cluster.",
}
PLUGIN_GROUP = "fleetflow.cli"


@functools.cache
def _plugin_groups() -> dict[str, LazyGroup]:
    """The `fleetflow.cli` entry points of the installed distributions, by command name (read
    once per process: scanning every distribution's metadata is not free)."""
    from importlib.metadata import entry_points

    order = {name: rank for rank, name in enumerate(PLUGIN_HELP)}
    found: dict[str, LazyGroup] = {}
    for ep in sorted(
        entry_points(group=PLUGIN_GROUP), key=lambda e: (order.get(e.name, len(order)), e.name)
    ):
        if ep.name not in found:
            load = functools.partial(_load_entry_point, ep)
            found[ep.name] = LazyGroup(ep.name, _plugin_help(ep), PLATFORM_PANEL, load)
    return found


def _plugin_help(ep: EntryPoint) -> str:
    if ep.name in PLUGIN_HELP:
        return PLUGIN_HELP[ep.name]
    dist = getattr(ep, "dist", None)
    return f"Commands from {dist.name}." if dist is not None else f"Commands from {ep.value}."


def _load_entry_point(ep: EntryPoint) -> Any:
    try:
        return ep.load()
    except ImportError as exc:
        # e.g. the agent extra is not installed: the command says so, it does not crash.
        return _unavailable_command(ep.name, exc.name or str(exc))


def _unavailable_command(name: str, missing: str) -> TyperCommand:
    def unavailable() -> None:
        raise FleetflowError(
            f"`fleetflow {name}` needs {missing}: pip install 'fleetflow[server,agent]'"
        )

    # Whatever follows (`run`, `--help`) reaches the callback, which says what is missing.
    return TyperCommand(
        name=name,
        callback=unavailable,
        help=f"(unavailable: {missing} is not installed)",
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


# The click command of each lazy group imported in this process, by name.
_loaded_groups: dict[str, Any] = {}


def _load_group(group: LazyGroup) -> Any:
    if group.name not in _loaded_groups:
        loaded = group.load()
        command = typer.main.get_group(loaded) if isinstance(loaded, typer.Typer) else loaded
        command.name = group.name
        command.rich_help_panel = group.panel  # as `fleetflow --help` lists it
        _loaded_groups[group.name] = command
    return _loaded_groups[group.name]


class LazyCommand(TyperCommand):
    """A lazy group as `fleetflow --help` lists it; running it (`make_context`) imports the
    group and hands the command line to it."""

    def __init__(self, group: LazyGroup) -> None:
        super().__init__(name=group.name, help=group.help, rich_help_panel=group.panel)
        self.group = group

    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> Any:
        return _load_group(self.group).make_context(info_name, args, parent=parent, **extra)


class RootGroup(TyperGroup):
    """`fleetflow`: the commands defined here, then the SDK's groups and those of the
    `fleetflow.cli` entry points, listed without importing them; a mistyped command name is
    answered with the closest one."""

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        lazy = [*SDK_GROUPS, *_plugin_groups()]
        return names + [name for name in dict.fromkeys(lazy) if name not in names]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        group = SDK_GROUPS.get(cmd_name) or _plugin_groups().get(cmd_name)
        if group is None:
            return None
        loaded = _loaded_groups.get(group.name)
        return loaded if loaded is not None else LazyCommand(group)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        name = args[0] if args else ""
        if name and not name.startswith("-") and not ctx.resilient_parsing:
            if self.get_command(ctx, name) is None:
                suggestion = did_you_mean(name, self.list_commands(ctx))
                hint = f" Did you mean {suggestion!r}?" if suggestion else ""
                ctx.fail(f"No such command {name!r}.{hint}")
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        # What a command returns is not an exit code: `main()` exits with the code of a
        # `typer.Exit`, which is all `app(standalone_mode=False)` then returns.
        super().invoke(ctx)
        return None


app = typer.Typer(
    cls=RootGroup,
    help="Fleetflow: typed ML workflows, run locally or on many clusters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# soft_wrap: ids, paths and tracebacks stay on one line when the output is not a terminal.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


class LocalRunError(FleetflowError):
    """A task raised while the workflow ran in-process; its traceback was printed."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

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

# The CACHE_DIR_ENV of `fleetflow.cache`, which is not imported for it: it loads the type system.
CACHE_DIR_ENV = "FLEETFLOW_LOCAL_CACHE_DIR"
_WORKFLOW_HELP = "fleetflow.workflow_help"
LAUNCH_PLAN_FLAG = "--launch-plan"
_PLAN_INPUTS = "fleetflow.launch_plan_inputs"


class RunCommand(TyperCommand):
    """`run`, whose `--help` after FILE and WORKFLOW describes that workflow's inputs.

    Click answers `--help` before it reads any argument, so the request is noticed here,
    while parsing, and answered by `invoke` with FILE and WORKFLOW alone: `run`'s own options
    are not parsed then (typer would build a validator for each). The unknown options click
    lets through are the workflow's inputs; one before FILE and WORKFLOW is a mistyped option
    of `run`, refused here with the closest one.
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        takes_value, flags = _option_names(self, ctx)
        help_flags = set(self.get_help_option_names(ctx))
        asks_help = any(arg in help_flags for arg in args)
        rest = [arg for arg in args if arg not in help_flags]
        positionals, unknown = _leading_positionals(rest, takes_value, flags)
        if asks_help and len(positionals) >= 2:
            ctx.meta[_WORKFLOW_HELP] = (Path(positionals[0]), positionals[1])
            return []
        if not asks_help and any(arg.split("=", 1)[0] == LAUNCH_PLAN_FLAG for arg in rest):
            # No FILE and WORKFLOW: the plan's inputs are kept from click, which would take
            # their values for FILE and WORKFLOW.
            args, ctx.meta[_PLAN_INPUTS] = _split_plan_inputs(rest, takes_value, flags)
        elif not asks_help and unknown is not None and len(positionals) < 2:
            suggestion = did_you_mean(unknown, takes_value | flags)
            hint = f" Did you mean {suggestion}?" if suggestion else ""
            ctx.fail(f"No such option: {unknown}.{hint}")
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        wanted = ctx.meta.get(_WORKFLOW_HELP)
        if wanted is None:
            return super().invoke(ctx)
        from fleetflow.loader import load_workflow

        file, workflow_name = wanted
        wf, _ = load_workflow(file, workflow_name, tasks=True)
        _print_workflow_help(wf, file)
        return None


def _option_names(command: Any, ctx: Any) -> tuple[set[str], set[str]]:
    """The names of a command's own options: those that take a value, and the flags."""
    takes_value: set[str] = set()
    flags: set[str] = set()
    for param in command.get_params(ctx):
        if param.param_type_name == "option":
            names = {*param.opts, *param.secondary_opts}
            (flags if getattr(param, "is_flag", False) else takes_value).update(names)
    return takes_value, flags


def _split_plan_inputs(
    args: list[str], takes_value: set[str], flags: set[str]
) -> tuple[list[str], list[str]]:
    """`run`'s own options (and any FILE, refused later), and the input flags with their
    values, of a `run --launch-plan` command line."""
    own: list[str] = []
    inputs: list[str] = []
    i = 0
    in_input = False
    while i < len(args):
        arg = args[i]
        name = arg.split("=", 1)[0]
        if name in takes_value:
            own.append(arg)
            if "=" not in arg and i + 1 < len(args):
                i += 1
                own.append(args[i])
            in_input = False
        elif name in flags:
            own.append(arg)
            in_input = False
        elif arg.startswith("-") or in_input:
            inputs.append(arg)
            in_input = True
        else:
            own.append(arg)
        i += 1
    return own, inputs


def _leading_positionals(
    args: list[str], takes_value: set[str], flags: set[str]
) -> tuple[list[str], str | None]:
    """FILE and WORKFLOW, if given (the arguments before the first workflow input), and the
    first option that is not one of `run`'s, if any."""
    positionals: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in takes_value:
            skip = True
        elif arg.startswith("-") and arg != "-":
            name = arg.split("=", 1)[0]
            if name not in takes_value and name not in flags:
                return positionals, name  # a workflow input once FILE and WORKFLOW are given
        else:
            positionals.append(arg)
    return positionals, None


@app.command(
    cls=RunCommand,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    no_args_is_help=True,
    epilog=RUN_EPILOG,
    rich_help_panel=WORKFLOWS_PANEL,
)
def run(
    ctx: typer.Context,
    file: Path | None = typer.Argument(
        None,
        metavar="FILE",
        help="Python file that defines the workflow (not with --launch-plan).",
        show_default=False,
    ),
    workflow_name: str | None = typer.Argument(
        None,
        metavar="WORKFLOW",
        help="Name of the @workflow function, or of a @task to run alone.",
        show_default=False,
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
    launch_plan: str | None = typer.Option(
        None,
        LAUNCH_PLAN_FLAG,
        metavar="NAME",
        help="With --remote: launch the workflow version the launch plan NAME names, with its "
        "fixed and default inputs, labels and priority; inputs given as --name value override "
        "its defaults. FILE and WORKFLOW are left out.",
        show_default=False,
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
    notify_webhook: list[str] = NOTIFY_WEBHOOK_OPTION,
    notify_on: str = NOTIFY_ON_OPTION,
    notify_format: str = NOTIFY_FORMAT_OPTION,
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Print only JSON on stdout (everything else goes to stderr): the outputs of a "
        "local run; with --remote the execution as the API answers it (created with "
        "--no-wait, else finished), or the preview of --dry-run.",
    ),
) -> None:
    """Run WORKFLOW (or a single task) from FILE, in this process or (--remote) on the
    control plane."""
    from fleetflow.loader import load_workflow, runnable_kind

    own_options = set().union(*_option_names(ctx.command, ctx))
    if launch_plan is not None:
        _check_launch_plan_options(
            launch_plan, file, remote, dry_run, priority, cache_dir, notify_webhook
        )
        from fleetflow.cli.remote import run_launch_plan

        with client(ctx) as api:
            run_launch_plan(
                api,
                launch_plan,
                ctx.meta.get(_PLAN_INPUTS, ctx.args),
                command_options=own_options,
                wait=wait,
                timeout=timeout,
                console=console,
                as_json=as_json,
                err_console=err_console,
            )
        return
    if file is None or workflow_name is None:
        missing = "FILE" if file is None else "WORKFLOW"
        raise CommandUsageError(
            f"Missing argument '{missing}': fleetflow run [--remote] FILE WORKFLOW [--INPUT "
            "VALUE ...], or fleetflow run --remote --launch-plan NAME"
        )
    wf, root = load_workflow(file, workflow_name, tasks=True)
    kind = runnable_kind(wf)
    if dry_run and not remote:
        raise CommandUsageError("--dry-run previews a remote run: add --remote")
    if priority and not remote:
        raise CommandUsageError("--priority orders remote runs: add --remote")
    if notify_webhook and not remote:
        raise CommandUsageError("--notify-webhook notifies of remote runs: add --remote")
    rules = notification_rules(notify_webhook, notify_on, notify_format)
    if remote and cache_dir is not None:
        raise CommandUsageError(
            "--cache-dir is for local runs; remote runs use the control plane's task cache"
        )
    values = wf.parse_cli_inputs(
        split_input_flags(ctx.args, wf.spec, kind=kind, command_options=own_options)
    )
    _require_inputs(wf, values)
    if not remote:
        from fleetflow.cache import LocalCache

        info = err_console if as_json else console
        shown = f"[bold]{wf.spec.name}[/bold]"
        info.print(f"running {'task ' if kind == 'task' else ''}{shown} locally")
        cache = LocalCache(cache_dir) if cache_dir is not None else LocalCache.from_env()
        outputs = _run_locally(wf, values, cache)
        if cache is not None and (cache.hits or cache.misses):
            info.print(
                f"local cache {cache.root}: {cache.hits} hit(s), {cache.misses} miss(es)",
                highlight=False,
            )
        info.print("[bold]outputs:[/bold]")
        console.out(json.dumps(outputs), highlight=False)  # one line, for scripts
        return
    if dry_run:
        from fleetflow.cli.remote import preview_remote

        with client(ctx) as api:
            preview_remote(api, wf, root, values, console=console, as_json=as_json)
        return
    from fleetflow.cli.remote import run_remote

    if kind == "task":
        (err_console if as_json else console).print(
            f"task [bold]{wf.spec.name}[/bold] runs on the control plane as a workflow of one "
            "node, registered under the task's name"
        )
    with client(ctx) as api:
        run_remote(
            api,
            wf,
            root,
            values,
            wait=wait,
            timeout=timeout,
            console=console,
            priority=priority,
            notifications=rules,
            as_json=as_json,
            err_console=err_console,
        )


def _check_launch_plan_options(
    name: str,
    file: Path | None,
    remote: bool,
    dry_run: bool,
    priority: int,
    cache_dir: Path | None,
    notify_webhook: list[str],
) -> None:
    """Refuse what `run --launch-plan` cannot go with: the plan names its workflow version,
    inputs, priority and notifications, and it runs on the control plane."""
    if file is not None:
        raise CommandUsageError(
            f"--launch-plan {name} runs the workflow version the plan names: leave out FILE "
            "and WORKFLOW (give inputs as --name value)"
        )
    if not remote:
        raise CommandUsageError("--launch-plan launches on the control plane: add --remote")
    others = (
        (dry_run, "--dry-run"),
        (priority, "--priority"),
        (cache_dir, "--cache-dir"),
        (notify_webhook, "--notify-webhook"),
    )
    for given, flag in others:
        if given:
            raise CommandUsageError(f"{flag} does not go with --launch-plan")


def _print_workflow_help(wf: WorkflowFunction[..., Any], file: Path) -> None:
    """Usage, the workflow's docstring and its typed inputs with their defaults."""
    from rich.table import Table

    from fleetflow.loader import runnable_kind

    usage = f"fleetflow run [--remote] {file} {wf.fn.__name__}"
    inputs = wf.spec.interface.inputs
    console.print(Text(f"Usage: {usage}" + (" [--INPUT VALUE ...]" if inputs else "")))
    doc = inspect.getdoc(wf.fn)
    if doc:
        console.print()
        console.print(Text(doc))
    console.print()
    console.print(Text(f"Inputs of {runnable_kind(wf)} {wf.spec.name}:", style="bold"))
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
            "JSON, File/Directory as local paths, ndarray/DataFrame as the path of an .npy/"
            "Parquet file. Options of `fleetflow run` itself "
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
    from fleetflow.loader import runnable_kind

    missing = [v for v in wf.spec.interface.inputs if not v.has_default and v.name not in values]
    if missing:
        names = ", ".join(f"--{v.name} ({v.type.describe()})" for v in missing)
        raise WorkflowInputError(
            f"{runnable_kind(wf)} '{wf.spec.name}' needs {names}; "
            f"its inputs: {_describe_inputs(wf)}",
            input_name=missing[0].name,
        )


def _run_locally(
    wf: WorkflowFunction[..., Any], values: dict[str, Any], cache: LocalCache | None
) -> dict[str, Any]:
    """Run the workflow in-process; its outputs as literals.

    Progress (`[fleetflow] …` lines) and whatever the tasks print go to stderr, so stdout keeps
    only the result. A task's exception is shown as the task's own traceback.
    """
    from contextlib import redirect_stdout

    from fleetflow.context import task_log_records_to_stderr
    from fleetflow.loader import runnable_kind
    from fleetflow.logs import sdk_lines_to

    try:
        with sdk_lines_to(sys.stderr), redirect_stdout(sys.stderr), task_log_records_to_stderr():
            return wf.run_local(values, cache=cache)
    except Exception as exc:
        failed: BaseException = exc
        if isinstance(exc, MapElementsFailedError) and exc.__cause__ is not None:
            failed = exc.__cause__  # too many failed elements: one element's own traceback
        notes = getattr(failed, "__notes__", None)
        if not notes or os.environ.get("FLEETFLOW_DEBUG"):
            raise  # not raised by a task (bad inputs…): main() reports it
        shown = _user_traceback(failed)
        if shown:
            err_console.print(shown, markup=False, highlight=False)
        raise LocalRunError(
            f"{runnable_kind(wf)} '{wf.spec.name}' failed locally: {exc.__class__.__name__}: {exc}"
        ) from None


def _user_traceback(exc: BaseException) -> str:
    """The traceback without Fleetflow's own frames: what the task author needs to read.

    When none of the frames is theirs (a task returned a value of the wrong type: the error
    names the task's `def` itself), only the notes saying where it happened.
    """
    from fleetflow.errors import has_user_frames, user_traceback

    shown: traceback.TracebackException = user_traceback(exc)
    if not has_user_frames(shown):
        return "\n".join(getattr(exc, "__notes__", []))
    return "".join(shown.format()).rstrip("\n")


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
    as_json: bool = typer.Option(
        False, "--json", help="Print the registered version as JSON (messages go to stderr)."
    ),
) -> None:
    """Upload WORKFLOW's code bundle and register its spec, without running it."""
    from fleetflow.cli.remote import register_remote
    from fleetflow.loader import load_workflow

    wf, root = load_workflow(file, workflow_name)
    with client(ctx) as api:
        registered = register_remote(
            api, wf, root, err_console if as_json else console, version=version
        )
    if as_json:
        print_json(registered, console)


# executions, workflows and admin: SDK_GROUPS, imported when they run.
app.command("login", help=account.LOGIN_HELP, no_args_is_help=True, rich_help_panel=ACCOUNT_PANEL)(
    account.login
)
app.command("logout", rich_help_panel=ACCOUNT_PANEL)(account.logout)
app.command("whoami", rich_help_panel=ACCOUNT_PANEL)(account.whoami)
app.command("quota", rich_help_panel=ACCOUNT_PANEL)(usage_commands.quota)
app.command("usage", help=usage_commands.USAGE_HELP, rich_help_panel=ACCOUNT_PANEL)(
    usage_commands.usage
)


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


# Errors that mean the command line asked for something that cannot be: exit 2, like the
# parser's own usage errors.
USAGE_ERRORS: tuple[type[FleetflowError], ...] = (
    CommandUsageError,
    InputFlagError,
    WorkflowInputError,
    WorkflowNotFoundError,
)


def _as_did_you_mean(exc: Any) -> None:
    """Click's `No such option: --limt (Possible options: --limit)` in the words of the rest of
    the CLI: `No such option: --limt. Did you mean --limit?`."""
    possibilities = getattr(exc, "possibilities", None)
    option = getattr(exc, "option_name", None)
    if possibilities and option and hasattr(exc, "message"):
        exc.message = f"No such option: {option}. Did you mean {', '.join(possibilities)}?"
        exc.possibilities = None


def main() -> None:
    """Console-script entry point: clear one-line errors, tracebacks only on request.

    Exits 0 on success, 1 on a failure, 2 on a usage error (a bad flag, command or input
    value), 130 when interrupted.
    """
    # gRPC core's informational lines (e.g. about fork handlers) are not for our users; set
    # before any plugin imports grpc.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    try:
        # Without standalone mode, typer returns the code of a `typer.Exit` (130 for Ctrl-C)
        # instead of exiting; `RootGroup.invoke` makes that all it returns.
        code = app(standalone_mode=False, prog_name="fleetflow")
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        _print_error("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except _usage_error_types() as exc:
        _as_did_you_mean(exc)
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
            sys.exit(2 if isinstance(exc, USAGE_ERRORS) else 1)
        else:
            _print_error(
                f"{exc.__class__.__name__}: {exc} (set FLEETFLOW_DEBUG=1 to see the traceback)",
                label="internal error",
            )
        sys.exit(1)
    if isinstance(code, int) and code:
        sys.exit(code)
