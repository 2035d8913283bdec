"""`executions get` and the live table of `run --remote` show a sub-workflow's nodes as a
tree: under a row for the call, from the node ids the compiler prefixes with the call's id."""

from __future__ import annotations

import io

from rich.console import Console

from fleetflow.cli.remote import AttemptProgress, TreeRow, node_tree, print_execution
from tests.unit.sdk.test_cli_progress import attempt, execution, last_table, terminal


def test_node_tree_puts_a_sub_workflow_under_its_call() -> None:
    rows = node_tree(
        [
            "n0-prep",
            "n1-train/n0-inc",
            "n4-report",
            "n1-train/n1-eval/n0-score",
            "n1-train/n2-fit",
        ]
    )
    assert rows == [
        TreeRow("n0-prep", "n0-prep", 0, is_call=False),
        TreeRow("n1-train", "n1-train", 0, is_call=True),
        TreeRow("n1-train/n0-inc", "n0-inc", 1, is_call=False),
        TreeRow("n1-train/n1-eval", "n1-eval", 1, is_call=True),
        TreeRow("n1-train/n1-eval/n0-score", "n0-score", 2, is_call=False),
        TreeRow("n1-train/n2-fit", "n2-fit", 1, is_call=False),
        TreeRow("n4-report", "n4-report", 0, is_call=False),
    ]
    assert node_tree(["n0-a", "n1-b"]) == [
        TreeRow("n0-a", "n0-a", 0, is_call=False),
        TreeRow("n1-b", "n1-b", 0, is_call=False),
    ]


def test_a_dynamic_node_is_a_node_with_its_sub_dag_under_it() -> None:
    # A dynamic node has attempts of its own (it built the sub-DAG): not a call row.
    assert node_tree(["n0-a", "n1-dyn", "n1-dyn/n0-sq", "n2-sub/n0-x"]) == [
        TreeRow("n0-a", "n0-a", 0, is_call=False),
        TreeRow("n1-dyn", "n1-dyn", 0, is_call=False),
        TreeRow("n1-dyn/n0-sq", "n0-sq", 1, is_call=False),
        TreeRow("n2-sub", "n2-sub", 0, is_call=True),
        TreeRow("n2-sub/n0-x", "n0-x", 1, is_call=False),
    ]


def test_executions_get_prints_the_tree() -> None:
    out = io.StringIO()
    shown = {
        **execution(
            attempt("n0-prep", None, "SUCCEEDED", seconds=2),
            attempt("n1-train/n0-inc", None, "SUCCEEDED", seconds=3),
            attempt("n1-train/n1-square", 0, "SUCCEEDED", seconds=4),
            attempt("n1-train/n1-square", 1, "SUCCEEDED", seconds=4),
            attempt("n3-total", None, "SUCCEEDED", seconds=5),
            attempt("n1-train/n2-fit", None, "SKIPPED"),
        ),
        "workflow": "m.pipeline",
        "status": "SUCCEEDED",
        "inputs": {"n": 1},
        "outputs": {"o0": 3},
    }
    print_execution(shown, Console(file=out, width=160, color_system=None), attempts=True)
    lines = out.getvalue().splitlines()
    assert lines[2:9] == [
        "  n0-prep (attempt 1) SUCCEEDED on local after 2.0s",
        "  n1-train (sub-workflow)",
        "    n0-inc (attempt 1) SUCCEEDED on local after 3.0s",
        "    n1-square[0] (attempt 1) SUCCEEDED on local after 4.0s",
        "    n1-square[1] (attempt 1) SUCCEEDED on local after 4.0s",
        "    n2-fit SKIPPED (its branch of a conditional was not taken)",
        "  n3-total (attempt 1) SUCCEEDED on local after 5.0s",
    ]


def test_the_live_table_indents_a_sub_workflow_under_its_call() -> None:
    console, out = terminal()
    with AttemptProgress(console) as progress:
        progress.update(
            execution(
                attempt("n0-prep", None, "SUCCEEDED", seconds=2),
                attempt("n1-train/n0-inc", None, "RUNNING"),
                attempt("n1-train/n1-square", 0, "SUCCEEDED", seconds=4),
            )
        )
    rows = [line.rstrip() for line in last_table(out.getvalue()).splitlines()[1:]]
    assert rows[0].startswith("n0-prep ")
    assert rows[1] == "n1-train (sub-workflow)"
    assert rows[2].startswith("  n0-inc ") and "RUNNING" in rows[2]
    assert rows[3].startswith("  n1-square ") and "1/1 done" in rows[3]
    assert rows[4].startswith("  n1-square ") and "SUCCEEDED" in rows[4]
