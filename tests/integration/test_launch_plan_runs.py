"""`fleetflow run --remote --launch-plan NAME` and `fleetflow launchplans launch --wait`
through the whole stack: the plan's version runs with its fixed and default inputs, inputs given
as typed flags override the defaults, and every mistake (a fixed input, an unknown or mistyped
input, an unknown plan, FILE given too) is one clear error line with the right exit status."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetflow.loader import load_workflow
from tests.integration.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.stacks("sqlite")]

WORKFLOWS = Path(__file__).parent / "workflows" / "plan_flows.py"


@pytest.fixture(scope="module")
def plan(stack: Stack) -> Iterator[str]:
    wf, root = load_workflow(WORKFLOWS, "planned")
    with stack.client() as client:
        client.register(wf, root=root)
        client.launchplans.create(
            "scaled", wf.spec.name, fixed_inputs={"factor": 10}, default_inputs={"x": 1}
        )
    yield "scaled"


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_run_launches_the_plan_with_typed_flags_over_its_defaults(stack: Stack, plan: str) -> None:
    answer = stack.cli(
        "run", "--remote", "--launch-plan", plan, "--x", "4", "--label", "cli", "--enabled"
    )
    assert answer.returncode == 0, answer.stderr + stack.logs()
    assert f"launch plan {plan}: " in answer.stdout
    assert _last_line(answer.stdout) == '{"o0": "cli:40:True"}'

    defaults = stack.cli("run", "--remote", f"--launch-plan={plan}", "--json", "--no-wait")
    assert defaults.returncode == 0, defaults.stderr
    created = json.loads(defaults.stdout)
    assert created["inputs"] == {"x": 1, "factor": 10, "label": "run", "enabled": False}
    finished = stack.client().wait_for_execution(created["id"], timeout=120)
    assert finished.outputs == {"o0": "run:10:False"}, stack.logs()


def test_launchplans_launch_waits_for_the_outputs(stack: Stack, plan: str) -> None:
    answer = stack.cli("launchplans", "launch", plan, "--input", "x=5", "--wait")
    assert answer.returncode == 0, answer.stderr + stack.logs()
    assert _last_line(answer.stdout) == '{"o0": "run:50:False"}'


@pytest.mark.parametrize(
    ("words", "status", "message"),
    [
        (["--factor", "3"], 1, "fixed by the launch plan"),
        (["--xx", "3"], 2, "did you mean --x?"),
        (["--x", "four"], 2, "input 'x': expected int, got 'four'"),
        (["--enabled", "maybe"], 2, "input 'enabled': expected bool"),
        (["--x"], 2, "--x needs a value (int)"),
    ],
)
def test_a_wrong_input_is_one_clear_error(
    stack: Stack, plan: str, words: list[str], status: int, message: str
) -> None:
    answer = stack.cli("run", "--remote", "--launch-plan", plan, *words)
    assert answer.returncode == status, answer.stdout + answer.stderr
    assert message in answer.stderr and "Traceback" not in answer.stderr, answer.stderr
    assert "execution" not in answer.stdout  # nothing was launched


def test_an_unknown_plan_and_a_file_are_refused(stack: Stack, plan: str) -> None:
    unknown = stack.cli("run", "--remote", "--launch-plan", "nope", "--x", "1")
    assert unknown.returncode == 1
    assert "launch plan nope" in unknown.stderr and "launchplans list" in unknown.stderr
    with_file = stack.cli("run", "--remote", "--launch-plan", plan, str(WORKFLOWS), "planned")
    assert with_file.returncode == 2
    assert "leave out FILE and WORKFLOW" in with_file.stderr
