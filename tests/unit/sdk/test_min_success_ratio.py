"""`map_task(task, min_success_ratio=r)`: the spec it compiles to (written only below 1, so other
specs keep their digests), the `list[Optional[T]]` its outputs are typed as, the validation of
`r`, and local runs where the ratio is met (failed elements are None) or not (a
`MapElementsFailedError` saying how many failed of how many, caused by one element's error)."""

from __future__ import annotations

import functools
import io
import math
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pydantic
import pytest

from fleetflow import (
    DefinitionError,
    MapElementsFailedError,
    WorkflowCompileError,
    map_task,
    task,
    workflow,
)
from fleetflow.ir import MapSpec, WorkflowSpec, map_failures_allowed
from tests.unit.cli_harness import Invoke, cli_invoker, user_environment

MODULE = __name__
CALLS: dict[int, int] = {}  # element value -> calls
_lock = threading.Lock()
_running = 0
PEAK = [0]


class Pair(NamedTuple):
    value: int
    doubled: int


@task(retries=1)
def fragile(x: int, k: int = 1) -> int:
    """Fails (every attempt) for the values 3 and 8 (mod 10), else returns x * k."""
    global _running
    with _lock:
        CALLS[x] = CALLS.get(x, 0) + 1
        _running += 1
        PEAK[0] = max(PEAK[0], _running)
    try:
        if x % 10 in (3, 8):
            raise ValueError(f"cannot score {x}")
        return x * k
    finally:
        with _lock:
            _running -= 1


@task
def fragile_pair(x: int) -> Pair:
    if x == 2:
        raise RuntimeError("no pair for 2")
    return Pair(value=x, doubled=2 * x)


@task
def maybe(x: int) -> int | None:
    return None if x == 0 else x


@task
def present(values: list[int | None]) -> int:
    return sum(v is not None for v in values)


@task
def total(values: list[int]) -> int:
    return sum(values)


@task
def inc(x: int) -> int:
    return x + 1


def reset() -> None:
    CALLS.clear()
    PEAK[0] = 0


# ----------------------------------------------------------------------------- the spec


@workflow
def tolerant(n: int = 10) -> int:
    scores = map_task(fragile, concurrency=3, min_success_ratio=0.8)(x=list(range(10)))
    return present(values=scores)


@workflow
def strict(n: int = 10) -> int:
    return total(values=map_task(fragile, concurrency=3)(x=list(range(10))))


def test_the_ratio_is_in_the_map_spec_and_written_only_below_one() -> None:
    mapped = tolerant.spec.nodes[0]
    assert mapped.map == MapSpec(over=["x"], concurrency=3, min_success_ratio=0.8)
    assert mapped.model_dump(mode="json")["map"] == {
        "over": ["x"],
        "concurrency": 3,
        "min_success_ratio": 0.8,
    }
    # The default is not written: existing specs (and their digests) stay as they were.
    assert strict.spec.nodes[0].model_dump(mode="json")["map"] == {
        "over": ["x"],
        "concurrency": 3,
    }
    nodes = strict.spec.model_dump(mode="json")["nodes"]
    assert all("min_success_ratio" not in node["map"] for node in nodes if node["map"])
    assert WorkflowSpec.model_validate_json(tolerant.spec.model_dump_json()) == tolerant.spec


@pytest.mark.parametrize(
    ("elements", "ratio", "allowed"),
    [(10, 0.8, 2), (10, 0.7, 3), (10, 1.0, 0), (3, 0.8, 0), (3, 0.5, 1), (0, 0.5, 0), (7, 0.01, 6)],
)
def test_failures_allowed_round_the_product_first(
    elements: int, ratio: float, allowed: int
) -> None:
    assert map_failures_allowed(elements, ratio) == allowed
    assert elements - allowed >= math.floor(ratio * elements)


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, 1.01, 2, float("nan"), float("inf"), "0.8", None])
def test_a_forged_spec_with_a_bad_ratio_does_not_validate(bad: Any) -> None:
    spec = tolerant.spec.model_dump(mode="json")
    spec["nodes"][0]["map"]["min_success_ratio"] = bad
    with pytest.raises(pydantic.ValidationError, match="min_success_ratio"):
        WorkflowSpec.model_validate(spec)


def test_a_bool_is_not_a_ratio_in_a_spec() -> None:
    spec = tolerant.spec.model_dump(mode="json")
    spec["nodes"][0]["map"]["min_success_ratio"] = True
    with pytest.raises(pydantic.ValidationError, match="must be a number in"):
        WorkflowSpec.model_validate(spec)


# ----------------------------------------------------------------------------- typing


def test_outputs_are_lists_of_optional_items() -> None:
    @workflow
    def typed() -> list[int | None]:
        return map_task(fragile, min_success_ratio=0.5)(x=[1, 2])

    assert typed.spec.interface.outputs[0].type.describe() == "list[Optional[int]]"

    @workflow
    def pairs() -> tuple[list[int | None], list[int | None]]:
        result = map_task(fragile_pair, min_success_ratio=0.5)(x=[1, 2])
        return result.value, result.doubled

    types = [v.type.describe() for v in pairs.spec.interface.outputs]
    assert types == ["list[Optional[int]]", "list[Optional[int]]"]

    @workflow
    def already_optional() -> list[int | None]:  # not Optional[Optional[int]]
        return map_task(maybe, min_success_ratio=0.5)(x=[0, 1])

    assert already_optional() == [None, 1]


def compile_error(build: Any) -> WorkflowCompileError:
    with pytest.raises(WorkflowCompileError) as info:
        build()
    return info.value


def test_passing_them_where_a_list_of_t_is_expected_does_not_compile() -> None:
    def build() -> None:
        @workflow
        def summed() -> int:
            return total(values=map_task(fragile, min_success_ratio=0.8)(x=[1, 2]))

    error = compile_error(build)
    message = str(error)
    assert (error.expected, error.actual) == ("list[int]", "list[Optional[int]]")
    assert "min_success_ratio=0.8: a failed element is None" in message
    assert "hint: in the list items: the value may be None" in message


def test_mapping_over_them_needs_an_optional_parameter() -> None:
    def build() -> None:
        @workflow
        def chained() -> list[int]:
            scores = map_task(fragile, min_success_ratio=0.8)(x=[1, 2])
            return map_task(inc)(x=scores)

    error = compile_error(build)
    assert error.actual == "list[Optional[int]]"
    assert "the value may be None" in str(error)


@pytest.mark.parametrize(
    ("bad", "actual"),
    [(0, "0"), (1.5, "1.5"), (-0.2, "-0.2"), (float("nan"), "nan"), ("0.8", "str"), (True, "bool")],
)
def test_the_ratio_must_be_a_number_in_zero_one(bad: Any, actual: str) -> None:
    with pytest.raises(DefinitionError, match=r"min_success_ratio must be a number in \(0, 1\]"):
        map_task(fragile, min_success_ratio=bad)

    def build() -> None:
        @workflow
        def wrong() -> list[int | None]:
            return map_task(fragile, min_success_ratio=bad)(x=[1])

    error = compile_error(build)
    assert (error.expected, error.actual) == ("a number in (0, 1]", actual)
    assert error.workflow == f"{MODULE}.wrong"
    assert f"{__file__}:" in str(error)


def test_one_is_the_default_and_an_int_one_is_accepted() -> None:
    assert map_task(fragile, min_success_ratio=1).min_success_ratio == 1.0
    assert map_task(fragile).min_success_ratio == 1.0


# ----------------------------------------------------------------------------- local runs


def test_ratio_met_locally_failed_elements_are_none() -> None:
    reset()
    assert tolerant() == 8
    assert CALLS[3] == CALLS[8] == 2  # each failed element used its retry
    assert PEAK[0] <= 3

    reset()
    scores = map_task(fragile, min_success_ratio=0.8)(x=list(range(10)))
    assert scores == [0, 1, 2, None, 4, 5, 6, 7, None, 9]


def test_partial_and_concurrency_combine_with_the_ratio() -> None:
    @workflow
    def scaled() -> list[int | None]:
        bound = functools.partial(fragile, k=10)
        return map_task(bound, concurrency=2, min_success_ratio=0.5)(x=[1, 3, 4, 8])

    reset()
    assert scaled() == [10, None, 40, None]
    assert PEAK[0] <= 2
    node = scaled.spec.nodes[0]
    assert node.map == MapSpec(over=["x"], concurrency=2, min_success_ratio=0.5)


def test_ratio_not_met_locally_says_how_many_failed_and_one_error() -> None:
    @workflow
    def demanding() -> list[int | None]:
        return map_task(fragile, min_success_ratio=0.9)(x=list(range(10)))

    reset()
    with pytest.raises(MapElementsFailedError) as info:
        demanding()
    message = str(info.value)
    assert message.startswith("n0-fragile: 2 of 10 elements failed; min_success_ratio 0.9")
    assert "needs 9 to succeed" in message
    assert "ValueError: cannot score" in message
    assert isinstance(info.value.__cause__, ValueError)


def test_the_elements_stop_once_the_ratio_cannot_be_met() -> None:
    reset()
    with pytest.raises(MapElementsFailedError, match="2 of 20 elements failed"):
        # One element at a time: 3 and 8 fail; 0.95 of 20 allows one failure.
        map_task(fragile, concurrency=1, min_success_ratio=0.95)(x=list(range(20)))
    # The elements after the second failure never started, however late the loop that
    # collects the outcomes heard of it (on a loaded machine the worker used to run ahead).
    assert max(CALLS) == 8


def test_with_the_default_ratio_the_element_error_is_raised_as_before() -> None:
    reset()
    with pytest.raises(ValueError, match="cannot score") as info:
        strict()
    # Elements 3 and 8 both fail, side by side: the first to fail is the one raised.
    notes = "\n".join(info.value.__notes__)
    assert re.search(r"in element (3|8) of map node", notes), notes


# ----------------------------------------------------------------------------- how it reads


def _attempt(index: int, status: str, number: int = 1) -> dict[str, Any]:
    return {
        "id": f"at-{index}-{number}",
        "node_id": "n1-train",
        "map_index": index,
        "attempt_number": number,
        "status": status,
        "cache_hit": False,
        "cluster": "local",
        "pending_reason": None,
        "started_at": "2026-11-29T10:00:00Z",
        "finished_at": "2026-11-29T10:00:03Z",
    }


def _partial_execution(status: str) -> dict[str, Any]:
    attempts = [_attempt(i, "SUCCEEDED") for i in range(10) if i not in (3, 8)]
    attempts += [_attempt(i, "FAILED", n) for i in (3, 8) for n in (1, 2)]
    return {
        "id": "ex-1",
        "workflow": "pipeline.wf",
        "status": status,
        "attempts": attempts,
        "outputs": {"o0": 8},
        "error": None,
        "min_success_ratios": {"n1-train": 0.8},
    }


def test_a_node_that_succeeded_with_failed_elements_reads_clearly() -> None:
    from rich.console import Console

    from fleetflow.cli.remote import AttemptProgress, print_execution

    out = io.StringIO()
    print_execution(_partial_execution("SUCCEEDED"), Console(file=out, width=200), attempts=True)
    text = out.getvalue()
    assert "n1-train: 8/10 elements succeeded (min_success_ratio 0.8)" in text
    assert "n1-train[3] (attempt 2) FAILED" in text
    assert text.index("elements succeeded") < text.index("outputs:")

    terminal = Console(file=io.StringIO(), force_terminal=True, width=200, color_system=None)
    table = AttemptProgress._table(_partial_execution("RUNNING"))
    terminal.print(table)
    rendered = terminal.file.getvalue()  # type: ignore[attr-defined]
    summary = next(line for line in rendered.splitlines() if line.startswith("n1-train "))
    assert "8/10 done" in summary and "2 FAILED" in summary
    assert "(min_success_ratio 0.8)" in summary


def test_a_map_without_failed_elements_reads_as_before() -> None:
    from rich.console import Console

    from fleetflow.cli.remote import print_execution

    execution = _partial_execution("SUCCEEDED")
    execution["attempts"] = [_attempt(i, "SUCCEEDED") for i in range(10)]
    out = io.StringIO()
    print_execution(execution, Console(file=out, width=200), attempts=True)
    assert "elements succeeded" not in out.getvalue()


def test_a_forged_spec_binding_the_optional_items_to_a_list_of_t_is_found() -> None:
    """The registration checks type a partial map's output as the compiler does: a list
    binding holding it where `list[list[int]]` is expected is a problem, naming the item."""
    from fleetflow.ir import ListBinding, NodeOutputBinding
    from fleetflow.spec_checks import binding_problems

    @task
    def nested(rows: list[list[int | None]]) -> int:
        return len(rows)

    @workflow
    def gathered() -> int:
        scores = map_task(fragile, min_success_ratio=0.5)(x=[1, 2])
        return nested(rows=[scores, scores])

    assert binding_problems(gathered.spec) == []
    spec = gathered.spec.model_dump(mode="json")
    consumer = spec["tasks"][spec["nodes"][1]["task"]]
    item = consumer["interface"]["inputs"][0]["type"]["item"]
    item["item"] = {"kind": "integer"}  # forged: list[list[int]]
    forged = WorkflowSpec.model_validate(spec)
    problems = binding_problems(forged)
    assert [p.field for p in problems] == [
        "nodes[1].inputs.rows.items[0]",
        "nodes[1].inputs.rows.items[1]",
    ]
    assert "expected list[int], got list[Optional[int]]" in problems[0].message
    assert isinstance(forged.nodes[1].inputs["rows"], ListBinding)
    assert isinstance(forged.nodes[1].inputs["rows"].items[0], NodeOutputBinding)


CLI_FLOW = """
from fleetflow import map_task, task, workflow


@task
def fragile(x: int) -> int:
    if x in (1, 2):
        raise ValueError(f"cannot take {x}")
    return x


@workflow
def tolerant() -> list[int | None]:
    return map_task(fragile, concurrency=1, min_success_ratio=0.5)(x=[0, 1, 2, 3])


@workflow
def demanding() -> list[int | None]:
    return map_task(fragile, concurrency=1, min_success_ratio=0.75)(x=[0, 1, 2, 3])
"""


@pytest.fixture
def fleetflow_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> Iterator[Invoke]:
    (tmp_path / "flow.py").write_text(CLI_FLOW)
    for _ in user_environment(monkeypatch, tmp_path):
        yield cli_invoker(monkeypatch, capsys)


def test_fleetflow_run_says_how_many_succeeded_or_shows_one_elements_traceback(
    fleetflow_cli: Invoke,
) -> None:
    result = fleetflow_cli("run", "flow.py", "tolerant")
    assert result.code == 0, result
    assert result.out.splitlines()[-1] == '{"o0": [0, null, null, 3]}'
    assert "n0-fragile: 2/4 elements succeeded (min_success_ratio 0.5)" in result.err

    result = fleetflow_cli("run", "flow.py", "demanding")
    assert result.code == 1
    assert 'raise ValueError(f"cannot take {x}")' in result.err  # the element's own traceback
    assert "in element 1 of map node 'n0-fragile'" in result.err
    assert result.err.splitlines()[-1] == (
        "error: workflow 'flow.demanding' failed locally: MapElementsFailedError: n0-fragile: "
        "2 of 4 elements failed; min_success_ratio 0.75 needs 3 to succeed; element 1 failed: "
        "ValueError: cannot take 1"
    )
