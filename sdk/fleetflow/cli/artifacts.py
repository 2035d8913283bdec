"""`fleetflow artifacts get|lineage|list`: the blobs tasks produced (and executions were given),
what produced each, and what each was computed from or used for.

An artifact is named by its id (`art-…`) or by its blob's URI. `lineage` prints a tree: the
artifact, then what it was computed from (`--upstream`), what was computed from it
(`--downstream`), or both (the default). With `--json` stdout holds only the API's answer.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.tree import Tree

from fleetflow.api_models.artifacts import MAX_LINEAGE_ARTIFACTS, MAX_LINEAGE_DEPTH
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
from fleetflow.client.artifacts import LineageDirection

artifacts_app = typer.Typer(
    help="Artifacts: the blobs tasks produced, what produced each, and their lineage.",
    no_args_is_help=True,
)

ARTIFACT_ARGUMENT = typer.Argument(
    ...,
    metavar="URI|ID",
    help="An artifact id (art-…) or the URI of a blob (a File or Directory output's `uri`).",
    show_default=False,
)
HINT = "`fleetflow artifacts list --execution ID` lists an execution's artifacts"


def _producer(artifact: dict[str, Any]) -> str:
    """`n1-train[3] of ex-… (attempt at-…, task m.train@1a2b3c4d5e6f)`."""
    node = artifact["node_id"]
    if artifact.get("element_index") is not None:
        node = f"{node}[{artifact['element_index']}]"
    if artifact.get("attempt_id") is None:
        return f"input of {artifact['execution_id']}"
    digest = (artifact.get("task_digest") or "")[:12]
    task = f"{artifact.get('task_name')}@{digest}" if digest else str(artifact.get("task_name"))
    return f"{node} of {artifact['execution_id']} (attempt {artifact['attempt_id']}, task {task})"


@artifacts_app.command("get")
def artifacts_get(
    ctx: typer.Context, reference: str = ARTIFACT_ARGUMENT, as_json: bool = JSON_OPTION
) -> None:
    """Show one artifact: its blob and the execution, node, attempt and task version that
    produced it."""
    show(ctx, lambda api: api.artifacts.get(reference), as_json, _print_artifact, hint=HINT)


def _print_artifact(artifact: dict[str, Any], _api_url: str) -> None:
    element = artifact.get("element_index")
    print_fields(
        artifact["id"],
        [
            ("uri", artifact["uri"]),
            ("kind", artifact["kind"]),
            ("execution", artifact["execution_id"]),
            ("workflow", f"{artifact.get('workflow')} version {artifact.get('workflow_version')}"),
            (
                "node",
                artifact["node_id"] + (f" (element {element})" if element is not None else ""),
            ),
            ("attempt", artifact.get("attempt_id") or "- (an execution input)"),
            ("task", artifact.get("task_name") or "-"),
            ("task digest", artifact.get("task_digest") or "-"),
            ("output", artifact["output_name"]),
            ("recorded", timestamp(artifact.get("created_at"))),
        ],
    )


@artifacts_app.command("lineage")
def artifacts_lineage(
    ctx: typer.Context,
    reference: str = ARTIFACT_ARGUMENT,
    upstream: bool = typer.Option(
        False, "--upstream", help="Only what it was computed from (and so on)."
    ),
    downstream: bool = typer.Option(
        False, "--downstream", help="Only what was computed from it (and so on)."
    ),
    depth: int = typer.Option(
        5, "--depth", min=1, max=MAX_LINEAGE_DEPTH, help="How many levels to follow."
    ),
    limit: int = typer.Option(
        200, "--limit", min=1, max=MAX_LINEAGE_ARTIFACTS, help="The most artifacts to show."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show an artifact's lineage as a tree: what it was computed from, what was computed
    from it, with the producer of each."""
    if upstream and downstream:
        raise typer.BadParameter("give --upstream or --downstream, not both (neither: both)")
    direction: LineageDirection = "upstream" if upstream else "downstream" if downstream else "both"
    show(
        ctx,
        lambda api: api.artifacts.lineage(reference, direction, depth=depth, limit=limit),
        as_json,
        _print_lineage,
        hint=HINT,
    )


def _label(artifact: dict[str, Any]) -> str:
    what = f"{artifact['output_name']} ({artifact['kind']})"
    return f"{what} from {_producer(artifact)}: {artifact['uri']}"


def _grow(
    tree: Tree,
    at: str,
    artifacts: dict[str, dict[str, Any]],
    neighbours: dict[str, list[tuple[str | None, str, str]]],
    path: frozenset[str],
    upstream: bool,
) -> None:
    """Add `at`'s neighbours below `tree`, and theirs below them; never an artifact already
    on the way down (the graph has no cycle, but the tree does not rely on it). Upstream, a
    line reads `<input name> \u2190 <the artifact given as it>`; downstream, `as <input name>
    \u2192 <the artifact computed>`."""
    for other, uri, name in neighbours.get(at, []):
        if other is None:
            tree.add(f"{name}: {uri} (no artifact recorded)")
        elif other in path:
            tree.add(f"{name}: {artifacts[other]['output_name']} (shown above)")
        else:
            label = _label(artifacts[other])
            line = f"{name} \u2190 {label}" if upstream else f"as {name} \u2192 {label}"
            branch = tree.add(line)
            _grow(branch, other, artifacts, neighbours, path | {other}, upstream)


def _print_lineage(lineage: dict[str, Any], _api_url: str) -> None:
    artifacts = {artifact["id"]: artifact for artifact in lineage["artifacts"]}
    start = lineage["artifact_id"]
    inputs: dict[str, list[tuple[str | None, str, str]]] = {}
    uses: dict[str, list[tuple[str | None, str, str]]] = {}
    for edge in lineage["edges"]:
        inputs.setdefault(edge["downstream_id"], []).append(
            (edge["upstream_id"], edge["upstream_uri"], edge["input_name"])
        )
        if edge["upstream_id"] is not None:
            uses.setdefault(edge["upstream_id"], []).append(
                (edge["downstream_id"], artifacts[edge["downstream_id"]]["uri"], edge["input_name"])
            )
    tree = Tree(_label(artifacts[start]))
    if lineage["direction"] in ("upstream", "both"):
        up = tree.add("computed from") if lineage["direction"] == "both" else tree
        _grow(up, start, artifacts, inputs, frozenset({start}), upstream=True)
        if not inputs.get(start):
            up.add("nothing recorded (inline values, or no inputs)")
    if lineage["direction"] in ("downstream", "both"):
        down = tree.add("used by") if lineage["direction"] == "both" else tree
        _grow(down, start, artifacts, uses, frozenset({start}), upstream=False)
        if not uses.get(start):
            down.add("nothing computed from it yet")
    # Piped into grep, each artifact stays one line whatever its width (as tables do).
    out = console if console.is_terminal else Console(file=console.file, width=1000)
    out.print(tree, highlight=False, markup=False)
    if lineage.get("truncated"):
        say(lineage.get("message") or "truncated")


@artifacts_app.command("list")
def artifacts_list(
    ctx: typer.Context,
    execution: str = typer.Option(
        ..., "--execution", metavar="ID", help="The execution whose artifacts to list."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """List the artifacts an execution produced: its input blobs and what its tasks wrote."""
    show(
        ctx,
        lambda api: api.artifacts.of_execution(execution),
        as_json,
        _print_artifacts,
        hint="`fleetflow executions list` shows your executions",
    )


def _print_artifacts(items: list[dict[str, Any]], _api_url: str) -> None:
    if not items:
        say("no artifacts recorded: its tasks wrote no File, Directory, array or DataFrame yet")
        return
    table = new_table("ID", "NODE", "OUTPUT", "KIND", "TASK", "URI")
    for item in items:
        node = item["node_id"]
        if item.get("element_index") is not None:
            node = f"{node}[{item['element_index']}]"
        table.add_row(
            item["id"],
            node,
            item["output_name"],
            item["kind"],
            item.get("task_name") or "-",
            item["uri"],
        )
    print_table(table)
