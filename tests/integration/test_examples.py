"""Every example workflow in `examples/` gives the same outputs run locally and on the
platform (issue 16: a remote result may never differ silently from the local one).

A new example joins `EXAMPLES`; `test_every_example_is_listed` fails until it does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleetflow.loader import load_workflow
from tests.integration.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.stacks("sqlite", "postgres-split-worker")]

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"

# (file, workflow, inputs): each runs locally and remotely with these inputs.
EXAMPLES: list[tuple[str, str, dict[str, Any]]] = [
    ("hello.py", "hello_pipeline", {"n": 12}),
    ("ml_pipeline.py", "ml_pipeline", {"n": 30}),
    ("conditional.py", "sized_training", {"n": 20}),
    ("conditional.py", "sized_training", {"n": 2000}),
    ("typed_values.py", "feature_report", {"rows": 12}),
    ("typed_values.py", "feature_report", {"rows": 5, "mode": "short"}),
    ("checkpointing.py", "resumable_training", {"epochs": 6}),
    ("subworkflows.py", "compare_regularisation", {"n": 120}),
    ("subworkflows.py", "retrain_if_drifted", {"n": 120, "drift": 0.8}),
    ("subworkflows.py", "retrain_if_drifted", {"n": 120}),
    ("dynamic.py", "evaluate", {"n": 3, "rounds": 2}),
    ("robust_sweep.py", "robust_sweep", {"n": 40}),
]
# Examples of what fails, each with tests of its own (tests/integration/test_end_to_end.py),
# and of a reference to a registered workflow, which runs only on the platform and needs the
# referenced version registered first (tests/integration/test_reference_workflows.py).
NOT_COMPARED = {"failing.py", "reference_workflow.py"}


def test_every_example_is_listed() -> None:
    listed = {file for file, _, _ in EXAMPLES} | NOT_COMPARED
    assert {path.name for path in EXAMPLES_DIR.glob("*.py")} <= listed


@pytest.mark.parametrize(
    ("file", "name", "inputs"),
    EXAMPLES,
    ids=[
        f"{file[:-3]}-{'-'.join(f'{k}={v}' for k, v in inputs.items())}"
        for file, _, inputs in EXAMPLES
    ],
)
def test_the_example_gives_its_local_outputs_remotely(
    stack: Stack, file: str, name: str, inputs: dict[str, Any]
) -> None:
    wf, _ = load_workflow(EXAMPLES_DIR / file, name)
    local = wf(**inputs)
    with stack.client() as client:
        result = client.run(wf, timeout=180, **inputs)
    assert result.status == "SUCCEEDED", f"{result.error}\n{stack.logs()}"
    assert result.outputs == local
