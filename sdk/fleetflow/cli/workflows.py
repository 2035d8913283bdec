"""`fleetflow workflows list|get|versions`: what your tenant has registered.

`fleetflow register` and `fleetflow run --remote` register workflows; these commands read
them back: the newest version of each, one version with its typed inputs, outputs and tasks,
and a workflow's versions. With `--json` stdout holds only the API's JSON answer.
"""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.text import Text

from fleetflow.cli.common import (
    JSON_OPTION,
    console,
    new_table,
    print_fields,
    print_table,
    say,
    show,
    timestamp,
)
from fleetflow.ir import LiteralType, Resources, TypedInterface

WORKFLOWS_HINT = "`fleetflow workflows list` shows the registered ones"

workflows_app = typer.Typer(
    help="List the workflows your tenant registered, their versions, inputs and tasks.",
    no_args_is_help=True,
)

NAME_ARGUMENT = typer.Argument(
    ...,
    metavar="NAME",
    help="Workflow name, `<module>.<function>` (e.g. hello.hello_pipeline), as "
    "`workflows list` shows it.",
    show_default=False,
)


@workflows_app.command("list")
def workflows_list(
    ctx: typer.Context,
    limit: int = typer.Option(50, "--limit", min=1, max=200, help="How many, by name."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List registered workflows, by name, each with its newest version."""
    show(
        ctx,
        lambda api: api.workflows.list(latest_only=True, limit=limit),
        as_json,
        _print_workflows,
    )


def _print_workflows(items: list[dict[str, Any]], api_url: str) -> None:
    if not items:
        say(
            f"no workflows registered on {api_url}: `fleetflow register FILE WORKFLOW` or "
            "`fleetflow run --remote FILE WORKFLOW` registers one"
        )
        return
    table = new_table("NAME", "LATEST VERSION", "REGISTERED", "INPUTS")
    for item in items:
        table.add_row(
            item["name"],
            item["version"],
            timestamp(item.get("created_at")),
            _signature(item["interface"]),
        )
    print_table(table)


@workflows_app.command("get")
def workflows_get(
    ctx: typer.Context,
    name: str = NAME_ARGUMENT,
    version: str = typer.Option(
        None,
        "--version",
        metavar="V",
        help="This version instead of the newest.",
        show_default=False,
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show one workflow (its newest version unless --version): inputs with their types and
    defaults, outputs, and each task's resources, retries and caching."""
    show(
        ctx,
        lambda api: api.workflows.get(name, version),
        as_json,
        _print_workflow,
        hint=WORKFLOWS_HINT,
    )


@workflows_app.command("versions")
def workflows_versions(
    ctx: typer.Context,
    name: str = NAME_ARGUMENT,
    limit: int = typer.Option(50, "--limit", min=1, max=200, help="How many, newest first."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List the registered versions of one workflow, newest first."""
    show(
        ctx,
        lambda api: api.workflows.versions(name, limit=limit),
        as_json,
        _print_versions,
        hint=WORKFLOWS_HINT,
    )


def _print_versions(items: list[dict[str, Any]], _api_url: str) -> None:
    table = new_table("VERSION", "REGISTERED", "BUNDLE")
    for item in items:
        table.add_row(
            item["version"], timestamp(item.get("created_at")), item["bundle_digest"][:12]
        )
    print_table(table)


def _signature(interface: dict[str, Any]) -> str:
    """`n: int = 20, epochs: int = 500 -> Metrics`."""
    typed = TypedInterface.model_validate(interface)
    inputs = ", ".join(
        f"{v.name}: {v.type.describe()}" + (f" = {json.dumps(v.default)}" if v.has_default else "")
        for v in typed.inputs
    )
    outputs = ", ".join(v.type.describe() for v in typed.outputs) or "None"
    return f"({inputs}) -> {outputs}"


def _describe(kind: dict[str, Any]) -> str:
    return LiteralType.model_validate(kind).describe()


def _resources(resources: dict[str, Any]) -> str:
    from fleetflow.cli.remote import describe_resources

    parsed = Resources.model_validate(resources).model_dump()
    gpu_type = parsed.pop("gpu_type", None)
    parsed["gpu_types"] = [gpu_type] if isinstance(gpu_type, str) else gpu_type or []
    return describe_resources(parsed)


def _print_workflow(workflow: dict[str, Any], _api_url: str) -> None:
    spec = workflow["spec"]
    print_fields(
        workflow["name"],
        [
            ("version", workflow["version"]),
            ("registered", timestamp(workflow.get("created_at"))),
            ("code bundle", workflow["bundle_digest"]),
        ],
    )
    interface = workflow["interface"]
    console.print()
    inputs = new_table("INPUT", "TYPE", "DEFAULT")
    for variable in interface["inputs"]:
        default = json.dumps(variable.get("default")) if variable.get("has_default") else ""
        required = Text("required", style="red") if not variable.get("has_default") else default
        inputs.add_row(variable["name"], _describe(variable["type"]), required)
    if interface["inputs"]:
        print_table(inputs)
    else:
        say("no inputs")
    console.print()
    outputs = new_table("OUTPUT", "TYPE")
    for variable in interface["outputs"]:
        outputs.add_row(variable["name"], _describe(variable["type"]))
    if interface["outputs"]:
        print_table(outputs)
    else:
        say("no outputs")
    console.print()
    tasks = new_table("NODE", "TASK", "RESOURCES", "RETRIES", "CACHE")
    for node in spec["nodes"]:
        task = spec["tasks"][node["task"]]
        mapped = " (map)" if node.get("map") else ""
        cache = "no"
        if task.get("cache"):
            version = task.get("cache_version")
            cache = f"yes (version {version})" if version else "yes"
        tasks.add_row(
            node["id"],
            task["name"] + mapped,
            _resources(task.get("resources") or {}),
            str(task.get("retries", 0)),
            cache,
        )
    print_table(tasks)
